"""Trainable counts per method agree with peft's own, and with the published checks."""

import pytest
from fitplan.architecture import shape_from_config
from fitplan.catalog import load_preset
from fitplan.errors import PlanError
from fitplan.methods import REGISTRY
from fitplan.methods.lora import target_matrices as lora_target_matrices
from fitplan.setup import TrainingSetup

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

SMALL = {
    "llama": dict(model_type="llama", hidden_size=128, intermediate_size=352, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=500),
    "qwen2": dict(model_type="qwen2", hidden_size=128, intermediate_size=352, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=500, tie_word_embeddings=True),
    "gemma2": dict(model_type="gemma2", hidden_size=128, intermediate_size=352, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=500),
    "phi3": dict(model_type="phi3", hidden_size=128, intermediate_size=352, num_hidden_layers=3,
                 num_attention_heads=8, num_key_value_heads=4, vocab_size=500, pad_token_id=0,
                 bos_token_id=1, eos_token_id=2),
    "gpt2": dict(model_type="gpt2", n_embd=128, n_layer=3, n_head=4, vocab_size=500, n_positions=256),
    "gpt_neox": dict(model_type="gpt_neox", hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                     num_attention_heads=4, vocab_size=500),
}


def _peft_count(raw, peft_config):
    cfg = dict(raw)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model = peft.get_peft_model(model, peft_config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lora_llama_3_2_3b_r16_qv():
    shape = load_preset("llama-3.2-3b").shape
    assert REGISTRY["lora"].trainable_params(shape, TrainingSetup(method="lora", lora_rank=16)) == 4_587_520


def test_prefix_llama_2_7b():
    shape = load_preset("llama-2-7b").shape
    setup = TrainingSetup(method="prefix", num_virtual_tokens=20)
    assert REGISTRY["prefix"].trainable_params(shape, setup) == 5_242_880


def test_published_peft_counts_llama_3_2_3b():
    # PEFT's MetaMathQA results (data/reference): trainable counts recorded beside each run
    shape = load_preset("llama-3.2-3b").shape
    assert REGISTRY["lora"].trainable_params(shape, TrainingSetup(lora_rank=32)) == 9_175_040
    assert REGISTRY["prefix"].trainable_params(shape, TrainingSetup(method="prefix", num_virtual_tokens=200)) == 11_468_800
    assert REGISTRY["prompt"].trainable_params(shape, TrainingSetup(method="prompt", num_virtual_tokens=200)) == 614_400
    assert REGISTRY["ptuning"].trainable_params(shape, TrainingSetup(method="ptuning", num_virtual_tokens=20)) == 28_382_208
    assert REGISTRY["full"].trainable_params(shape, TrainingSetup(method="full")) == 3_212_749_824


@pytest.mark.parametrize("family", sorted(SMALL))
@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("lora", dict(lora_rank=8)),
        ("lora-all", dict(lora_rank=4, lora_targets=("all-linear",))),
        ("prefix", dict(num_virtual_tokens=10)),
        ("prefix-proj", dict(num_virtual_tokens=10, prefix_projection=True)),
        ("prompt", dict(num_virtual_tokens=10)),
        ("ptuning", dict(num_virtual_tokens=10)),
    ],
)
def test_counts_match_peft(family, method, kwargs):
    raw = SMALL[family]
    shape = shape_from_config(raw, family)
    name = method.split("-")[0]
    setup = TrainingSetup(method=name, **kwargs)
    if name == "lora":
        targets = "all-linear" if "all-linear" in setup.lora_targets else [m.name for m in lora_target_matrices(shape, setup.lora_targets)]
        pc = peft.LoraConfig(task_type="CAUSAL_LM", r=setup.lora_rank, target_modules=targets)
    elif name == "prefix":
        pc = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=setup.prefix_projection)
    elif name == "prompt":
        pc = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10)
    else:
        pc = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=10)
    assert REGISTRY[name].trainable_params(shape, setup) == _peft_count(raw, pc)


def test_unknown_lora_target_lists_valid_names():
    shape = load_preset("gpt2").shape
    with pytest.raises(PlanError, match="matches no linear module.*Valid: .*c_attn"):
        REGISTRY["lora"].trainable_params(shape, TrainingSetup(lora_targets=("q_proj",)))


def test_role_targets_land_on_fused_projections():
    shape = load_preset("phi-3-mini").shape
    assert [m.name for m in lora_target_matrices(shape, ("q", "v"))] == ["qkv_proj"]
