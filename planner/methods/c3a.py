"""C3A (Chen et al. 2024, circular convolution adaptation) as peft 0.21 builds it.

Tensors (``tuners/c3a/layer.py`` 78-86): ``c3a_kernel`` ``(out / b, in / b, b)`` fp32 per module,
``b = --c3a-block-size`` (peft's default 256), which must divide both ``in`` and ``out``.

Forward (``layer.py`` 182-200, ``utils.py`` 28-47): ``x.float()``, a block-circular convolution by
FFT in a custom autograd function that saves the fp32 input and the kernel, the result cast and
added. Temporaries per token: the complex ``fft`` of the input (``8 in``), the einsum's and the
inverse transform's complex outputs (``8 out`` each).
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class C3A(LinearMethod):
    name = "c3a"
    title = "C3A"
    strength = 21
    options = frozenset({"lora_targets", "c3a_block_size"})
    conv1d = False

    def targets(self, shape: ModelShape, setup: TrainingSetup) -> tuple[Matrix, ...]:
        out = super().targets(shape, setup)
        b = setup.c3a_block_size
        for m in out:
            if m.in_features % b or m.out_features % b:
                raise PlanError(f"C3A: --c3a-block-size {b} must divide {m.name}'s in ({m.in_features}) and out "
                                f"({m.out_features}) features")
        return out

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("c3a_kernel", m.out_features * m.in_features // setup.c3a_block_size, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        trace.save(trace.cast(x, 4, m.in_features))          # the custom function saves the fp32 input
        trace.transient(Size(token=8 * m.in_features + 16 * m.out_features))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.C3AConfig(task_type="CAUSAL_LM", block_size=setup.c3a_block_size,
                              target_modules=self.peft_targets(shape, setup))


C3A_METHOD = C3A()
