"""P-tuning (Liu et al. 2021) as peft 0.21 builds it: a ``num_virtual_tokens x hidden`` embedding and
peft's MLP prompt encoder (Linear-ReLU-Linear-ReLU-Linear, three hidden x hidden linears with
biases; peft's ``encoder_hidden_size`` defaults to the model's hidden size), run once per step on the
virtual tokens, whose output is prepended to every sequence."""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, TensorGroup
from fitplan.methods.prompt import Prompt

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.setup import TrainingSetup


class PTuning(Prompt):
    name = "ptuning"
    title = "P-tuning"
    strength = 1

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        h, vt = shape.hidden_size, setup.num_virtual_tokens
        return [
            TensorGroup("ptuning.embedding", 1, vt * h, ADAPTER_DTYPE, True, True, vt + h),
            TensorGroup("ptuning.mlp.weight", 3, h * h, ADAPTER_DTYPE, True, True, 2 * h),
            TensorGroup("ptuning.mlp.bias", 3, h, ADAPTER_DTYPE, True, added=True),
        ]

    def encoder_form(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        # the three linears' fp32 inputs and the token indices, saved until the end of backward
        vt, h = setup.num_virtual_tokens, shape.hidden_size
        return Size(const=3 * vt * h * 4 + 8 * vt)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=setup.num_virtual_tokens)


PTUNING = PTuning()
