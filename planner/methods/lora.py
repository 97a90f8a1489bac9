"""LoRA (Hu et al. 2021) as peft 0.21 builds it.

``lora_A`` (rank x in) and ``lora_B`` (out x rank) per targeted ``nn.Linear``, kept in fp32
(peft's ``autocast_adapter_dtype``); ``all-linear`` targets every linear of the decoder layers,
not the output head. In the forward pass peft casts the layer's input to the adapter dtype, applies
dropout, and runs ``B(A(x))``: ``lora_A`` saves its (fp32) input, ``lora_B`` the rank-wide
intermediate (``lora_A``'s output), dropout its mask.

Known limitations: one adapter per model; LoRA on embeddings or the head, DoRA and trainable norms
beside the adapters are not modelled.
"""

from __future__ import annotations

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_QKV,
    ATTN_V,
    Matrix,
    ModelShape,
)
from fitplan.errors import PlanError
from fitplan.methods.base import ADAPTER_DTYPE, Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup

_ROLE_ALIASES = {
    "q": (ATTN_Q, ATTN_QKV),
    "k": (ATTN_K, ATTN_QKV),
    "v": (ATTN_V, ATTN_QKV),
    "o": (ATTN_O,),
    "qkv": (ATTN_QKV,),
    "gate": ("gate", "gate_up"),
    "up": ("up", "gate_up"),
    "down": ("down",),
}
_MLP_ROLES = ("gate", "up", "gate_up", "down")


def target_matrices(shape: ModelShape, targets: tuple[str, ...]) -> tuple[Matrix, ...]:
    """The decoder-layer matrices that LoRA wraps, in layer order.

    A target is ``all-linear``, a module name as transformers names it (``q_proj``, ``c_attn``,
    ``query_key_value``), or a role shared across families (``q``, ``k``, ``v``, ``o``, ``gate``,
    ``up``, ``down``): ``q,v`` lands on a fused ``qkv_proj``/``c_attn`` where a model has one.

    Raises:
        PlanError: a target that matches no ``nn.Linear`` of the model, listing the valid names.
    """
    linears = [m for m in shape.matrices if m.is_linear]
    if any(t == "all-linear" for t in targets):
        return tuple(linears)
    chosen = []
    for target in targets:
        hits = [m for m in linears if m.name == target]
        if not hits and target in _ROLE_ALIASES:
            roles = _ROLE_ALIASES[target]
            hits = [m for m in linears if m.role in roles]
        if not hits:
            valid = sorted({*(m.name for m in linears), "all-linear", "q", "k", "v", "o", "gate", "up", "down"})
            raise PlanError(
                f"LoRA target {target!r} matches no linear module of {shape.name} ({shape.model_type}). "
                f"Valid: {', '.join(valid)}"
            )
        chosen.extend(hits)
    # keep layer order, each matrix once (c_proj appears twice in gpt2 under one name: both match)
    return tuple(m for m in shape.matrices if any(m is c for c in chosen))


class LoRA(Method):
    name = "lora"
    title = "LoRA"
    strength = 5
    options = frozenset({"lora_rank", "lora_targets", "lora_dropout"})

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        r, L = setup.lora_rank, shape.num_layers
        out = []
        for m in target_matrices(shape, setup.lora_targets):
            out.append(TensorGroup(f"{m.name}.lora_A", L, r * m.in_features, ADAPTER_DTYPE, True, True, r + m.in_features))
            out.append(TensorGroup(f"{m.name}.lora_B", L, m.out_features * r, ADAPTER_DTYPE, True, True, m.out_features + r))
        return out

    def trace_linear(self, trace: Trace, x: TraceTensor, m: Matrix) -> bool:
        if id(m) not in trace.memo(self, lambda: {id(t) for t in target_matrices(trace.shape, trace.setup.lora_targets)}):
            return False
        setup = trace.setup
        xc = trace.cast(x, 4, m.in_features)                  # peft casts the input to the adapter dtype
        xc = trace.dropout(xc, m.in_features, setup.lora_dropout)
        if setup.mixed:
            xc = trace.tok(m.in_features, trace.a, True)      # autocast runs lora_A in the compute dtype
        trace.save(xc)                                        # lora_A's weight trains
        u = trace.tok(setup.lora_rank, trace.a if setup.mixed else 4, True)
        trace.save(u)                                         # lora_B's weight trains
        return True

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        # the MLP adapters' (fp32) gradients are made before the MLP's backward peaks
        return sum(
            4 * setup.lora_rank * (m.in_features + m.out_features)
            for m in target_matrices(shape, setup.lora_targets) if m.role in _MLP_ROLES
        )

    def peft_targets(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        if "all-linear" in setup.lora_targets:
            return "all-linear"
        return sorted({m.name for m in target_matrices(shape, setup.lora_targets)})

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.LoraConfig(
            task_type="CAUSAL_LM", r=setup.lora_rank, lora_alpha=2 * setup.lora_rank,
            lora_dropout=setup.lora_dropout, target_modules=self.peft_targets(shape, setup),
        )


LORA = LoRA()
