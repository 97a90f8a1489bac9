"""Fuzzing of the files people feed the tool: validator records for calibration and published-rows
CSVs. Each either gives a result or one PlanError; a calibration that is written reads back."""

import csv
import io
import json

from fitplan import calibration, reference
from fitplan.errors import PlanError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BYTES = st.one_of(st.integers(min_value=-10, max_value=10**12), st.none(), st.text(max_size=3),
                  st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2))
FIELDS = ["peak_bytes", "allocated_peak_bytes", "reserved_peak_bytes", "nvml_peak_used_bytes", "cuda_context_bytes"]


@st.composite
def record(draw):
    m = {"mode": draw(st.sampled_from(["cuda", "cpu", 3, None]))}
    for f in FIELDS:
        if draw(st.booleans()):
            m[f] = draw(BYTES)
    r = {"key": draw(st.text(max_size=4)), "outcome": draw(st.sampled_from(["ok", "oom", None])), "measurement": m,
         "device": draw(st.sampled_from([{"gpu": "NVIDIA H100 80GB HBM3"}, {}, None, "x"])),
         "versions": draw(st.sampled_from([{"torch": "2.13"}, {}, None]))}
    return r


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(record(), max_size=6), junk=st.sampled_from(["", "not json\n", "[1]\n", "{}\n"]))
def test_calibrating_from_any_records_is_a_result_or_one_error(tmp_path, runs, junk):
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in runs) + junk)
    out = tmp_path / "cal.json"
    out.unlink(missing_ok=True)
    try:
        cal, written = calibration.calibrate([str(path)], gpu_name="h100-80", out=str(out))
    except PlanError as exc:
        assert "\n" not in str(exc)
        assert not out.exists()
    else:
        assert calibration.load_file(written).overhead == cal.overhead   # what is written reads back


COLUMNS = list(reference.COLUMNS) + ["extra"]
CELLS = st.one_of(st.sampled_from(["", "1", "-3", "x", "lora", "full", "Llama-3.2-3B", "A100 80GB", "4.5", "q,v",
                                   "NVIDIA L40S 48GB", "max_memory_allocated", "orig=12 bytes"]), st.text(max_size=5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=14, unique=True),
       rows=st.lists(st.lists(CELLS, min_size=1, max_size=14), max_size=4))
def test_comparing_any_csv_is_a_result_or_one_error(tmp_path, header, rows):
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(header)
    w.writerows(rows)
    path = tmp_path / "rows.csv"
    path.write_text(text.getvalue())
    try:
        result = reference.report(str(path))
    except PlanError as exc:
        assert "\n" not in str(exc)
    else:
        assert result.to_dict()["summary"]["rows"] == len(result.comparisons)
