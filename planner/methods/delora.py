"""DeLoRA (Bini et al. 2025, decoupled low-rank adaptation) as peft 0.21 builds it.

Tensors (``tuners/delora/layer.py`` 51, 112-114, 150): ``delora_A`` (r x in), ``delora_B``
(out x r) and ``delora_lambda`` (1) fp32, ``r`` = ``--lora-rank`` (peft's default 8); a persistent
``delora_w_norm`` buffer of ``in`` fp32 column norms of ``W`` (in the adapter file).

Forward (``layer.py`` 226-266): ``h = (x * w_norm) @ A^T`` (the product promotes to fp32: a new
``T x in x 4`` tensor per module, saved for ``A``'s gradient), scaled by
``lambda / r / (||A_i|| ||B_j||)`` and ``@ B^T``: two ``T x r`` fp32 tensors saved, with a few
``r`` vectors.
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


class DeLoRA(LinearMethod):
    name = "delora"
    title = "DeLoRA"
    strength = 24
    options = frozenset({"lora_rank", "lora_targets"})
    conv1d = False

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        r = setup.lora_rank
        return [("delora_A", r * m.in_features, ADAPTER_DTYPE), ("delora_B", m.out_features * r, ADAPTER_DTYPE),
                ("delora_lambda", 1, ADAPTER_DTYPE)]

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        out = super().added_tensors(shape, setup)
        for m in self.targets(shape, setup):
            out.append(TensorGroup(f"{m.name}.delora_w_norm", shape.held_by(m), m.in_features, ADAPTER_DTYPE,
                                   False, True))
        return out

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        r = trace.setup.lora_rank
        trace.save(trace.tok(m.in_features, 4, True))        # x * w_norm, for A's gradient
        trace.save(trace.tok(r, 4, True), trace.tok(r, 4, True))
        trace.save_size(Size(const=4 * 3 * r))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.DeloraConfig(task_type="CAUSAL_LM", r=setup.lora_rank, target_modules=self.peft_targets(shape, setup))


DELORA = DeLoRA()
