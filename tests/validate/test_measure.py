"""The three ways to measure, and the planner beside them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("peft")

from fitplan.catalog import load_preset  # noqa: E402
from fitplan.estimate import estimate  # noqa: E402
from fitplan.setup import TrainingSetup  # noqa: E402
from fitplan.validate.measure import choose_mode, cuda_available, measure  # noqa: E402
from fitplan.validate.run import _raw_config  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "configs" / "tiny-llama.json"


def run(*args):
    return subprocess.run([sys.executable, "-m", "fitplan", *args], capture_output=True, text=True, timeout=300)


def test_cuda_without_a_gpu_is_a_clear_error():
    if cuda_available():
        pytest.skip("a GPU is present")
    r = run("validate", "--model", str(CONFIG), "--device", "cuda")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "plan: error: --mode cuda needs an NVIDIA GPU with CUDA, and torch sees none here; use --mode cpu or fake"
    )


def test_auto_mode_picks_cpu_for_tiny_fp32_and_fake_for_large():
    tiny = json.loads(CONFIG.read_text())
    from fitplan.architecture import shape_from_config

    small = shape_from_config(tiny, "tiny")
    big = load_preset("llama-3.1-8b").shape
    if cuda_available():
        pytest.skip("a GPU is present: auto picks cuda")
    assert choose_mode(small, TrainingSetup(precision="fp32", seq_len=64, device="cpu")) == "cpu"
    assert choose_mode(big, TrainingSetup(seq_len=2048, device="cpu")) == "fake"


@pytest.mark.parametrize("method, ckpt", [("lora", False), ("lora", True), ("full", False)])
def test_fake_measurement_of_llama_3_2_1b_matches_the_planner(method, ckpt):
    entry = load_preset("llama-3.2-1b")
    setup = TrainingSetup(method=method, seq_len=512, batch_size=2, grad_ckpt=ckpt, device="cpu")
    m = measure(_raw_config(entry), entry.shape, setup, "fake")
    assert m.extrapolated_from_layers == [2, 3]
    est = estimate(entry, setup)
    assert abs(est.peak.tensors - m.peak_bytes) <= 0.03 * m.peak_bytes
    # one vocabulary: the measurement is a MemoryBreakdown like the estimate, compared by subtraction
    for category, nbytes in m.breakdown.shared().items():
        assert abs(est.peak.shared()[category] - nbytes) <= 0.05 * max(nbytes, 1), category
    assert abs(est.peak.logits_loss - m.breakdown.logits_loss) <= 0.01 * m.breakdown.logits_loss


def test_validate_command_prints_estimate_beside_measurement():
    r = run("validate", "--model", str(CONFIG), "--method", "lora", "--seq-len", "32", "--batch-size", "2", "--mode", "cpu")
    assert r.returncode == 0, r.stderr
    assert "Measured on the CPU, real tensors, exact accounting, 2 steps" in r.stdout
    assert "peak (tensors)" in r.stdout


@pytest.mark.gpu
def test_cuda_measurement_of_a_tiny_model():
    raw = json.loads(CONFIG.read_text())
    from fitplan.architecture import shape_from_config

    shape = shape_from_config(raw, "tiny")
    setup = TrainingSetup(method="lora", seq_len=256, batch_size=2, precision="bf16", device="cuda")
    m = measure(raw, shape, setup, "cuda")
    assert m.allocated_peak_bytes >= m.peak_bytes * 0.9
    assert m.reserved_peak_bytes >= m.allocated_peak_bytes
    assert m.cuda_context_bytes > 0
