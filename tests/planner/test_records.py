"""Records are written atomically and read back whole; their identity ignores key order."""

from fitplan.records import append_record, cuda_runs, read_records, settings_key


def test_append_keeps_earlier_records_and_reader_skips_a_torn_line(tmp_path):
    out = tmp_path / "runs.jsonl"
    append_record(out, {"key": "a", "n": 1})
    with out.open("a") as f:
        f.write('{"key": "torn", "n": ')  # what a crash in the middle of a plain append would leave
    append_record(out, {"key": "b", "n": 2})
    assert [r["key"] for r in read_records(out)] == ["a", "b"]
    assert not list(tmp_path.glob(".runs.jsonl.*"))  # no temporary file left behind


def test_settings_key_is_stable_and_order_free():
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})




def test_cuda_runs_keeps_successful_gpu_measurements():
    runs = [{"outcome": "ok", "measurement": {"mode": "cuda"}}, {"outcome": "oom", "measurement": {"mode": "cuda"}},
            {"outcome": "ok", "measurement": {"mode": "cpu"}}, {"outcome": "ok"}]
    assert cuda_runs(runs) == runs[:1]
