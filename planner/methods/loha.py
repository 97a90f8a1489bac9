"""LoHa (Hyeon-Woo et al. 2022, FedPara: low-rank Hadamard products) as peft 0.21 builds it.

Tensors (``tuners/loha/layer.py`` 67-71): ``hada_w1_a`` and ``hada_w2_a`` (out x r),
``hada_w1_b`` and ``hada_w2_b`` (r x in), fp32: ``2 r (in + out)`` per module; ``r`` is
``--lora-rank``.

Every forward builds the whole update ``dW = ((w1a @ w1b) * (w2a @ w2b)) * scale`` (``HadaWeight``,
``layer.py`` 366-371) and adds ``F.linear(x.float(), dW)`` (``layer.py`` 266-273). ``HadaWeight``
saves only its factors and the 0-d scale (a new fp32 scalar each step); ``F.linear`` saves the
fp32 input (for dW's gradient) and, when the input needs a gradient, ``dW`` itself: an
``out x in`` fp32 matrix per module per layer, kept until backward.

Temporaries: the two ``out x in`` products and their product in forward; in backward the
gradient of ``dW`` and, inside ``HadaWeight.backward`` (``layer.py`` 373-387), ``grad * scale``,
``w2a @ w2b``, ``temp`` and ``w1a @ w1b``: about four ``out x in`` fp32 matrices.

Known limitations: ``rank_dropout`` and ``module_dropout`` (defaults 0) are not modelled.
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


def trace_delta_weight(trace: Trace, x: TraceTensor, m: Matrix, extra_const: int = 0) -> None:
    """``F.linear(x.float(), dW)`` with a trained ``out x in`` fp32 ``dW`` built in forward: the fp32
    input is saved, and ``dW`` when the input needs a gradient (autograd's rule for ``mm``)."""
    trace.save(trace.cast(x, 4, m.in_features))
    if x.rg:
        trace.save_size(Size(const=4 * m.in_features * m.out_features))
    if extra_const:
        trace.save_size(Size(const=extra_const))


class LoHa(LinearMethod):
    name = "loha"
    title = "LoHa"
    strength = 10
    conv1d = False   # peft: "only adapters for Conv2d, Conv1d, Linear are supported"
    options = frozenset({"lora_rank", "lora_targets"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        r, i, o = setup.lora_rank, m.in_features, m.out_features
        return [("hada_w1_a", o * r, ADAPTER_DTYPE), ("hada_w1_b", r * i, ADAPTER_DTYPE),
                ("hada_w2_a", o * r, ADAPTER_DTYPE), ("hada_w2_b", r * i, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        trace_delta_weight(trace, x, m, extra_const=4)    # the 0-d scale HadaWeight saves

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.LoHaConfig(task_type="CAUSAL_LM", r=setup.lora_rank, alpha=setup.lora_rank,
                               target_modules=self.peft_targets(shape, setup))


LOHA = LoHa()
