"""OFT (Qiu et al. 2023, orthogonal fine-tuning) as peft 0.21 builds it: block-diagonal rotations of
each targeted linear's input.

Blocks (``tuners/oft/layer.py`` 421-441): ``r = in // b`` blocks of ``b = --oft-block-size``
(peft's default 32; a size that does not divide ``in`` is moved to the nearest divisor,
``adjust_oft_parameters``, ``layer.py`` 490-508); ``oft_R`` holds each block's strict upper
triangle: ``r x b(b - 1)/2`` fp32, ``in (b - 1) / 2`` per module. Two non-persistent int64 index
buffers of ``b(b - 1)/2`` each (``layer.py`` 101-103) sit beside it, not in the adapter file.

Forward (``layer.py`` 245-283, 648-657): the rotation is the Cayley transform by its Neumann series
(``use_cayley_neumann=True``, 5 terms, ``layer.py`` 118-156): ``R = I + 2Q + 2Q^2 + 2Q^3 + Q^4``
from ``bmm`` products that save ``Q``, ``Q^2`` and ``Q^3`` (``r x b x b`` fp32 each); the fp32
input, reshaped to blocks, is rotated by an einsum that saves it (for ``R``'s gradient) and ``R``
(for the input's, when the input needs a gradient); the frozen layer then runs on the rotated input.

Known limitations: ``coft``, ``block_share`` and ``module_dropout`` (defaults off) are not modelled.
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, TensorGroup
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


def adjust(in_features: int, params: int) -> int:
    """peft's ``OFTLayer.adjust_oft_parameters`` (``tuners/oft/layer.py`` 490-508): the divisor of
    ``in_features`` nearest ``params`` (the lower one on a tie)."""
    if params < in_features:
        higher = params
        while higher <= in_features and in_features % higher != 0:
            higher += 1
    else:
        return in_features
    lower = params
    while lower > 1 and in_features % lower != 0:
        lower -= 1
    return lower if (params - lower) <= (higher - params) else higher


def block_size(m: Matrix, setup: TrainingSetup) -> int:
    b = setup.oft_block_size
    if m.in_features % b != 0 or b > m.in_features:
        b = adjust(m.in_features, b)
    return b


class OFT(LinearMethod):
    name = "oft"
    title = "OFT"
    strength = 12
    conv1d = False   # peft: "only adapters for Conv2d, Conv1d, Linear are supported"
    options = frozenset({"lora_targets", "oft_block_size"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        b = block_size(m, setup)
        return [("oft_R", (m.in_features // b) * (b * (b - 1) // 2), ADAPTER_DTYPE)]

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        out = super().added_tensors(shape, setup)
        for m in self.targets(shape, setup):
            b = block_size(m, setup)
            # rows and cols: triu_indices(b, b, 1), non-persistent int64 buffers (layer.py 101-103)
            out.append(TensorGroup(f"{m.name}.oft_R.rows_cols", shape.held_by(m), 2 * (b * (b - 1) // 2), "int64",
                                   False, True, in_file=False))
        return out

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        b = block_size(m, trace.setup)
        rbb = 4 * (m.in_features // b) * b * b              # one r x b x b fp32 stack
        trace.save(trace.cast(x, 4, m.in_features))        # the einsum's input, for R's gradient
        trace.save_size(Size(const=3 * rbb + (rbb if x.rg else 0)))   # Q, Q^2, Q^3; R for x's gradient

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.OFTConfig(task_type="CAUSAL_LM", r=0, oft_block_size=setup.oft_block_size,
                              target_modules=self.peft_targets(shape, setup))


OFT_METHOD = OFT()
