"""Two CPU ranks with FSDP2 (gloo): each rank's measured peak within 5% of the planner's per-GPU
estimate for the same full-shard placement."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("peft")

CONFIG = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "configs" / "tiny-llama.json"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp2_two_ranks_within_5_percent(method):
    r = subprocess.run(
        [sys.executable, "-m", "fitplan", "validate", "--model", str(CONFIG), "--method", method, "--seq-len", "64",
         "--batch-size", "2", "--mode", "cpu", "--nproc", "2", "--sharding", "fsdp", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads(r.stdout)
    assert record["outcome"] == "ok", record.get("error")
    assert record["measurement"]["mode"] == "cpu-fsdp2"
    assert len(record["measurement"]["ranks"]) == 2
    for pct in record["errors_percent"]["ranks"]:
        assert abs(pct) <= 5.0, record["errors_percent"]


def test_sharding_without_ranks_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "fitplan", "validate", "--model", str(CONFIG), "--sharding", "fsdp"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "plan: error: --sharding needs --nproc 2 or more"
