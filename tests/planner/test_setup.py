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
