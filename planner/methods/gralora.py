"""GraLoRA (Jung et al. 2025, granular low-rank adaptation) as peft 0.21 builds it.

Tensors (``tuners/gralora/layer.py`` 120-150): ``gralora_A`` ``(k, in / k, r)`` and ``gralora_B``
``(k, r, out / k)`` fp32: ``r (in + out)`` per module, ``r`` = ``--lora-rank`` (peft's default 32),
``k`` = ``--gralora-k`` (2), ``hybrid_r`` 0.

Forward (``layer.py`` 320-385): two einsums on ``x.float().view(B, L, k, in / k)``: the fp32 input
and the ``T x k x r`` intermediate are saved.

Known limitations: ``hybrid_r`` (a plain LoRA beside, default 0) is not modelled.
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class GraLoRA(LinearMethod):
    name = "gralora"
    title = "GraLoRA"
    strength = 25
    options = frozenset({"lora_rank", "lora_targets", "gralora_k"})

    def targets(self, shape: ModelShape, setup: TrainingSetup) -> tuple[Matrix, ...]:
        out = super().targets(shape, setup)
        k = setup.gralora_k
        for m in out:
            if m.in_features % k or m.out_features % k or setup.lora_rank % k:
                raise PlanError(f"GraLoRA: --gralora-k {k} must divide {m.name}'s in ({m.in_features}) and out "
                                f"({m.out_features}) features and the rank ({setup.lora_rank})")
        return out

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        r = setup.lora_rank
        return [("gralora_A", r * m.in_features, ADAPTER_DTYPE), ("gralora_B", r * m.out_features, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        trace.save(trace.cast(x, 4, m.in_features))
        trace.save(trace.tok(trace.setup.gralora_k * trace.setup.lora_rank, 4, True))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.GraloraConfig(task_type="CAUSAL_LM", r=setup.lora_rank, alpha=2 * setup.lora_rank,
                                  gralora_k=setup.gralora_k, target_modules=self.peft_targets(shape, setup))


GRALORA = GraLoRA()
