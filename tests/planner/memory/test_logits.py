"""The loss's bytes per logit, by stack (transformers 5 and 4) and dtype."""

from fitplan.catalog import load_preset
from fitplan.memory.logits import loss_coefficients
from fitplan.setup import TrainingSetup


def test_bf16_upcasts_logits_for_the_loss():
    c = loss_coefficients(load_preset("llama-3.1-8b").shape, TrainingSetup())
    assert c == {"loss_bytes": 4, "loss_forward": 2 + 4, "loss_backward": 8}


def test_fp32_logits_need_no_copy_and_transformers_4_makes_one_more():
    shape = load_preset("llama-3.1-8b").shape
    assert loss_coefficients(shape, TrainingSetup(method="qlora"))["loss_forward"] == 4
    assert loss_coefficients(shape, TrainingSetup(transformers_major=4))["loss_forward"] == 2 + 4 + 4


def test_softcapping_and_the_legacy_bigcode_loss():
    assert loss_coefficients(load_preset("gemma-2-9b").shape, TrainingSetup())["loss_bytes"] == 4 + 2
    legacy = loss_coefficients(load_preset("santacoder").shape, TrainingSetup(transformers_major=4))
    assert legacy == {"loss_bytes": 2, "loss_forward": 4, "loss_backward": 4}
