"""Activation bytes per layer agree with what PyTorch saves for backward (fake tensors, CPU kernels)."""

import pytest
from fitplan.architecture import shape_from_config
from fitplan.estimate import template
from fitplan.memory.activations import activation_forms
from fitplan.setup import TrainingSetup

pytestmark = pytest.mark.torch
pytest.importorskip("transformers")
pytest.importorskip("peft")
from fitplan.validate.saved import saved_per_layer  # noqa: E402

# shapes of public checkpoints (weights are never needed), three layers deep
LLAMA_3_1_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, rms_norm_eps=1e-5,
                    max_position_embeddings=131072, num_hidden_layers=3, tie_word_embeddings=False)
QWEN2_5_7B = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  max_position_embeddings=32768, num_hidden_layers=3, tie_word_embeddings=False)
GEMMA2_9B = dict(model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=256, vocab_size=256000, query_pre_attn_scalar=256, sliding_window=4096,
                 final_logit_softcapping=30.0, attn_logit_softcapping=50.0, num_hidden_layers=3, tie_word_embeddings=True)
GPT2_MEDIUM = dict(model_type="gpt2", n_embd=1024, n_layer=3, n_head=16, n_positions=1024, vocab_size=50257,
                   resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
NO_DROPOUT = {"resid_pdrop": 0.0, "attn_pdrop": 0.0, "embd_pdrop": 0.0}
CONFIGS = {
    "llama": LLAMA_3_1_8B,
    "qwen2": QWEN2_5_7B,
    "gemma2": GEMMA2_9B,
    "gpt2": GPT2_MEDIUM,
    "gpt2-nodrop": {**GPT2_MEDIUM, **NO_DROPOUT},
}


def _counts(shape, setup):
    return template(shape, setup).counts(setup.seq_len, setup.batch_size)[0]

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
    shape = shape_from_config(cfg, layout)
    setup = _setup(dtype, attn, method, targets, seq, batch)
    report = saved_per_layer(cfg, shape, setup)
    forms = activation_forms(shape, setup)
    counts = _counts(shape, setup)
    for layer, form in ((0, forms.first), (1, forms.largest)):
        measured = report.per_layer[layer]
        estimate = form.bytes(*counts)
        assert abs(estimate - measured) <= 0.02 * measured, (layer, estimate, measured)


@pytest.mark.parametrize("layout, method", [("llama", "full"), ("llama", "lora"), ("qwen2", "lora"), ("gemma2", "full")])
def test_checkpointed_layer_keeps_its_input(layout, method):
    cfg = CONFIGS[layout]
    attn = "eager" if layout == "gemma2" else "sdpa"
    shape = shape_from_config(cfg, layout)
    setup = _setup("bfloat16", attn, method, None, 256, 2, ckpt=True)
    report = saved_per_layer(cfg, shape, setup)
    expected = activation_forms(shape, setup).checkpoint.bytes(*_counts(shape, setup))
    assert report.per_layer[1] == expected


@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("seq, batch", [(256, 1), (256, 2)])
def test_virtual_tokens_lengthen_what_layers_save(method, seq, batch):
    cfg = CONFIGS["llama"]
    shape = shape_from_config(cfg, "llama")
    setup = TrainingSetup(method=method, num_virtual_tokens=20, seq_len=seq, batch_size=batch, device="cpu")
    report = saved_per_layer(cfg, shape, setup)
    later = activation_forms(shape, setup).largest.bytes(*_counts(shape, setup))
    assert abs(later - report.per_layer[1]) <= 0.02 * report.per_layer[1]


def test_qlora_runs_activations_in_fp32():
    """prepare_model_for_kbit_training upcasts embedding, norms and head; Linear4bit returns its input's dtype.

    A real QLoRA model on the CPU (bitsandbytes 0.50): what layer 1 saves, counted per storage.
    """
    import collections

    import torch
    from fitplan.validate.build import build_real

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
    estimate = activation_forms(shape, setup).largest.bytes(*_counts(shape, setup))
    assert abs(estimate - measured) <= 0.02 * measured, (estimate, measured)
