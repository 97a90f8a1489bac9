"""Weights, quantization state and the saved files, from a method's tensor groups."""

from fitplan.catalog import load_preset
from fitplan.memory.weights import (
    quantization_state,
    saved_file_bytes,
    total_params,
    trainable_params,
    weights,
)
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup

SHAPE = load_preset("llama-3.1-8b").shape


def test_lora_weights_are_the_bf16_base_plus_fp32_adapters():
    groups = REGISTRY["lora"].tensors(SHAPE, TrainingSetup(method="lora"))
    assert trainable_params(groups) == 6_815_744
    assert weights(groups) == 2 * SHAPE.parameter_count + 4 * 6_815_744
    assert saved_file_bytes(groups, full=False) == 4 * 6_815_744
    assert total_params([g for g in groups if not g.added]) == SHAPE.parameter_count


def test_qlora_packs_linears_in_four_bits_with_their_state():
    groups = REGISTRY["qlora"].tensors(SHAPE, TrainingSetup(method="qlora"))
    assert weights(groups) < weights(REGISTRY["lora"].tensors(SHAPE, TrainingSetup(method="lora"))) / 2  # fp32 embedding and head
    assert quantization_state(groups, double_quant=True) < quantization_state(groups, double_quant=False)


def test_a_full_checkpoint_is_every_trained_tensor():
    groups = REGISTRY["full"].tensors(SHAPE, TrainingSetup(method="full"))
    assert saved_file_bytes(groups, full=True) == 2 * SHAPE.parameter_count
