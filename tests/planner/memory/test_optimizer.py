"""Gradients, optimizer states and the step's temporaries for a model's trained tensors."""

from fitplan.catalog import load_preset
from fitplan.memory.optimizer import (
    gradients,
    optimizer_states,
    optimizer_temporaries,
    parameter_order,
)
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup

SHAPE = load_preset("llama-3.1-8b").shape
P = SHAPE.parameter_count


def _groups(**kw):
    setup = TrainingSetup(method="full", **kw)
    return REGISTRY["full"].tensors(SHAPE, setup), setup


def test_pure_bf16_adamw():
    groups, setup = _groups()
    assert gradients(groups, setup) == 2 * P
    assert optimizer_states(groups, setup) == 4 * P
    assert optimizer_temporaries(groups, setup, SHAPE.num_layers) == 2 * P          # foreach on CUDA


def test_single_tensor_adamw_peaks_at_the_head():
    # denom of the final norm still alive while the head's two temporaries are made (measured: 2 x lm_head)
    groups, setup = _groups(device="cpu")
    head, norm = 2 * SHAPE.embedding_params, 2 * SHAPE.hidden_size
    assert optimizer_temporaries(groups, setup, SHAPE.num_layers) == norm + 2 * head
    assert optimizer_states(groups, setup) == 4 * P + 4 * SHAPE.param_tensors   # the CPU step counts


def test_parameter_order_lays_layers_out_in_turn():
    groups, _ = _groups()
    sizes = parameter_order(groups, SHAPE.num_layers)
    assert len(sizes) == SHAPE.param_tensors
    assert sizes[0] == sizes[-1] == 2 * SHAPE.embedding_params   # embedding first, head last


def test_master_weights_keep_fp32_gradients_states_and_copy():
    groups, setup = _groups(precision="bf16-master")
    assert gradients(groups, setup) == 4 * P
    assert optimizer_states(groups, setup) == 12 * P
