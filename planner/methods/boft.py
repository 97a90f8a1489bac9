"""BOFT (Liu et al. 2024, butterfly orthogonal fine-tuning) as peft 0.21 builds it.

Blocks (``tuners/boft/layer.py`` 270-367): ``n = boft_n_butterfly_factor - 1`` extra butterfly
factors (peft forces the factor to 1 without its CUDA extension, ``layer.py`` 283-291, which the
planner follows off CUDA); ``D = in / boft_block_size`` blocks of ``H = boft_block_size`` (or
``H = in / boft_block_num``). Trainable: ``boft_R`` ``(n + 1) x D x H x H`` and ``boft_s``
``out x 1``, fp32: ``(n + 1) in H + out`` per module. Resident: the permutation buffer ``boft_P``
``(n + 1) x in x in`` fp32 per module (``register_buffer``, non-persistent, not cast).

Forward (``layer.py`` 594-650): every step the whole ``in x in`` rotation is built (a Cayley
transform of the blocks by ``linalg.solve``, ``block_diag``, two ``bmm`` with ``boft_P``), times an
``in x in`` identity in the input's dtype, and the input itself is multiplied by it (``x @ R``, in
x's dtype): saved are the identity and ``R`` (``in x in`` each, the activations' dtype; in a model
whose dtype is not fp32 also the cast copy of ``boft_P``), the input (shared with modules reading
it), the base output (``T x out``, for ``boft_s``'s gradient), the Cayley solve's LU factors,
pivots and result (``D x H x H``) and three ``out`` vectors.

Known limitations: ``boft_dropout`` (default 0) is not modelled; with the CUDA extension and a
butterfly factor above 1, ``FastBlockDiag`` may save differently (not measured).
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, TensorGroup
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


def butterfly(setup: TrainingSetup) -> int:
    """The butterfly factor peft uses: 1 without its CUDA extension (a CPU run), as given on CUDA."""
    return setup.boft_n_butterfly_factor if setup.device == "cuda" else 1


def blocks(m: Matrix, setup: TrainingSetup) -> tuple[int, int, int]:
    """(butterfly factors N, blocks D, block size H) as ``BOFTLayer.update_layer`` derives them.

    Raises:
        PlanError: the combinations peft refuses (``layer.py`` 300-345), in its words.
    """
    i = m.in_features
    bs, bn, n = setup.boft_block_size, setup.boft_block_num, butterfly(setup) - 1
    if bs and bn:
        raise PlanError("BOFT takes --boft-block-size or --boft-block-num, not both (set the size to 0)")
    if bn:
        if i % bn:
            raise PlanError(f"BOFT: in_features ({i}) of {m.name} must be divisible by boft_block_num ({bn})")
        bs = i // bn
    else:
        if i % bs:
            raise PlanError(f"BOFT: in_features ({i}) of {m.name} must be divisible by boft_block_size ({bs})")
        bn = i // bs
    if n and (i % (bs * 2 ** n) or bn % 2 or bs % 2):
        raise PlanError(f"BOFT: invalid combination of in_features ({i}), boft_n_butterfly_factor ({n + 1}) "
                        f"and boft_block_size ({bs})")
    return n + 1, bn, bs


class BOFT(LinearMethod):
    name = "boft"
    title = "BOFT"
    strength = 13
    conv1d = False   # peft: "only adapters for Conv2d, Conv1d, Linear are supported"
    options = frozenset({"lora_targets", "boft_block_size", "boft_block_num", "boft_n_butterfly_factor"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        n, d, h = blocks(m, setup)
        return [("boft_R", n * d * h * h, ADAPTER_DTYPE), ("boft_s", m.out_features, ADAPTER_DTYPE)]

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        out = super().added_tensors(shape, setup)
        for m in self.targets(shape, setup):
            n, _, _ = blocks(m, setup)
            out.append(TensorGroup(f"{m.name}.boft_P", shape.held_by(m), n * m.in_features ** 2, "fp32",
                                   False, True, in_file=False))
        return out

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        n, d, h = blocks(m, trace.setup)
        i, o, a = m.in_features, m.out_features, trace.a_of(x, m.in_features)
        trace.save(x)                                       # x @ R saves x for R's gradient
        trace.save(trace.tok(o, trace.a, True))             # result * boft_scale saves the base output
        square = a * i * i
        const = square + (square if x.rg else 0)           # the identity; R for x's gradient
        if a != 4:
            const += a * n * i * i                          # boft_P.to(x): a cast copy, saved by the bmm
        # linalg.solve's LU factors, pivots (int32) and result; boft_s * ones and its inputs
        const += n * d * h * h * (4 + 4) + n * d * h * 4 + 3 * o * a
        trace.save_size(Size(const=const))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.BOFTConfig(task_type="CAUSAL_LM", boft_block_size=setup.boft_block_size,
                               boft_block_num=setup.boft_block_num,
                               boft_n_butterfly_factor=setup.boft_n_butterfly_factor,
                               target_modules=self.peft_targets(shape, setup))


BOFT_METHOD = BOFT()
