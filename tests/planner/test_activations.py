"""Activation bytes per layer agree with what PyTorch saves for backward (fake tensors, CPU kernels)."""

import pytest

from planner.architecture import shape_from_config
from planner.memory.activations import _counts, activation_forms
from planner.setup import TrainingSetup

pytest.importorskip("transformers")
pytest.importorskip("peft")
from helpers import saved_tensors as st  # noqa: E402

NO_DROPOUT = {"resid_pdrop": 0.0, "attn_pdrop": 0.0, "embd_pdrop": 0.0}
CONFIGS = {
    "llama": st.LLAMA_3_1_8B,
    "qwen2": st.QWEN2_5_7B,
    "gemma2": st.GEMMA2_9B,
    "gpt2": st.GPT2_MEDIUM,
    "gpt2-nodrop": {**st.GPT2_MEDIUM, **NO_DROPOUT},
}

CASES = [
    # (layout, dtype, attention, method, lora targets, seq, batch)
    ("llama", "bfloat16", "sdpa", "full", None, 512, 1),
    ("llama", "bfloat16", "sdpa", "lora", ("q_proj", "v_proj"), 512, 2),
    ("llama", "bfloat16", "eager", "lora", ("q_proj", "v_proj"), 256, 1),
    ("llama", "float32", "sdpa", "lora", "all-linear", 256, 1),
    ("llama", "bfloat16", "eager", "full", None, 256, 2),
    ("qwen2", "bfloat16", "sdpa", "full", None, 512, 1),
    ("qwen2", "float32", "eager", "lora", ("q_proj", "v_proj"), 256, 1),
    ("gemma2", "bfloat16", "eager", "full", None, 256, 1),
    ("gemma2", "bfloat16", "eager", "lora", ("q_proj", "v_proj"), 256, 2),
    ("gpt2-nodrop", "bfloat16", "sdpa", "full", None, 512, 1),
    ("gpt2-nodrop", "float32", "eager", "lora", ("c_attn",), 256, 2),
    ("gpt2", "bfloat16", "sdpa", "full", None, 256, 1),
    ("gpt2", "bfloat16", "eager", "lora", "all-linear", 256, 1),
]


def _setup(dtype, attn, method, targets, seq, batch, ckpt=False):
    return TrainingSetup(
        method=method, seq_len=seq, batch_size=batch, precision="bf16" if dtype == "bfloat16" else "fp32",
        attention=attn, device="cpu", grad_ckpt=ckpt,
        lora_targets=("all-linear",) if targets == "all-linear" else (targets or ("q", "v")),
    )


@pytest.mark.parametrize("layout, dtype, attn, method, targets, seq, batch", CASES)
def test_layer_saved_bytes_within_2_percent(layout, dtype, attn, method, targets, seq, batch):
    cfg = CONFIGS[layout]
    report = st.measure_saved_bytes(
        cfg, dtype=dtype, attn_implementation=attn, method=method, seq_len=seq, batch_size=batch,
        lora_targets=targets or ("q_proj", "v_proj"), num_layers=3,
    )
    shape = shape_from_config({**cfg, "num_hidden_layers": 3, **({"n_layer": 3} if "n_layer" in cfg else {})}, layout)
    setup = _setup(dtype, attn, method, targets, seq, batch)
    forms = activation_forms(shape, setup)
    counts = _counts(shape, setup)
    for layer, form in ((0, forms.first), (1, forms.later)):
        measured = report.per_layer[layer]
        estimate = form.bytes(*counts)
        assert abs(estimate - measured) <= 0.02 * measured, (layer, estimate, measured)


@pytest.mark.parametrize("layout, method", [("llama", "full"), ("llama", "lora"), ("qwen2", "lora"), ("gemma2", "full")])
def test_checkpointed_layer_keeps_its_input(layout, method):
    cfg = CONFIGS[layout]
    attn = "eager" if layout == "gemma2" else "sdpa"
    report = st.measure_saved_bytes(cfg, attn_implementation=attn, method=method, seq_len=256, batch_size=2,
                                    grad_ckpt=True, num_layers=3)
    shape = shape_from_config({**cfg, "num_hidden_layers": 3}, layout)
    setup = _setup("bfloat16", attn, method, None, 256, 2, ckpt=True)
    expected = activation_forms(shape, setup).checkpoint.bytes(*_counts(shape, setup))
    assert report.per_layer[1] == expected


@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("seq, batch", [(256, 1), (256, 2)])
def test_virtual_tokens_lengthen_what_layers_save(method, seq, batch):
    cfg = CONFIGS["llama"]
    report = st.measure_saved_bytes(cfg, method=method, num_virtual_tokens=20, seq_len=seq, batch_size=batch, num_layers=3)
    shape = shape_from_config({**cfg, "num_hidden_layers": 3}, "llama")
    setup = TrainingSetup(method=method, num_virtual_tokens=20, seq_len=seq, batch_size=batch, device="cpu")
    later = activation_forms(shape, setup).later.bytes(*_counts(shape, setup))
    assert abs(later - report.per_layer[1]) <= 0.02 * report.per_layer[1]
