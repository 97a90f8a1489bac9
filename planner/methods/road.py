"""RoAD (Liao et al. 2025, 2D rotary adaptation) as peft 0.21 builds it.

Tensors (``tuners/road/layer.py`` 97-108): ``road_theta`` and ``road_alpha``, each ``out / 2``
(road_1), ``out`` (road_2) or ``2 out`` (road_4) fp32 per module; ``--road-group-size`` (peft's
default 64) must divide ``out``.

Forward (``layer.py`` 175-191, 385-397): the base output cast to fp32 and rotated pairwise,
``y * cos + rotate_half(y) * sin``: the fp32 output and its rotated half are saved (``2 x T x out
x 4``; the fp32 cast is a new tensor even in an fp32 model), with six ``out`` vectors (the
cos/sin terms and their inputs).
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

_PER_OUT = {"road_1": (1, 2), "road_2": (1, 1), "road_4": (2, 1)}   # elements per output: numerator, denominator


class RoAD(LinearMethod):
    name = "road"
    title = "RoAD"
    strength = 22
    options = frozenset({"lora_targets", "road_variant", "road_group_size"})
    conv1d = False

    def targets(self, shape: ModelShape, setup: TrainingSetup) -> tuple[Matrix, ...]:
        out = super().targets(shape, setup)
        for m in out:
            if m.out_features % setup.road_group_size:
                raise PlanError(f"RoAD: --road-group-size {setup.road_group_size} must divide {m.name}'s "
                                f"out features ({m.out_features})")
        return out

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        num, den = _PER_OUT[setup.road_variant]
        n = m.out_features * num // den
        return [("road_theta", n, ADAPTER_DTYPE), ("road_alpha", n, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        o = m.out_features
        trace.save(trace.tok(o, 4, True), trace.tok(o, 4, True))   # the fp32 output and its rotated half
        trace.save_size(Size(const=6 * 4 * o))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.RoadConfig(task_type="CAUSAL_LM", variant=setup.road_variant, group_size=setup.road_group_size,
                               target_modules=self.peft_targets(shape, setup))


ROAD = RoAD()
