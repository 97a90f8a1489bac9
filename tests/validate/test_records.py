"""Records are written atomically; a killed sweep leaves a readable file and resumes where it stopped."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fitplan.records import append_record, read_records, settings_key

pytest.importorskip("torch")
pytest.importorskip("peft")

CONFIG = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "configs" / "tiny-llama.json"


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


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'[defaults]\nmode = "cpu"\nprecision = "fp32"\nbatch_size = 1\n\n[[matrix]]\nmodel = "{CONFIG}"\n'
        'method = ["lora", "prompt", "adapter", "full", "ptuning", "qlora"]\nseq_len = [16, 24]\n'
    )
    return sweep


def test_killed_sweep_resumes_without_duplicates(tmp_path):
    sweep, out = _sweep(tmp_path), tmp_path / "runs.jsonl"
    cmd = [sys.executable, "-m", "fitplan.cli", "validate", "--sweep", str(sweep), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_records(out)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_records(out)
    assert 2 <= len(partial) < 12, "the sweep should have been killed midway"
    for line in out.read_text().splitlines():
        json.loads(line)  # every line of the file is a whole record
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["runs_already_present"] == len(partial)
    records = read_records(out)
    assert len(records) == 12
    assert len({r["key"] for r in records}) == 12
    assert {r["outcome"] for r in records} == {"ok"}
