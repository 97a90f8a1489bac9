"""WaveFT (Bilican et al. 2025, wavelet fine-tuning) as peft 0.21 builds it.

Tensors (``tuners/waveft/layer.py`` 96-114): ``waveft_spectrum``, ``n = --waveft-n-frequency``
(peft's default 2592) fp32 coefficients per module; their ``2 x n`` int64 positions in a plain dict
(not in the adapter file).

Forward (``layer.py`` 124-180, 269-289): the coefficients are scattered into a padded dense
``out x in`` fp32 matrix (the positions cloned and offset, a validity mask of ``n`` bools), split
into four sub-bands and inverse-transformed (``waverec2d``, db1 by default), ``* scaling``: ``dW``
fp32; then ``result + F.linear(x.float(), dW)``. Saved: the fp32 input; ``dW`` when the input needs
a gradient; the transform's stacked sub-bands (``out x in`` fp32 for db1), its filters (64 bytes),
the offset positions (``16 n``) and the mask (``n``).

Known limitations: wavelet families other than db1 pad differently (not modelled).
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.loha import trace_delta_weight
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class WaveFT(LinearMethod):
    name = "waveft"
    title = "WaveFT"
    strength = 26
    options = frozenset({"lora_targets", "waveft_n_frequency"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("waveft_spectrum", setup.waveft_n_frequency, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        n, w4 = trace.setup.waveft_n_frequency, 4 * m.in_features * m.out_features
        trace.transient(Size(const=2 * w4))                 # the dense spectrum and the reconstruction
        trace_delta_weight(trace, x, m, extra_const=w4 + 64 + 16 * n + n)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.WaveFTConfig(task_type="CAUSAL_LM", n_frequency=setup.waveft_n_frequency,
                                 target_modules=self.peft_targets(shape, setup))


WAVEFT = WaveFT()
