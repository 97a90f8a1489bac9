"""LoKr (Edalati et al. 2022, Kronecker adapters; LyCORIS) as peft 0.21 builds it.

Shapes (``tuners/lokr/layer.py`` 195-205, 65-110): ``(a, b) = factorization(out)`` and
``(c, d) = factorization(in)`` (``layer.py`` 440-489: the divisor pair closest to the square root,
the smaller first, or ``decompose_factor`` where it divides); ``lokr_w1`` is ``a x c`` (or
``w1_a`` ``a x r`` and ``w1_b`` ``r x c`` with ``decompose_both`` when ``r < max(a, c) / 2``),
``lokr_w2`` is ``b x d`` when ``r >= max(b, d) / 2``, else ``w2_a`` ``b x r`` and ``w2_b``
``r x d``; fp32. ``r`` is ``--lora-rank``.

Every forward builds ``dW = kron(w1, w2) * scale`` (``layer.py`` 497-503, 513-519) and adds
``F.linear(x.float(), dW)``: the fp32 input is saved, and ``dW`` (``out x in`` fp32) when the
input needs a gradient; ``kron`` saves its factors, so a factor made by a product (``w2_a @ w2_b``)
is saved too. Temporaries: the Kronecker product and its scaled copy in forward, the gradient of
``dW`` and the Kronecker backward's in backward.

Known limitations: ``rank_dropout`` and ``module_dropout`` (defaults 0) are not modelled.
"""

from __future__ import annotations

from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.loha import trace_delta_weight
from fitplan.methods.targets import LinearMethod

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft's ``tuners/lokr/layer.py`` ``factorization`` (from LyCORIS), line for line: two factors
    of ``dimension``, the first the smaller, as close to its square root (or to ``factor``) as they go."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


def lokr_shapes(m: Matrix, setup: TrainingSetup) -> tuple[tuple[int, int], tuple[int, int], bool, bool]:
    """((a, b), (c, d), use_w1, use_w2) as ``LoKrLayer.update_layer`` decides them (layer.py 195-205)."""
    r = setup.lora_rank
    c, d = factorization(m.in_features, setup.lokr_decompose_factor)
    a, b = factorization(m.out_features, setup.lokr_decompose_factor)
    use_w1 = not (setup.lokr_decompose_both and r < max(a, c) / 2)
    use_w2 = not (r < max(b, d) / 2)
    return (a, b), (c, d), use_w1, use_w2


class LoKr(LinearMethod):
    name = "lokr"
    title = "LoKr"
    strength = 11
    conv1d = False   # peft: "only adapters for Conv2d, Conv1d, Linear are supported"
    options = frozenset({"lora_rank", "lora_targets", "lokr_decompose_both", "lokr_decompose_factor"})

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        r = setup.lora_rank
        (a, b), (c, d), use_w1, use_w2 = lokr_shapes(m, setup)
        out = [("lokr_w1", a * c, ADAPTER_DTYPE)] if use_w1 else [
            ("lokr_w1_a", a * r, ADAPTER_DTYPE), ("lokr_w1_b", r * c, ADAPTER_DTYPE)]
        out += [("lokr_w2", b * d, ADAPTER_DTYPE)] if use_w2 else [
            ("lokr_w2_a", b * r, ADAPTER_DTYPE), ("lokr_w2_b", r * d, ADAPTER_DTYPE)]
        return out

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        (a, b), (c, d), use_w1, use_w2 = lokr_shapes(m, trace.setup)
        # kron(w1, w2) saves both factors: a factor built by a product is a new tensor
        factors = (0 if use_w1 else 4 * a * c) + (0 if use_w2 else 4 * b * d)
        trace_delta_weight(trace, x, m, extra_const=factors)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.LoKrConfig(task_type="CAUSAL_LM", r=setup.lora_rank, alpha=setup.lora_rank,
                               decompose_both=setup.lokr_decompose_both,
                               decompose_factor=setup.lokr_decompose_factor,
                               target_modules=self.peft_targets(shape, setup))


LOKR = LoKr()
