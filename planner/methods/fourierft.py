"""FourierFT (Gao et al. 2024, parameter-efficient fine-tuning with discrete Fourier transform) as
peft 0.21 builds it.

Tensors (``tuners/fourierft/layer.py`` 72-84): ``fourierft_spectrum``, ``n = --n-frequency``
(peft's default 1000) fp32 coefficients per module; their ``2 x n`` int64 positions live in a
plain dict on the CPU (no buffer, not in the adapter file), copied to the module's device each
forward.

Forward (``layer.py`` 94-101, 176-189): a dense ``out x in`` fp32 spectrum, scattered, ``ifft2``
(complex64, ``out x in x 8``), ``.real * scaling``: ``dW`` fp32; then ``result + F.linear(x.float(),
dW)``, which saves the fp32 input and, when the input needs a gradient, ``dW``; the scatter keeps a
copy of the positions (``16 n``) to the end of backward. Temporaries in forward: the
dense spectrum, the transform's complex copy of it and its complex output (five ``out x in`` fp32
sizes, measured on CPU kernels).

Known limitations: peft's default ``init_weights=False`` starts from a random spectrum (no memory
difference).
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


class FourierFT(LinearMethod):
    name = "fourierft"
    title = "FourierFT"
    strength = 18
    options = frozenset({"lora_targets", "n_frequency"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return [("fourierft_spectrum", setup.n_frequency, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        w4 = 4 * m.in_features * m.out_features
        # the dense spectrum, ifft2's complex copy of it and its complex output (measured on CPU kernels);
        # a biased layer's output is alive beside them
        trace.transient(Size(token=trace.a * m.out_features if m.bias else 0, const=5 * w4))
        trace_delta_weight(trace, x, m)

    def encoder_form(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """The scatter keeps a copy of each module's ``2 x n`` int64 positions from the forward to the end of
        backward, with checkpointing too (measured on CPU, peft 0.21 / torch 2.13)."""
        return Size(const=sum(shape.held_by(m) for m in self.targets(shape, setup)) * 16 * setup.n_frequency)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.FourierFTConfig(task_type="CAUSAL_LM", n_frequency=setup.n_frequency,
                                    target_modules=self.peft_targets(shape, setup))


FOURIERFT = FourierFT()
