"""TrainingSetup: one method's setting, its derived facts, and what it refuses on creation."""

import pytest
from fitplan.errors import PlanError
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup


def test_a_method_name_becomes_the_registry_method():
    assert TrainingSetup(method="qlora").method is REGISTRY["qlora"]
    with pytest.raises(PlanError, match="unknown method 'lorra'. Did you mean lora"):
        TrainingSetup(method="lorra")


def test_checkpointing_follows_the_method_unless_chosen():
    assert TrainingSetup(method="qlora").checkpointing
    assert not TrainingSetup(method="lora").checkpointing
    assert not TrainingSetup(method="qlora", grad_ckpt=False).checkpointing


def test_precision_words():
    s = TrainingSetup(precision="bf16-mixed")
    assert (s.mixed, s.compute_dtype, s.weight_dtype, s.master_weights) == (True, "bf16", "fp32", False)
    s = TrainingSetup(precision="bf16-master")
    assert (s.mixed, s.compute_dtype, s.weight_dtype, s.master_weights) == (False, "bf16", "bf16", True)


def test_the_method_decides_activation_bytes_and_tokens():
    assert TrainingSetup(method="qlora").activation_bytes == 4     # peft's fp32 upcast
    assert TrainingSetup(method="qlora", kbit_upcast=False).activation_bytes == 2
    assert TrainingSetup(method="prompt", num_virtual_tokens=30).virtual_tokens == 30
    assert TrainingSetup(method="prefix", num_virtual_tokens=30).prefix_tokens == 30
    assert TrainingSetup(method="prefix").virtual_tokens == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="prefix", grad_ckpt=True), "prefix tuning does not work with gradient checkpointing"),
    (dict(seq_len=0), "seq-len must be positive, got 0"),
    (dict(batch_size=2_000_000), "beyond the supported maximum"),
    (dict(attention="flash", device="cpu"), "needs a CUDA device"),
    (dict(optimizer="adam"), "unknown optimizer 'adam'"),
    (dict(lora_dropout=1.0), "lora-dropout must be in"),
])
def test_refusals(kwargs, message):
    with pytest.raises(PlanError, match=message):
        TrainingSetup(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(base="gptq"), "unknown base 'gptq'"),
    (dict(method="vera", vera_rank=0), "vera-rank must be positive"),
    (dict(method="oft", oft_block_size=1.5), "oft-block-size must be a whole number"),
    (dict(method="boft", boft_block_num=-1), "boft-block-num must be a whole number, 0 or more"),
    (dict(method="lokr", lokr_decompose_factor=0), "lokr-decompose-factor must be -1"),
    (dict(method="adalora", init_r=4, target_r=8), "target-r \\(8\\) must not exceed init-r \\(4\\)"),
    (dict(method="llama-adapter", adapter_layers=-1), "adapter-layers must be a whole number from 0"),
    (dict(method="road", road_variant="road_3"), "unknown road variant 'road_3'"),
])
def test_refusals_of_the_other_methods_options(kwargs, message):
    with pytest.raises(PlanError, match=message):
        TrainingSetup(**kwargs)


def test_a_quantized_base_sets_checkpointing_and_activations_as_its_loader_does():
    assert TrainingSetup(method="lora", base="bnb-int8").checkpointing
    assert not TrainingSetup(method="lora", base="awq").checkpointing
    assert TrainingSetup(method="lora", base="gptq-int4").activation_bytes == 2
    assert TrainingSetup(method="lora", base="nf4").activation_bytes == 4
    assert TrainingSetup(method="lora", base="nf4", kbit_upcast=False).activation_bytes == 2


def test_method_fields_from_a_request():
    from fitplan.request import Request
    from fitplan.setup import METHOD_FIELDS, method_fields

    r = Request(model="gpt2", vera_rank=64, ia3_targets="q_proj, down", base="GPTQ-INT4")
    fields = method_fields(r.value)
    assert set(fields) == set(METHOD_FIELDS)
    assert (fields["vera_rank"], fields["ia3_targets"], fields["base"]) == (64, ("q_proj", "down"), "gptq-int4")
    assert TrainingSetup(method="ia3", **fields).ia3_targets == ("q_proj", "down")
