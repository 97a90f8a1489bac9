"""SHiRA (Bhardwaj et al. 2024, sparse high-rank adapters) as peft 0.21 builds it.

Tensors (``tuners/shira/layer.py`` 96-117): ``shira_weight``, ``r (in + out)`` fp32 values per
module (``r`` = ``--lora-rank``; peft's default 32), at random positions: ``2 x nnz`` int32 indices
in a plain dict (not a buffer), saved in the adapter file beside the values (``model.py`` 160-176:
12 bytes per value).

Forward (``layer.py`` 228-258): ``W' = W.clone(); W' += sparse_coo(indices, values)`` and
``F.linear(x, W', b)`` (the base forward is not called; no input cast): the input in its own dtype
(shared with modules reading it), ``W'`` (``out x in``, the weight's dtype) when the input needs a
gradient, the dense fp32 ``out x in`` the sparse add's backward keeps, and the values.

Known limitations: the indices in memory (8 bytes per value on the module's device; the file's are
counted) are not, as the validator's tracker cannot see a plain dict's tensors; peft cannot build SHiRA on the meta device (``torch.nonzero`` in its mask), so its
count is checked on small models only.
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


class SHiRA(LinearMethod):
    name = "shira"
    title = "SHiRA"
    strength = 23
    options = frozenset({"lora_rank", "lora_targets"})
    conv1d = False

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("shira_weight", setup.lora_rank * (m.in_features + m.out_features), ADAPTER_DTYPE)]

    def extra_file_bytes(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """The two int32 index rows of every module's values (``model.py`` 160-176)."""
        return sum(shape.held_by(m) * 8 * setup.lora_rank * (m.in_features + m.out_features)
                   for m in self.targets(shape, setup))

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        i, o = m.in_features, m.out_features
        nnz = trace.setup.lora_rank * (i + o)
        trace.save(x)
        const = 4 * i * o + 4 * nnz                            # the sparse add's dense fp32 and the values
        if x.rg:
            const += trace.w * i * o                           # W', for the input's gradient
        trace.save_size(Size(const=const))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.ShiraConfig(task_type="CAUSAL_LM", r=setup.lora_rank, target_modules=self.peft_targets(shape, setup))


SHIRA = SHiRA()
