"""Full fine-tuning: every parameter trains, in the training dtype."""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import Method

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.setup import TrainingSetup


class Full(Method):
    name = "full"
    title = "full fine-tuning"
    strength = 6
    trains_base = True
    input_requires_grad = True
    saved_kind = "full checkpoint"

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        # the down projection's gradients are made first in a layer's MLP backward
        down = shape.matrix("down")
        return (down.params if down else 0) * (4 if setup.weight_dtype == "fp32" or setup.master_weights else 2)

    def mlp_tail(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        # the down projection's saved input (its weight trains)
        return Size(token=setup.activation_bytes * shape.intermediate_size)

    def flops_per_token(self, parameters: int) -> int:
        """6P: 2P forward, 4P backward (the input's and the weights' gradients)."""
        return 6 * parameters

    def build(self, model: Any, shape: ModelShape, setup: TrainingSetup) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        return super().build(model, shape, setup)


FULL = Full()
