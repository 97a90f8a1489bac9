"""VeRA (Kopiczko et al. 2024, vector-based random matrix adaptation) as peft 0.21 builds it.

One pair of frozen random projections shared by every targeted module (``tuners/vera/model.py``
113-160): ``vera_A`` (r x max in) and ``vera_B`` (max out x r), the largest ``in`` and ``out``
over the targets, fp32 buffers stored once and, with ``save_projection=True`` (the default), in
the adapter file. Per module two trainable fp32 vectors (``layer.py`` 89-90): ``vera_lambda_b``
(out) and ``vera_lambda_d`` (r). ``r`` is ``--vera-rank`` (peft's default 256).

Forward (``layer.py`` 280-285): ``result + lambda_b * F.linear(lambda_d * F.linear(x.float(),
A[:, :in]), B[:out])``. The projections are frozen, so the fp32 input is not saved; the two
products' inputs are: ``x A^T`` (``T x r x 4``) and the second product (``T x out x 4``).

Known limitations: ``vera_dropout`` (default 0) is not modelled.
"""

from __future__ import annotations

from fitplan.methods.base import ADAPTER_DTYPE, TensorGroup
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class VeRA(LinearMethod):
    name = "vera"
    title = "VeRA"
    strength = 9
    options = frozenset({"lora_targets", "vera_rank"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("vera_lambda_b", m.out_features, ADAPTER_DTYPE), ("vera_lambda_d", setup.vera_rank, ADAPTER_DTYPE)]

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        r = setup.vera_rank
        targets = self.targets(shape, setup)
        max_in = max(m.in_features for m in targets)
        max_out = max(m.out_features for m in targets)
        return super().added_tensors(shape, setup) + [
            TensorGroup("vera_A", 1, r * max_in, ADAPTER_DTYPE, False, True),   # shared, frozen (model.py 147-160)
            TensorGroup("vera_B", 1, max_out * r, ADAPTER_DTYPE, False, True),
        ]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        trace.save(trace.tok(trace.setup.vera_rank, 4, True))   # x A^T, saved by lambda_d * (.)
        trace.save(trace.tok(m.out_features, 4, True))          # (.) B^T, saved by lambda_b * (.)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.VeraConfig(task_type="CAUSAL_LM", r=setup.vera_rank, target_modules=self.peft_targets(shape, setup))


VERA = VeRA()
