"""Bottleneck adapters (Houlsby et al. 2019, section 2.1): one after each layer's attention block
and one after its MLP block, each ``x + up(act(down(x)))``, ``down`` (hidden -> size) and ``up``
(size -> hidden) with biases, in fp32 like peft's adapters. peft has none: the validator injects the
project's own module (``fitplan.validate.adapters``).
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class Adapter(Method):
    name = "adapter"
    title = "bottleneck adapters (Houlsby)"
    strength = 3
    options = frozenset({"adapter_size"})

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        h, m, n = shape.hidden_size, setup.adapter_size, 2 * shape.num_layers
        return [
            TensorGroup("adapter.down.weight", n, m * h, ADAPTER_DTYPE, True, True, m + h),
            TensorGroup("adapter.down.bias", n, m, ADAPTER_DTYPE, True, added=True),
            TensorGroup("adapter.up.weight", n, h * m, ADAPTER_DTYPE, True, True, h + m),
            TensorGroup("adapter.up.bias", n, h, ADAPTER_DTYPE, True, added=True),
        ]

    def trace_block_output(self, trace: Trace, out: TraceTensor) -> TraceTensor:
        """x + up(act(down(x.float()))), fp32 inside."""
        h, m = trace.shape.hidden_size, trace.setup.adapter_size
        xc = trace.cast(out, 4, h)
        trace.save(xc)                                        # down's weight trains
        d = trace.tok(m, 4, True)
        trace.save(d)                                         # the activation saves its input
        act = trace.tok(m, 4, True)
        trace.save(act)                                       # up's weight trains
        return trace.tok(h, trace.a, True)

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        return layer_gradient_bytes // 2                      # the adapter after the MLP

    def mlp_tail(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        # the MLP adapter's fp32 input and its bottleneck's two saved tensors
        return Size(token=4 * shape.hidden_size + 8 * setup.adapter_size)

    def build(self, model: Any, shape: ModelShape, setup: TrainingSetup) -> Any:
        from fitplan.validate.adapters import add_bottleneck_adapters

        add_bottleneck_adapters(model, shape.hidden_size, setup.adapter_size)
        return super().build(model, shape, setup)


ADAPTER = Adapter()
