"""Prefix tuning (Li and Liang 2021) as peft 0.21 builds it.

Trainable: ``num_virtual_tokens x layers x 2 x kv_width`` (GQA-aware); with the
reparameterisation an embedding of kv_width plus a two-layer MLP (kv_width -> kv_width ->
layers x 2 x kv_width). peft passes the prefixes as a key/value cache, so every layer's keys and
values are ``num_virtual_tokens`` longer, and the cache (with the prefix) stays alive in the
model's output until the loss is read. peft refuses gradient checkpointing for it.
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.setup import TrainingSetup


class Prefix(Method):
    name = "prefix"
    title = "prefix tuning"
    strength = 2
    options = frozenset({"num_virtual_tokens", "prefix_projection"})
    checkpointing_refused = ("prefix tuning does not work with gradient checkpointing in peft "
                             "('PREFIX_TUNING does not work with gradient checkpointing')")

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        vt, kv, L = setup.num_virtual_tokens, shape.kv_width, shape.num_layers
        if not setup.prefix_projection:
            return [TensorGroup("prefix.embedding", 1, vt * L * 2 * kv, ADAPTER_DTYPE, True, True, vt + L * 2 * kv)]
        return [
            TensorGroup("prefix.embedding", 1, vt * kv, ADAPTER_DTYPE, True, True, vt + kv),
            TensorGroup("prefix.transform.0.weight", 1, kv * kv, ADAPTER_DTYPE, True, True, 2 * kv),
            TensorGroup("prefix.transform.0.bias", 1, kv, ADAPTER_DTYPE, True, added=True),
            TensorGroup("prefix.transform.2.weight", 1, kv * L * 2 * kv, ADAPTER_DTYPE, True, True, kv + L * 2 * kv),
            TensorGroup("prefix.transform.2.bias", 1, L * 2 * kv, ADAPTER_DTYPE, True, added=True),
        ]

    def prefix_tokens(self, setup: TrainingSetup) -> int:
        return setup.num_virtual_tokens

    def output_holds(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        # the cache's keys and values with the prefix; CPU SDPA's math path (with dropout) saves
        # the values themselves, so only the keys are extra there
        math_path = shape.dropout > 0 and setup.attention == "sdpa" and setup.device == "cpu"
        kv = shape.kv_width * setup.activation_bytes * (1 if math_path else 2) * shape.num_layers
        return Size(token=kv, batch=kv * setup.num_virtual_tokens)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=setup.num_virtual_tokens,
                                       prefix_projection=setup.prefix_projection)


PREFIX = Prefix()
