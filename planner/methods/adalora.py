"""AdaLoRA (Zhang et al. 2023, adaptive budget allocation) as peft 0.21 builds it.

Tensors (``tuners/adalora/layer.py`` 69-86): ``lora_A`` (init_r x in), ``lora_E`` (init_r x 1) and
``lora_B`` (out x init_r), fp32: ``init_r (in + out + 1)`` per module. Ranks are pruned by masking
``lora_E`` in place (``RankAllocator``, ``layer.py`` 350-431), never by shrinking, so memory stays
at ``init_r`` for the whole run. The planner counts the adapter file at ``init_r``: once the schedule
has set a ``rank_pattern``, ``save_pretrained`` keeps only its rows (``model.py`` 289-316), about
``target_r`` per module on average (an upper bound, said here). ``ranknum`` (1 element per module) is created
frozen, but ``_move_adapter_to_device_of_base_layer`` re-registers it through ``ParameterDict``,
which makes it a trainable ``Parameter`` whenever it is moved or cast (``tuners_utils.py``
2168-2212): on a CUDA device, or a base whose weights are not fp32.

Forward (``layer.py`` 195): ``result += (x.float() @ (A * E).T @ B.T) * scaling / (ranknum + 1e-5)``:
the fp32 input (for ``A * E``'s gradient), ``(A * E).T`` (``init_r x in`` fp32, for the input's
gradient when it needs one), the ``T x init_r`` fp32 product; when ``ranknum`` trains, the division
also saves its ``T x out`` fp32 numerator. ``AdaLoraModel.forward`` adds the orthogonal
regulariser (``model.py`` 229-257): per ``lora_A`` / ``lora_B`` an ``init_r x init_r`` ``P P^T - I``
saved by the Frobenius norm (a few hundred bytes per matrix: not counted), and, because it is the
loss's last term, its backward runs first and makes a gradient of every ``lora_A`` and ``lora_B``
before the layers' (``early_gradients``).

The optimizer updates ``RankAllocator``'s sensitivity scores only when the training loop calls
``update_and_allocate``: then three more fp32 tensors per adapter parameter (``ipt``,
``exp_avg_ipt``, ``exp_avg_unc``, ``layer.py`` 414-416) live for the run. The validator's plain
loop does not call it, and the planner counts them as optimizer state only through that call (not
modelled: known limitation).
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


def ranknum_trains(setup: TrainingSetup) -> bool:
    """Whether ``ranknum`` has become a trainable Parameter (moved to a device, or cast)."""
    return setup.device == "cuda" or setup.weight_dtype != "fp32"


class AdaLoRA(LinearMethod):
    name = "adalora"
    title = "AdaLoRA"
    strength = 14
    options = frozenset({"lora_targets", "lora_dropout", "init_r", "target_r"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        r = setup.init_r
        out = [("lora_A", r * m.in_features, ADAPTER_DTYPE), ("lora_E", r, ADAPTER_DTYPE),
               ("lora_B", m.out_features * r, ADAPTER_DTYPE)]
        if ranknum_trains(setup):
            out.append(("ranknum", 1, ADAPTER_DTYPE))
        return out

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        out = []
        for m in self.targets(shape, setup):
            for label, numel, storage in self.module_tensors(m, setup):
                # the file keeps about target_r of init_r rows (model.py 289-316); ranknum is not saved
                out.append(TensorGroup(f"{m.name}.{label}", shape.held_by(m), numel, storage, True, True, layered=True,
                                       in_file=label != "ranknum"))
        return out

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        setup = trace.setup
        r = setup.init_r
        xc = trace.cast(x, 4, m.in_features)
        xc = trace.dropout(xc, m.in_features, setup.lora_dropout)
        trace.save(xc)                                       # for (A * E)'s gradient
        if x.rg:
            trace.save_size(Size(const=4 * r * m.in_features))   # (A * E).T for the input's
        trace.save(trace.tok(r, 4, True))                    # x (A E)^T, for B's gradient
        trace.save_size(Size(const=4))                       # ranknum + 1e-5
        if ranknum_trains(setup):
            trace.save(trace.tok(m.out_features, 4, True))   # the numerator, for ranknum's gradient

    def early_gradients(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """The regulariser is the loss's last term, so its backward runs first and makes a gradient of
        every ``lora_A`` and ``lora_B`` before any layer's backward (the validator's tracker sees them as
        temporaries: the layers' contributions are then accumulated out of place)."""
        r = setup.init_r
        return sum(shape.held_by(m) * 4 * r * (m.in_features + m.out_features) for m in self.targets(shape, setup))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        # total_step only schedules the pruning; it does not change memory
        return peft.AdaLoraConfig(task_type="CAUSAL_LM", init_r=setup.init_r, target_r=setup.target_r,
                                  lora_dropout=setup.lora_dropout, total_step=1000,
                                  target_modules=self.peft_targets(shape, setup))


ADALORA = AdaLoRA()
