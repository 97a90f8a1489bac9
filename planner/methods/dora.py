"""DoRA (Liu et al. 2024, weight-decomposed low-rank adaptation) as peft 0.21 builds it:
``LoraConfig(use_dora=True)``.

Tensors (peft ``tuners/lora/layer.py`` 263-264, ``tuners/lora/dora.py`` 130): LoRA's ``lora_A``
(rank x in) and ``lora_B`` (out x rank) and a magnitude vector ``lora_magnitude_vector`` of ``out``
per targeted linear, fp32 (``autocast_adapter_dtype``): ``r (in + out) + out`` per module.

Every training step recomputes the weight norm (``dora.py`` 31-55: the cache is cleared in training):
``lora_weight = B(A(eye(in))).T`` (``dora.py`` 97-98), ``W.to(x.dtype)`` (an fp32 copy in a bf16
model, ``dora.py`` 142) and ``||W + s BA||`` row by row (``dora.py`` 86-90), detached (``dora.py``
152). What it saves beyond LoRA's (``dora.py`` 155-165, ``variants.py`` 242-246): the base
layer's output ``T x out`` in the activations' dtype (``(m/||W'|| - 1) * base_result``), the LoRA
branch's ``T x out`` fp32 result (``m/||W'|| * lora_result``) and three ``out`` fp32 vectors (the
norm, ``m/||W'||`` and ``m/||W'|| - 1``). With dropout the base result is recomputed in fp32 from
the dropped input (``dora.py`` 162-163), so it is ``T x out`` fp32 and, in a bf16 model, the fp32
copy of ``W`` is saved too.

Forward temporaries per module (freed before the module returns): the ``in x in`` fp32 identity,
``lora_A``'s ``in x r`` output, the ``out x in`` fp32 ``lora_weight``, ``s * lora_weight`` and
``W + s * lora_weight`` (and the fp32 copy of ``W`` in a bf16 model).

Known limitations: DoRA on embeddings and convolutions is not modelled; peft's DoRA on a 4-bit base
dequantizes a deep copy once at build time (not modelled: ``base`` other than none is refused).
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, TensorGroup
from fitplan.methods.lora import LoRA
from fitplan.methods.targets import mlp_matrices

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


def setup_rank(trace: Trace) -> int:
    return trace.setup.lora_rank


class DoRA(LoRA):
    name = "dora"
    title = "DoRA"
    strength = 7
    options = frozenset({"lora_rank", "lora_targets", "lora_dropout"})

    def head_targeted(self, setup: TrainingSetup) -> bool:
        if super().head_targeted(setup):
            raise PlanError("DoRA on lm_head is not modelled (its magnitude and weight norm over the vocabulary); "
                            "drop lm_head from --lora-targets")
        return False

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        out = super().added_tensors(shape, setup)
        for m in self.targets(shape, setup):
            out.append(TensorGroup(f"{m.name}.lora_magnitude_vector", shape.held_by(m), m.out_features,
                                   ADAPTER_DTYPE, True, True, layered=True))
        return out

    def trace_linear(self, trace: Trace, x: TraceTensor, m: Matrix) -> bool:
        if id(m) not in trace.memo(self, lambda: {id(t) for t in self.targets(trace.shape, trace.setup)}):
            return False
        setup, i, o, r = trace.setup, m.in_features, m.out_features, setup_rank(trace)
        dropped = setup.lora_dropout > 0
        xc = trace.dropout(trace.cast(x, 4, i), i, setup.lora_dropout)   # peft casts the input first
        if setup.mixed:
            xc = trace.tok(i, trace.a, True)
        trace.save(xc)                                                   # lora_A's weight trains
        # base_result: the base layer's output, or with dropout its fp32 recomputation (dora.py 162-165)
        trace.save(trace.tok(o, 4 if dropped else trace.a, True))
        # the weight norm, every step (dora.py 86-98, 142): eye(in), A(eye), lora_weight, s * lora_weight,
        # W + s * lora_weight (and W's fp32 copy when W is not fp32); a biased layer's output is alive
        # beside base_result - bias (dora.py 158-160)
        copies = 3 if trace.w == 4 else 4
        trace.transient(Size(token=trace.a * o if m.bias else 0, const=4 * (i * i + i * r + copies * i * o)))
        trace.save(trace.tok(r, trace.a if setup.mixed else 4, True))   # lora_A(x), for lora_B's weight
        trace.save(trace.tok(o, trace.a if setup.mixed else 4, True))   # lora_result, for m / ||W'||
        trace.save_size(Size(const=3 * 4 * o))                           # ||W'||, m/||W'||, m/||W'|| - 1
        if dropped and trace.w != 4 and x.rg:
            trace.save_size(Size(const=4 * i * o))                       # F.linear(x, W.to(fp32)) saves W's copy
        return True

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        return super().mlp_first_gradients(shape, setup, layer_gradient_bytes) + sum(
            4 * m.out_features for m in mlp_matrices(self.targets(shape, setup)))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        return self.lora_config(shape, setup, use_dora=True)


DORA = DoRA()
