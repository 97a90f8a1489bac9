"""MiSS (Kang et al. 2024, matrix shard sharing; the successor of Bone) as peft 0.21 builds it, with
its default ``init_weights=True``.

Tensors (``tuners/miss/layer.py`` 93, 116-123): ``miss_block`` (r x out) fp32 per module, ``r`` =
``--lora-rank`` (peft's default 64).

Forward (``layer.py`` 356-372): ``result + sum(x.float().reshape(..., in / r, r), -2) @ block``
(the input padded to a multiple of ``r``): the ``T x r`` fp32 sum is saved, for the block's
gradient. No weight-sized tensors.

Known limitations: the ``bat`` and ``mini`` initialisations (other layouts) are not modelled.
"""

from __future__ import annotations

from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class MiSS(LinearMethod):
    name = "miss"
    title = "MiSS"
    strength = 20
    options = frozenset({"lora_rank", "lora_targets"})
    conv1d = False

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("miss_block", setup.lora_rank * m.out_features, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        trace.save(trace.tok(trace.setup.lora_rank, 4, True))   # the summed input, for the block's gradient

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.MissConfig(task_type="CAUSAL_LM", r=setup.lora_rank, target_modules=self.peft_targets(shape, setup))


MISS = MiSS()
