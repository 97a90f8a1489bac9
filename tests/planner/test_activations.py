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


def test_qlora_runs_activations_in_fp32():
    """prepare_model_for_kbit_training upcasts embedding, norms and head; Linear4bit returns its input's dtype.

    A real QLoRA model on the CPU (bitsandbytes 0.50): what layer 1 saves, counted per storage.
    """
    import collections

    import torch

    from validate.build import build_real

    raw = dict(model_type="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
    shape = shape_from_config(raw, "tiny")
    setup = TrainingSetup(method="qlora", lora_rank=8, seq_len=64, batch_size=2, device="cpu", grad_ckpt=False)
    q = build_real(raw, shape, setup, "cpu")  # saved, reloaded 4-bit, prepare_model_for_kbit_training, LoRA
    current = ["?"]
    for name, module in q.named_modules():
        module.register_forward_pre_hook(lambda m, a, name=name: current.__setitem__(0, name))
    seen = {p.untyped_storage().data_ptr() for p in q.parameters()}
    by_layer = collections.defaultdict(dict)

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:  # a storage counts where it is first saved (rotary tables: layer 0)
            seen.add(ptr)
            if ".layers.1." in current[0]:
                by_layer[1][ptr] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 1000, (2, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = q(input_ids=ids, labels=ids)
    assert out.logits.dtype == torch.float32
    measured = sum(by_layer[1].values())
    estimate = activation_forms(shape, setup).later.bytes(*_counts(shape, setup))
    assert abs(estimate - measured) <= 0.02 * measured, (estimate, measured)
