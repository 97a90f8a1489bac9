"""A killed sweep leaves a readable record file and resumes where it stopped."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fitplan.records import read_records

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("peft")

CONFIG = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "configs" / "tiny-llama.json"


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'[defaults]\nmode = "cpu"\nprecision = "fp32"\nbatch_size = 1\n\n[[matrix]]\nmodel = "{CONFIG}"\n'
        'method = ["lora", "prompt", "adapter", "full", "ptuning", "qlora"]\nseq_len = [16, 24]\n'
    )
    return sweep


def test_killed_sweep_resumes_without_duplicates(tmp_path):
    sweep, out = _sweep(tmp_path), tmp_path / "runs.jsonl"
    cmd = [sys.executable, "-m", "fitplan", "validate", "--sweep", str(sweep), "--out", str(out)]
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
    # the summary ends with the error figures per category
    assert summary["errors"]["peak"]["runs"] == 12
    assert set(summary["errors"]) == {"peak", "parameters", "gradients", "optimizer_states", "activations",
                                      "temporaries", "other"}
    assert abs(summary["errors"]["peak"]["worst_error_percent"]) < 3
