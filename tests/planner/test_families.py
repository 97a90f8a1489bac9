"""The families of today's models, checked against what transformers 5.24 really does on fake tensors.

One small config per family: what each decoder layer saves for backward (the layer trace) and the
whole training step's peak (the estimate) beside the validator's fake-tensor measurement, for full
fine-tuning and LoRA, with and without checkpointing.
"""

import pytest
from fitplan.architecture import shape_from_config
from fitplan.catalog import ModelEntry
from fitplan.estimate import estimate, template
from fitplan.memory.activations import activation_forms
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup

pytestmark = pytest.mark.torch
pytest.importorskip("transformers")
pytest.importorskip("peft")
from fitplan.validate.measure import measure  # noqa: E402
from fitplan.validate.saved import saved_per_layer  # noqa: E402

BASE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
            vocab_size=1000, num_hidden_layers=3, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128)
CONFIGS = {
    "qwen3_moe": dict(BASE, model_type="qwen3_moe", norm_topk_prob=True, **MOE),
    "gpt_oss": dict(BASE, model_type="gpt_oss", num_local_experts=8, num_experts_per_tok=2, intermediate_size=128,
                    sliding_window=32, layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "gemma3_text": dict(BASE, model_type="gemma3_text", sliding_window=32,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "olmo2": dict(BASE, model_type="olmo2"),
    "granite": dict(BASE, model_type="granite"),
    "smollm3": dict(BASE, model_type="smollm3", no_rope_layers=[1, 1, 0]),
    "mistral": dict(BASE, model_type="mistral", sliding_window=32),
    "glm4_moe": dict(BASE, model_type="glm4_moe", n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
                     first_k_dense_replace=1, n_shared_experts=1, partial_rotary_factor=0.5),
    "deepseek_v3": dict(BASE, model_type="deepseek_v3", n_routed_experts=8, num_experts_per_tok=2,
                        moe_intermediate_size=128, first_k_dense_replace=1, n_shared_experts=1, q_lora_rank=96,
                        kv_lora_rank=64, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
                        num_key_value_heads=4, n_group=4, topk_group=2, head_dim=16),
    "llama4_text": dict(BASE, model_type="llama4_text", num_local_experts=4, num_experts_per_tok=1,
                        intermediate_size=128, intermediate_size_mlp=512, interleave_moe_layer_step=2,
                        attention_chunk_size=32),
    "qwen3_next": dict(BASE, model_type="qwen3_next", shared_expert_intermediate_size=128, linear_num_key_heads=4,
                       linear_num_value_heads=8, linear_key_head_dim=32, linear_value_head_dim=32,
                       layer_types=["linear_attention", "full_attention", "linear_attention"], **MOE),
    "phi3": dict(BASE, model_type="phi3"),
    "bloom": dict(model_type="bloom", hidden_size=256, n_head=4, n_layer=3, vocab_size=1000),
}
EAGER_ONLY = ("gpt_oss", "bloom")
# LoRA targets: the attention's (q, v: deepseek's kv_b_proj), and all-linear, which on the MoE families
# peft converts converts to the fused experts and the router (fitplan.methods.experts)
TARGETS = [("q", "v"), ("all-linear",)]


def _setup(name, method, targets=("q", "v"), seq=128, batch=2, attention="sdpa", ckpt=False):
    if name in EAGER_ONLY:
        attention = "eager"
    return TrainingSetup(method=method, attention=attention, seq_len=seq, batch_size=batch, device="cpu",
                         lora_targets=targets, lora_rank=8, grad_ckpt=ckpt)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("method, targets, attention, seq", [
    ("full", ("q", "v"), "sdpa", 128), ("lora", ("q", "v"), "sdpa", 128), ("lora", ("all-linear",), "sdpa", 128),
    ("full", ("q", "v"), "eager", 64),
])
def test_every_layer_saves_what_the_trace_says(name, method, targets, attention, seq):
    if name == "llama4_text" and targets == ("all-linear",):
        pytest.skip("refused: peft 0.21 cannot wrap Llama 4's router (test_llama4_router_is_refused)")
    cfg = CONFIGS[name]
    shape = shape_from_config(cfg, name)
    setup = _setup(name, method, targets, seq, attention=attention)
    report = saved_per_layer(cfg, shape, setup, num_layers=shape.num_layers)
    forms = activation_forms(shape, setup)
    counts, s = template(shape, setup).counts(seq, 2)
    first, later, _ = forms.at(s)
    measured_later = sum(v for k, v in report.per_layer.items() if k > 0)
    # Qwen3-Next's chunked delta rule at one chunk (64 tokens) saves a little less than its form
    tolerance = 0.06 if name == "qwen3_next" and seq <= 64 else 0.005
    for what, est, got in (("layer 0", first.bytes(*counts), report.per_layer.get(0, 0)),
                           ("later layers", later.bytes(*counts), measured_later)):
        assert abs(est - got) <= tolerance * max(got, 1) + 1024, (what, est, got)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("method, ckpt", [("full", False), ("lora", False), ("lora", True)])
def test_whole_step_peak_within_2_percent_of_fake_tensors(name, method, ckpt):
    """At a real model's vocabulary (32k: the smallest of today's) the peak is at the loss or in a
    layer's MLP backward, as the planner models it."""
    cfg = dict(CONFIGS[name], vocab_size=32000)
    shape = shape_from_config(cfg, name)
    setup = _setup(name, method, ("q", "v"), 256, 2, ckpt=ckpt)
    entry = ModelEntry(name, "test", None, shape)
    measured = measure(cfg, shape, setup, "fake")
    planned = estimate(entry, setup).peak.tensors
    assert abs(planned - measured.peak_bytes) <= 0.02 * measured.peak_bytes, (planned, measured.peak_bytes,
                                                                             measured.peak_phase)


@pytest.mark.parametrize("name", ["qwen3_moe", "glm4_moe", "deepseek_v3", "qwen3_next"])
def test_lora_all_linear_wraps_the_fused_experts_as_peft_does(name):
    """peft 0.21 converts all-linear on these model types into target_parameters on the fused experts
    (gate_up at twice the rank) and the router; its own trainable count equals the planner's."""
    import peft
    import torch
    import transformers

    cfg = dict(CONFIGS[name])
    shape = shape_from_config(cfg, name)
    setup = _setup(name, "lora", ("all-linear",))
    model_type = cfg.pop("model_type")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(model_type, **cfg))
    lora = REGISTRY["lora"]
    model = peft.get_peft_model(model, lora.peft_config(shape, setup))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora.trainable_params(shape, setup) == trainable


def test_llama4_router_is_refused():
    from fitplan.errors import PlanError

    shape = shape_from_config(CONFIGS["llama4_text"], "llama4_text")
    with pytest.raises(PlanError, match="router .* fails in peft 0.21"):
        REGISTRY["lora"].trainable_params(shape, _setup("llama4_text", "lora", ("all-linear",)))


def test_lora_on_the_gate_projection_alone_is_refused_where_peft_refuses():
    from fitplan.errors import PlanError

    shape = shape_from_config(CONFIGS["qwen3_moe"], "qwen3_moe")
    with pytest.raises(PlanError, match="without also targeting up_proj"):
        REGISTRY["lora"].trainable_params(shape, _setup("qwen3_moe", "lora", ("gate_proj",)))


def test_original_qwen_counts_by_hand():
    """Qwen-7B (model_type qwen, remote code): fused c_attn with bias, two gated halves w1/w2 of
    intermediate_size / 2, RMSNorms, untied head."""
    raw = dict(model_type="qwen", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
               intermediate_size=22016, vocab_size=151936, seq_length=8192, kv_channels=128)
    shape = shape_from_config(raw, "qwen-7b")
    h, ff, V, L = 4096, 22016 // 2, 151936, 32
    per_layer = (h * 3 * h + 3 * h) + h * h + 3 * h * ff + 2 * h
    assert shape.parameter_count == L * per_layer + 2 * V * h + h == 7_721_324_544


@pytest.mark.xfail(strict=True, reason="known gap: with checkpointing and a toy vocabulary (1,000) the peak moves "
                                       "into a recomputed layer's fp32 norm backward, whose temporaries the "
                                       "planner does not model (only the MLP backward's); 13% under on Gemma 3")
def test_checkpointed_peak_inside_a_norm_backward_with_a_toy_vocabulary():
    cfg = CONFIGS["gemma3_text"]
    shape = shape_from_config(cfg, "gemma3_text")
    setup = _setup("gemma3_text", "lora", ("q", "v"), 256, 2, ckpt=True)
    measured = measure(cfg, shape, setup, "fake").peak_bytes
    planned = estimate(ModelEntry("gemma3_text", "test", None, shape), setup).peak.tensors
    assert abs(planned - measured) <= 0.02 * measured
