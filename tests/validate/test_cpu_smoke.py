"""The CPU smoke sweep: real training steps of tiny llama, qwen2, gemma2 and gpt2 configs, every
method, and of tiny Qwen3-MoE, Gemma 3 and Qwen3-Next configs (full and LoRA), fp32, checkpointing on and off, measured with exact tensor accounting. The planner's peak
must be within 3% of the measured peak and each category within 5%.

Options a sweep file cannot set (its keys are validate/run.py's SETUP_KEYS) are run directly below:
LoRA on a bitsandbytes int8 and an NF4 base (``--base``) and LLaMA-Adapter on some of the layers.
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from fitplan.records import read_records, settings_key  # noqa: E402
from fitplan.validate.run import load_sweep, run_sweep  # noqa: E402

SWEEP = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "cpu-smoke.toml"
RUNS = load_sweep(SWEEP)
# methods the validator cannot measure, with the reason (strict: a fix makes the test fail until removed)
UNMEASURABLE = {
    "shira": "SHiRA adds a torch.sparse_coo_tensor to the weight; the tracker's untyped_storage() cannot see "
             "a sparse tensor's storage (NotImplementedError: Cannot access storage of SparseTensorImpl)",
}
_DELTANET = ("the CPU fallback of the Gated DeltaNet layer (transformers' torch_chunk_gated_delta_rule, a Python "
             "loop over chunks) holds per-chunk temporaries in its backward that the planner does not model; on "
             "CUDA the layer runs fla's fused kernels")
# runs of today's families still outside 3% / 5%, with what was measured (strict: a fix makes the test fail)
KNOWN_GAPS = {
    ("tiny-qwen3-next", "full", 64, False): _DELTANET + ": peak -4.6%, measured in backward (gradients and the "
                                            "layer's temporaries), planned at the optimizer step",
    ("tiny-qwen3-next", "lora", 64, True): _DELTANET + ": peak -16.8% at the recomputed layer's backward",
    ("tiny-qwen3-moe", "lora", 64, True): "the recomputed MoE layer's backward: temporaries -5.4% (peak -0.7%), "
                                          "not yet traced",
    ("tiny-gemma3", "full", 64, False): "peak -0.3%, but the measured peak moment holds 6% more activations and "
                                        "8.6% fewer temporaries than the planner's, and no gradients yet",
    ("tiny-gemma3", "lora", 64, True): "peak +0.5%, but the planner's peak moment (before the first adapter "
                                       "gradient) is not the measured one (adapter gradients present, activations "
                                       "29% under the planner's)",
}


def _params(runs):
    out = []
    for s in runs:
        reason = UNMEASURABLE.get(s["method"]) or KNOWN_GAPS.get(_key(s))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(s, marks=marks, id="-".join(str(x) for x in _key(s))))
    return out



def _key(settings):
    key = (Path(settings["model"]).stem, settings["method"], settings["seq_len"], settings["grad_ckpt"])
    return key + ((settings["lora_targets"],) if settings.get("lora_targets") not in (None, "q,v") else ())


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "cpu.jsonl"
    run_sweep(SWEEP, out, progress=False)
    return {r["key"]: r for r in read_records(out)}


@pytest.mark.parametrize("settings", _params(RUNS))
def test_planner_within_3_percent_peak_and_5_percent_per_category(records, settings):
    record = records[settings_key(settings)]
    if settings["method"] == "prefix" and settings["grad_ckpt"]:
        assert record["outcome"] == "skipped"
        assert "does not work with gradient checkpointing" in record["error"]
        return
    assert record["outcome"] == "ok", record.get("error")
    assert record["measurement"]["mode"] == "cpu"
    errors = record["errors_percent"]
    assert abs(errors["peak"]) <= 3.0, errors
    for category, pct in errors["categories"].items():
        assert pct is not None and abs(pct) <= 5.0, (category, errors)


DIRECT = [
    ("tiny-llama", dict(method="lora", base="bnb-int8", grad_ckpt=False)),
    ("tiny-llama", dict(method="lora", base="bnb-int8", grad_ckpt=True)),
    ("tiny-qwen2", dict(method="lora", base="bnb-int8", grad_ckpt=True)),
    ("tiny-llama", dict(method="lora", base="nf4", grad_ckpt=True)),
    ("tiny-llama", dict(method="llama-adapter", adapter_layers=2, grad_ckpt=False)),
    ("tiny-llama", dict(method="llama-adapter", adapter_layers=2, grad_ckpt=True)),
]


@pytest.mark.parametrize("model, options", DIRECT, ids=lambda x: x if isinstance(x, str) else
                         "-".join(f"{k}={v}" for k, v in x.items()))
def test_options_the_sweep_cannot_set(model, options):
    import json

    from fitplan.breakdown import errors_percent
    from fitplan.catalog import resolve_model
    from fitplan.estimate import estimate
    from fitplan.setup import TrainingSetup
    from fitplan.validate.measure import measure

    path = SWEEP.parent / "configs" / f"{model}.json"
    entry = resolve_model(str(path))
    setup = TrainingSetup(precision="fp32", batch_size=2, seq_len=64, device="cpu", lora_rank=16, **options)
    est = estimate(entry, setup)
    m = measure(json.loads(path.read_text()), entry.shape, setup, "cpu")
    peak = 100.0 * (est.peak.tensors - m.peak_bytes) / m.peak_bytes
    errors = errors_percent(est.peak, m.breakdown)
    assert abs(peak) <= 3.0, (peak, errors)
    for category, pct in errors.items():
        assert pct is not None and abs(pct) <= 5.0, (category, errors)
