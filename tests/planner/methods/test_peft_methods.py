"""The peft methods beyond the seeds, torch-free: each method's declared facts, a trainable count
computed by hand on a small llama (hidden 128, intermediate 352, 3 layers, 8 heads of 16, 2 kv heads:
q_proj 128 -> 128, v_proj 128 -> 32), and what it saves per layer where that is the point."""

import pytest
from fitplan.architecture import shape_from_config
from fitplan.catalog import load_preset
from fitplan.errors import PlanError
from fitplan.memory.activations import activation_forms
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup

RAW = dict(model_type="llama", hidden_size=128, intermediate_size=352, num_hidden_layers=3,
           num_attention_heads=8, num_key_value_heads=2, vocab_size=500)
SMALL = shape_from_config(RAW, "small-llama")
L = 3


def count(name, **kw):
    setup = TrainingSetup(method=name, device="cpu", precision="fp32", **kw)
    return REGISTRY[name].trainable_params(SMALL, setup)


@pytest.mark.parametrize("name, kwargs, per_layer", [
    # DoRA: LoRA's r(in + out) plus the out-long magnitude: q 4*256 + 128, v 4*160 + 32
    ("dora", dict(lora_rank=4), 4 * 256 + 128 + 4 * 160 + 32),
    # IA3 on llama: k and v (out = 32 each) and the feed-forward down_proj (in = 352)
    ("ia3", {}, 32 + 32 + 352),
    # VeRA r=256: lambda_b (out) + lambda_d (r) per module; the shared projections are frozen
    ("vera", {}, 128 + 256 + 32 + 256),
    # LoHa: 2r(in + out)
    ("loha", dict(lora_rank=4), 2 * 4 * 256 + 2 * 4 * 160),
    # LoKr r=4: q: 128 = 8 x 16 both ways, w1 8x8, w2 as 16x4 + 4x16 (r < 16/2); v: 32 = 4 x 8 out
    ("lokr", dict(lora_rank=4), (64 + 64 + 64) + (32 + 32 + 64)),
    # OFT b=32: in (b - 1)/2 per module
    ("oft", {}, 2 * 128 * 31 // 2),
    # BOFT block size 4: in x 4 + out
    ("boft", {}, 128 * 4 + 128 + 128 * 4 + 32),
    # AdaLoRA init_r 12: init_r (in + out + 1); ranknum frozen on a CPU fp32 base
    ("adalora", {}, 12 * 257 + 12 * 161),
    # LN tuning on llama: input_layernorm and post_attention_layernorm (and the final norm, once)
    ("ln-tuning", {}, 2 * 128),
    ("fourierft", {}, 2 * 1000),
    ("hra", dict(lora_rank=4), 2 * 128 * 4),
    ("miss", dict(lora_rank=4), 4 * 128 + 4 * 32),
    ("c3a", dict(c3a_block_size=32), 128 * 128 // 32 + 32 * 128 // 32),
    ("road", dict(road_group_size=32), 128 // 2 * 2 + 32 // 2 * 2),
    ("shira", dict(lora_rank=4), 4 * 256 + 4 * 160),
    ("delora", dict(lora_rank=4), 4 * 256 + 1 + 4 * 160 + 1),
    ("gralora", dict(lora_rank=4), 4 * 256 + 4 * 160),
    ("waveft", {}, 2 * 2592),
])
def test_hand_counted_trainable_parameters(name, kwargs, per_layer):
    final = 128 if name == "ln-tuning" else 0
    assert count(name, **kwargs) == L * per_layer + final


def test_counts_outside_the_layers():
    assert count("trainable-tokens") == 16 * 128
    assert count("trainable-tokens", num_token_indices=5) == 5 * 128
    assert count("llama-adapter", adapter_layers=2, adapter_len=10) == 2 * (10 * 128 + 1)
    assert count("llama-adapter") == 3 * (10 * 128 + 1)          # 0: the top 30, or every layer of 3


def test_published_peft_defaults_on_llama_3_2_3b():
    # peft 0.21.2's own counts at its defaults (r=8): the meta-device
    # test in test_counts.py checks them against peft itself
    shape = load_preset("llama-3.2-3b").shape
    expect = {"dora": 2_408_448, "ia3": 286_720, "vera": 129_024, "loha": 4_587_520, "lokr": 157_696,
              "oft": 2_666_496, "boft": 802_816, "adalora": 3_441_312, "ln-tuning": 175_104,
              "trainable-tokens": 49_152, "llama-adapter": 860_188, "fourierft": 56_000, "hra": 1_376_256,
              "delora": 2_293_816, "waveft": 145_152}
    for name, n in expect.items():
        setup = TrainingSetup(method=name, lora_rank=8, device="cpu", precision="fp32")
        assert REGISTRY[name].trainable_params(shape, setup) == n, name


def test_vera_shares_one_pair_of_projections_in_the_file():
    setup = TrainingSetup(method="vera", device="cpu", precision="fp32")
    groups = REGISTRY["vera"].tensors(SMALL, setup)
    shared = {g.label: g.elements for g in groups if g.label in ("vera_A", "vera_B")}
    assert shared == {"vera_A": 256 * 128, "vera_B": 128 * 256}      # r x max in, max out x r
    est_file = sum(g.data_bytes() for g in groups if g.added and g.in_file)
    assert est_file == 4 * (L * (128 + 256 + 32 + 256) + 2 * 256 * 128)


def test_weight_sized_saved_tensors():
    # LoHa/LoKr save their fp32 delta weight per module where the input needs a gradient (layers >= 1)
    setup = TrainingSetup(method="loha", device="cpu", precision="fp32", lora_rank=4)
    lora = TrainingSetup(method="lora", device="cpu", precision="fp32", lora_rank=4)
    f, base = activation_forms(SMALL, setup), activation_forms(SMALL, lora)
    per_layer = f.later.scaled(1)
    assert per_layer.const - base.later.const == (L - 1) * (4 * 128 * 128 + 4 * 32 * 128 + 2 * 4)
    # OFT: Q, Q^2, Q^3 and R (r x b x b fp32 each) per module
    oft = activation_forms(SMALL, TrainingSetup(method="oft", device="cpu", precision="fp32"))
    assert oft.later.const == (L - 1) * 2 * 4 * 4 * (4 * 32 * 32)


def test_dora_marks_its_weight_norm_as_a_forward_moment():
    f = activation_forms(SMALL, TrainingSetup(method="dora", device="cpu", precision="fp32", lora_rank=4))
    alive = [a.const for _, a in f.transients]
    # eye(in) + A(eye) + lora_weight, s * lora_weight, W + s * lora_weight (fp32 weights: no W copy)
    assert alive == [4 * (128 * 128 + 128 * 4 + 3 * 128 * 128), 4 * (128 * 128 + 128 * 4 + 3 * 128 * 32)]


def test_llama_adapter_leaves_the_lower_layers_without_gradient():
    one = TrainingSetup(method="llama-adapter", device="cpu", precision="fp32", adapter_layers=1)
    three = one.with_(adapter_layers=3)
    assert activation_forms(SMALL, one).later.token == 0
    assert activation_forms(SMALL, three).later.token > 0
    with pytest.raises(PlanError, match="more than .* 3 layers"):
        count("llama-adapter", adapter_layers=4)
    with pytest.raises(PlanError, match="supports llama, mistral"):
        REGISTRY["llama-adapter"].trainable_params(load_preset("qwen2.5-0.5b").shape, one)


def test_ln_tuning_makes_layer_0_save_its_attention():
    ln = activation_forms(SMALL, TrainingSetup(method="ln-tuning", device="cpu", precision="fp32"))
    lora = activation_forms(SMALL, TrainingSetup(method="lora", device="cpu", precision="fp32"))
    assert ln.first.token > lora.first.token                     # input_layernorm trains: q, k, v need grad


def test_refusals_name_the_option():
    with pytest.raises(PlanError, match="c3a-block-size 256 must divide"):
        count("c3a")
    with pytest.raises(PlanError, match="road-group-size 64 must divide"):
        count("road")
    with pytest.raises(PlanError, match="no default IA3 targets for phi3.*--ia3-targets"):
        REGISTRY["ia3"].trainable_params(load_preset("phi-3-mini").shape, TrainingSetup(method="ia3"))
    assert count("ia3", ia3_targets=("q", "down")) == L * (128 + 352)
    with pytest.raises(PlanError, match="target-r .* must not exceed init-r"):
        TrainingSetup(method="adalora", init_r=4, target_r=8)
    with pytest.raises(PlanError, match="unknown base 'int3'"):
        TrainingSetup(base="int3")


def test_lora_on_the_head_and_its_file():
    from fitplan.estimate import estimate

    shape = load_preset("llama-3.2-3b").shape
    both = TrainingSetup(method="lora", lora_rank=8, lora_targets=("q", "v", "lm_head"))
    # q,v as before plus r (h + V) on the head (peft's count on the meta device: 3,344,384)
    assert REGISTRY["lora"].trainable_params(shape, both) == 3_344_384
    entry = load_preset("llama-3.2-3b")
    qv = estimate(entry, both.with_(lora_targets=("q", "v")))
    # save_embedding_layers="auto" writes the head's base weight (bf16, tied: once) beside the adapters
    assert estimate(entry, both).saved_file_bytes - qv.saved_file_bytes == 4 * 8 * (3072 + 128256) + 2 * 128256 * 3072
    with pytest.raises(PlanError, match="lm_head is a target of LoRA"):
        count("loha", lora_targets=("lm_head",))
    with pytest.raises(PlanError, match="DoRA on lm_head is not modelled"):
        count("dora", lora_targets=("q", "lm_head"))
