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


# ---- every peft method: peft's own trainable count on the meta device equals the planner's ----------
# Llama-3.2-3B and two other families (Qwen2.5-0.5B, Gemma-2-2B), each method at peft's defaults as the
# planner builds it (its own peft_config, what the validator runs), on an fp32 base left on the meta
# device (peft keeps AdaLoRA's ranknum off it, so ranknum stays frozen, as on a CPU fp32 base).
NEW_METHODS = ("dora", "ia3", "vera", "loha", "lokr", "adalora", "oft", "ln-tuning", "trainable-tokens",
               "llama-adapter", "fourierft", "hra", "miss", "c3a", "road", "delora", "gralora", "waveft")
META_MODELS = ("llama-3.2-3b", "qwen2.5-0.5b", "gemma-2-2b")
# peft's own limits where a method does not run on a family (checked: the planner refuses the same)
REFUSED = {("llama-adapter", "qwen2.5-0.5b"), ("llama-adapter", "gemma-2-2b")}


def _meta_peft_count(name, setup, dtype=None):
    import json

    from fitplan.catalog import data_dir, preset_info
    from fitplan.validate.build import hf_config

    raw = json.loads((data_dir() / "models" / preset_info(name)["file"]).read_text())
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config(raw), dtype=dtype)
        model = setup.method.build(model, load_preset(name).shape, setup)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("model", META_MODELS)
@pytest.mark.parametrize("name", NEW_METHODS)
def test_every_method_matches_peft_on_the_meta_device(name, model):
    shape = load_preset(model).shape
    kwargs = dict(method=name, device="cpu", precision="fp32", lora_rank=8)
    if name == "c3a":
        kwargs["c3a_block_size"] = 128 if model != "qwen2.5-0.5b" else 64
    if name == "road":
        kwargs["road_group_size"] = 64
    setup = TrainingSetup(**kwargs)
    if (name, model) in REFUSED:
        with pytest.raises(PlanError, match="supports llama, mistral"):
            setup.method.trainable_params(shape, setup)
        return
    assert setup.method.trainable_params(shape, setup) == _meta_peft_count(model, setup)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
@pytest.mark.parametrize("name", ["shira", "boft"])
def test_counts_that_cannot_build_on_meta_match_peft_on_small_models(name, family):
    # peft cannot build SHiRA (torch.nonzero in its random mask) nor BOFT (Tensor.item() in its butterfly
    # permutations) on the meta device: small real models of three families instead
    raw = SMALL[family]
    shape = shape_from_config(raw, family)
    setup = TrainingSetup(method=name, lora_rank=4, device="cpu", precision="fp32")
    assert REGISTRY[name].trainable_params(shape, setup) == _peft_count(raw, setup.method.peft_config(shape, setup))


def test_adalora_ranknum_trains_on_a_cast_base():
    # a real bf16 base: _move_adapter_to_device_of_base_layer casts ranknum, which ParameterDict
    # re-registers as a trainable Parameter (peft tuners_utils.py 2168-2212): one more per module (on the
    # meta device peft keeps ranknum off it, frozen)
    raw = SMALL["llama"]
    shape = shape_from_config(raw, "llama")
    setup = TrainingSetup(method="adalora", precision="bf16", device="cpu")
    cfg = dict(raw)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = peft.get_peft_model(model, setup.method.peft_config(shape, setup))
    peft_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    count = REGISTRY["adalora"].trainable_params(shape, setup)
    assert count == peft_count
    assert count == REGISTRY["adalora"].trainable_params(shape, setup.with_(precision="fp32")) + 2 * shape.num_layers


@pytest.mark.parametrize("model", META_MODELS)
def test_lora_on_the_head_matches_peft_on_the_meta_device(model):
    shape = load_preset(model).shape
    setup = TrainingSetup(method="lora", lora_rank=8, lora_targets=("q", "v", "lm_head"), device="cpu", precision="fp32")
    assert setup.method.trainable_params(shape, setup) == _meta_peft_count(model, setup)
