"""Prompt tuning (Lester et al. 2021) as peft 0.21 builds it: ``num_virtual_tokens x hidden``
trained embeddings prepended to every sequence, so every activation and the logits are
``num_virtual_tokens`` positions longer."""

from __future__ import annotations

from fitplan.methods.base import ADAPTER_DTYPE, Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.setup import TrainingSetup


class Prompt(Method):
    name = "prompt"
    title = "prompt tuning"
    strength = 0
    options = frozenset({"num_virtual_tokens"})
    input_requires_grad = True

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        vt, h = setup.num_virtual_tokens, shape.hidden_size
        return [TensorGroup("prompt.embedding", 1, vt * h, ADAPTER_DTYPE, True, True, vt + h)]

    def virtual_tokens(self, setup: TrainingSetup) -> int:
        return setup.num_virtual_tokens

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=setup.num_virtual_tokens)


PROMPT = Prompt()
