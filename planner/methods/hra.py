"""HRA (Yuan et al. 2024, Householder reflection adaptation) as peft 0.21 builds it.

Tensors (``tuners/hra/layer.py`` 81): ``hra_u`` (in x r) fp32 per module, ``r`` = ``--lora-rank``.

Forward (``layer.py`` 215-275, ``apply_GS=False``): the columns of ``u`` normalised; the rotation
``R = prod_i (I - 2 u_i u_i^T)`` built one reflection at a time from an ``in x in`` identity
(``weight = weight - 2 * weight @ u_i @ u_i^T``: each product saves the running ``in x in``
matrix, r of them), ``mm(eye(in), R)`` (saves another identity), ``W' = mm(W.float(), R)`` (saves
the fp32 copy of ``W`` where it is not fp32) and the whole layer in fp32 as ``F.linear(x.float(),
W', b)`` (the base layer's forward is not called): the fp32 input, and ``W'`` (``out x in`` fp32)
when the input needs a gradient. Also the normalised ``u`` and the ``r`` products ``W u_i``.

Known limitations: ``apply_GS=True`` (Gram-Schmidt) is not modelled.
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class HRA(LinearMethod):
    name = "hra"
    title = "HRA"
    strength = 19
    options = frozenset({"lora_rank", "lora_targets"})
    conv1d = False   # peft: "Target module ... is not supported" for Conv1D

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("hra_u", m.in_features * setup.lora_rank, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        i, o, r = m.in_features, m.out_features, trace.setup.lora_rank
        trace.save(trace.cast(x, 4, i))
        const = (r + 1) * 4 * i * i + 2 * 4 * i * r          # the running products, eye(in); u, W u_i
        if trace.w != 4:
            const += 4 * i * o                               # W.float()
        if x.rg:
            const += 4 * i * o                               # W', for the input's gradient
        trace.save_size(Size(const=const))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.HRAConfig(task_type="CAUSAL_LM", r=setup.lora_rank, target_modules=self.peft_targets(shape, setup))


HRA_METHOD = HRA()
