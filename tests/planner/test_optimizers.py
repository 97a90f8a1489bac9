"""The optimizer table: each optimizer's state law, its step's temporaries, and its class."""

import pytest
from fitplan.errors import PlanError
from fitplan.optimizers import NAMES, optimizer


def test_state_laws_per_tensor():
    n = 4096 * 4096
    assert optimizer("adamw").state(n, 2, 0, False) == 4 * n            # two bf16 moments
    assert optimizer("adamw").state(n, 2, 0, True) == 4 * n + 4         # and the CPU step count
    assert optimizer("adamw-8bit").state(n, 2, 0, False) == 2 * n + 8 * (n // 256)
    assert optimizer("adamw-8bit").state(100, 2, 0, False) == 800       # small tensors stay 32-bit
    assert optimizer("paged-adamw").state(n, 2, 0, False) == 8 * n
    assert optimizer("sgd").state(n, 2, 0, False) == 0
    assert optimizer("sgd-momentum").state(n, 2, 0, False) == 2 * n
    assert optimizer("adafactor").state(n, 2, 8192, False) == 2 * 8192  # row and column statistics
    assert optimizer("lion").state(n, 2, 0, False) == 4 * n


def test_every_optimizer_names_a_class_the_validator_makes():
    for name in NAMES:
        o = optimizer(name)
        assert o.factory.rsplit(".", 1)[0] in ("torch.optim", "bitsandbytes.optim", "transformers.optimization")
    assert optimizer("paged-adamw").paged and not optimizer("adamw").paged


def test_unknown_optimizer():
    with pytest.raises(PlanError, match="unknown optimizer 'adam8'"):
        optimizer("adam8")
