"""LoRA (Hu et al. 2021) as peft 0.21 builds it.

``lora_A`` (rank x in) and ``lora_B`` (out x rank) per targeted ``nn.Linear``, kept in fp32
(peft's ``autocast_adapter_dtype``) or, with ``--adapter-dtype``, in the model's dtype (torchtune,
LitGPT, ``get_peft_model(autocast_adapter_dtype=False)``: the input's cast is then the input itself,
one tensor that every adapter on it saves); ``all-linear`` targets every linear of the decoder layers,
not the output head. In the forward pass peft casts the layer's input to the adapter dtype, applies
dropout, and runs ``B(A(x))``: ``lora_A`` saves its (fp32) input, ``lora_B`` the rank-wide
intermediate (``lora_A``'s output), dropout its mask.

``--modules-to-save lm_head,embed_tokens``: peft's ``ModulesToSaveWrapper`` deep-copies the module
(``utils/other.py`` 653) in the base's dtype (``cast_adapter_dtype`` only touches tuner layers,
``tuners/tuners_utils.py`` 2729-2731) and trains the copy: its weight, gradient and optimizer state,
the head's input saved for its weight's gradient and that V x h gradient at the head's backward; a
trained embedding copy makes layer 0's input need a gradient.

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
    ROUTER,
    Matrix,
    ModelShape,
)
from fitplan.dtypes import nbytes
from fitplan.errors import PlanError
from fitplan.families.moe import MLA_KVB
from fitplan.memory.forms import Size
from fitplan.methods import experts
from fitplan.methods.base import Method, StorageOf, TensorGroup
from fitplan.methods.bases import note as base_note
from fitplan.methods.bases import quantization_config as bases_config
from fitplan.methods.bases import quantized_base
from fitplan.methods.targets import peft_names

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup

_ROLE_ALIASES = {
    "q": (ATTN_Q, ATTN_QKV),
    "k": (ATTN_K, ATTN_QKV, MLA_KVB),    # latent attention's kv_b_proj makes keys and values
    "v": (ATTN_V, ATTN_QKV, MLA_KVB),
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
        return _runnable(shape, tuple(linears))
    targets = tuple(t for t in targets if t != HEAD)    # the output head: LoRA's own (LoRA.head_targeted)
    chosen = []
    for target in targets:
        # peft matches a module name or its dotted suffix
        hits = [m for m in linears if m.name == target or m.name.endswith("." + target)]
        if not hits and target in _ROLE_ALIASES:
            roles = _ROLE_ALIASES[target]
            hits = [m for m in linears if m.role in roles]
        if not hits and experts.accepts(shape, target):
            continue        # a v4 expert or router name peft converts (fitplan.methods.experts)
        if not hits:
            valid = sorted({*(m.name for m in linears), "all-linear", "q", "k", "v", "o", "gate", "up", "down", HEAD})
            raise PlanError(
                f"LoRA target {target!r} matches no linear module of {shape.name} ({shape.model_type}). "
                f"Valid: {', '.join(valid)}"
            )
        chosen.extend(hits)
    # keep layer order, each matrix once (c_proj appears twice in gpt2 under one name: both match)
    return _runnable(shape, tuple(m for m in shape.matrices if any(m is c for c in chosen)))


def _runnable(shape: ModelShape, chosen: tuple[Matrix, ...]) -> tuple[Matrix, ...]:
    """``chosen``, or the refusal where peft's wrapper cannot run the module.

    Raises:
        PlanError: a router that subclasses ``nn.Linear`` but returns a tuple (Llama 4's): peft's
            ``lora.Linear`` fails on it ("'tuple' object has no attribute 'dtype'", measured with peft
            0.21.2 and transformers 5.24).
    """
    routers = [m.name for m in chosen if m.role == ROUTER]
    if routers:
        others = sorted({m.name.rsplit(".", 1)[-1] for m in chosen if m.role != ROUTER})
        raise PlanError(f"LoRA on {shape.model_type}'s router ({', '.join(routers)}) fails in peft 0.21: the "
                        "router subclasses nn.Linear but returns a tuple; name the other modules instead, "
                        f"e.g. --lora-targets {','.join(others)}")
    return chosen


HEAD = "lm_head"   # a target outside the decoder layers: LoRA on the output head (not in all-linear)


def adapter_bytes(setup: TrainingSetup) -> int:
    """Bytes per element of the LoRA weights (``--adapter-dtype``: peft's fp32, or bf16 / fp16)."""
    return nbytes(1, setup.adapter_storage)


class LoRA(Method):
    name = "lora"
    title = "LoRA"
    strength = 5
    options = frozenset({"lora_rank", "lora_targets", "lora_dropout", "base", "adapter_dtype", "lora_alpha",
                         "modules_to_save"})

    # ---- a quantized base (--base; fitplan.methods.bases): nf4 or fp4 is QLoRA's
    def base_storage(self, setup: TrainingSetup) -> StorageOf:
        qb = quantized_base(setup)
        if qb is None:
            return super().base_storage(setup)
        from fitplan.methods.qlora import quantized

        other = "fp32" if qb.upcast and setup.kbit_upcast else setup.weight_dtype

        def storage(kind: str, role: str, is_linear: bool) -> str:
            if kind == "weight" and quantized(role, is_linear, setup.transformers_major):
                return qb.storage
            return other   # prepare_model_for_kbit_training's upcast (utils/other.py 197-209)

        return storage

    def input_grad(self, setup: TrainingSetup) -> bool:
        return "embed_tokens" in setup.modules_to_save or super().input_grad(setup)

    def embedding_trains(self, setup: TrainingSetup) -> bool:
        return "embed_tokens" in setup.modules_to_save or super().embedding_trains(setup)

    def activation_bytes(self, setup: TrainingSetup) -> int:
        qb = quantized_base(setup)
        if qb is not None and qb.upcast and setup.kbit_upcast:
            return 4       # the fp32 embedding's output flows through every layer
        return super().activation_bytes(setup)

    def default_checkpointing(self, setup: TrainingSetup) -> bool:
        qb = quantized_base(setup)
        return qb.checkpointing if qb is not None else super().default_checkpointing(setup)

    def layer_backward_temporaries(self, shape: ModelShape, setup: TrainingSetup, gated: Size) -> tuple[Size, ...]:
        qb = quantized_base(setup)
        if qb is None:
            alternatives = super().layer_backward_temporaries(shape, setup, gated)
        else:
            from fitplan.methods.qlora import dequant_temporaries

            compute = setup.activation_bytes if qb.dequant_in_input_dtype else (4 if setup.compute_dtype == "fp32" else 2)
            alternatives = dequant_temporaries(shape, setup, gated, compute)
        wrapped = self.wrapped_parameters(shape, setup)
        folded = [self._effective_weight_bytes(m, setup) for m in shape.matrices
                  if id(m) in wrapped and m.role != ROUTER]
        if folded:
            # a wrapped expert tensor's backward makes the folded weight's full gradient first
            alternatives = (*alternatives, gated + Size(const=max(folded)))
        return alternatives

    def mlp_tail(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        qb = quantized_base(setup)
        if qb is not None and qb.saves_input:
            down = shape.matrix("down")
            # the down projection's kept input, freed by its backward before the MLP's backward peaks
            return Size(token=setup.activation_bytes * down.in_features) if down else Size()
        return super().mlp_tail(shape, setup)

    def notes(self, shape: ModelShape, setup: TrainingSetup) -> tuple[str, ...]:
        qb = quantized_base(setup)
        return () if qb is None else (base_note(qb),)

    def quantization_config(self, setup: TrainingSetup) -> Any:
        qb = quantized_base(setup)
        return None if qb is None else bases_config(qb, setup)

    def targets(self, shape: ModelShape, setup: TrainingSetup) -> tuple[Matrix, ...]:
        """The ``nn.Linear`` matrices the method wraps (fused expert parameters: ``wrapped_parameters``)."""
        return self._resolved(shape, setup)[0]

    def wrapped_parameters(self, shape: ModelShape, setup: TrainingSetup) -> dict[int, int]:
        """Fused expert and router parameters peft wraps (``fitplan.methods.experts``): id -> rank multiplier."""
        return self._resolved(shape, setup)[1]

    def _resolved(self, shape: ModelShape, setup: TrainingSetup) -> tuple[tuple[Matrix, ...], dict[int, int], tuple[str, ...]]:
        modules = target_matrices(shape, setup.lora_targets)
        return experts.convert(shape, modules, set(setup.lora_targets), "all-linear" in setup.lora_targets)

    def head_targeted(self, setup: TrainingSetup) -> bool:
        """LoRA on ``lm_head`` (peft's ``lora.Linear`` on the output head, ``tuners/lora/layer.py`` 1100-1108)."""
        return HEAD in setup.lora_targets and "all-linear" not in setup.lora_targets

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        r = setup.lora_rank
        storage = setup.adapter_storage     # peft's fp32, or the model's dtype
        out = self.saved_modules(shape, setup) + self.head_tensors(shape, setup)
        for m in self.targets(shape, setup):
            n = shape.held_by(m)
            out.append(TensorGroup(f"{m.name}.lora_A", n, r * m.in_features, storage, True, True, r + m.in_features,
                                   layered=True))
            out.append(TensorGroup(f"{m.name}.lora_B", n, m.out_features * r, storage, True, True, m.out_features + r,
                                   layered=True))
        wrapped = self.wrapped_parameters(shape, setup)
        for m in shape.matrices:
            if id(m) in wrapped:
                # ParamWrapper: lora_A [E x rank, in], lora_B [out, E x rank] (E = 1 for a router)
                rank = r * wrapped[id(m)] * m.copies
                n = shape.held_by(m)
                out.append(TensorGroup(f"{m.name}.lora_A", n, rank * m.in_features, storage, True, True,
                                       rank + m.in_features, layered=True))
                out.append(TensorGroup(f"{m.name}.lora_B", n, m.out_features * rank, storage, True, True,
                                       m.out_features + rank, layered=True))
        return out

    def _effective_weight_bytes(self, m: Matrix, setup: TrainingSetup) -> int:
        """The folded weight a ParamWrapper makes every forward, in the parameter's dtype."""
        return nbytes(m.copies * m.in_features * m.out_features, self.base_storage(setup)("weight", m.role, m.is_linear))

    def trace_experts(self, trace: Trace, gate_up: Matrix, down: Matrix, x_rg: bool) -> tuple[bool, bool]:
        wrapped = trace.memo(experts, lambda: self.wrapped_parameters(trace.shape, trace.setup))
        flags = (id(gate_up) in wrapped, id(down) in wrapped)
        # each grouped product saves its folded weight where its input needs a gradient
        input_rg = (x_rg, x_rg or flags[0] or trace.trainable_base)
        for m, on, needs in zip((gate_up, down), flags, input_rg):
            if on:
                # the fold (baddbmm in the weight's dtype) saves its two factors' casts
                rank = trace.setup.lora_rank * wrapped[id(m)] * m.copies
                saved = rank * (m.in_features + m.out_features) * trace.w
                if needs:
                    saved += self._effective_weight_bytes(m, trace.setup)
                trace.save_size(Size(const=saved))
        return flags

    def saved_modules(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        """The trained copies of ``--modules-to-save`` (in the base's storage of that module)."""
        h, V = shape.hidden_size, shape.vocab_size
        storage = self.base_storage(setup)
        out = []
        if "embed_tokens" in setup.modules_to_save:
            out.append(TensorGroup("embed_tokens.modules_to_save.weight", 1, shape.embedding_params,
                                   storage("embedding", "", False), True, True, V + h))
        if "lm_head" in setup.modules_to_save:
            out.append(TensorGroup("lm_head.modules_to_save.weight", 1, V * h, storage("head", "", False), True, True,
                                   V + h))
        return out

    def head_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        """``lora_A`` (r x h) and ``lora_B`` (V x r) on the head; ``save_embedding_layers="auto"`` then also
        writes the head's base weight into the adapter file (``utils/save_and_load.py`` 277-344): counted
        by ``extra_file_bytes``."""
        if not self.head_targeted(setup):
            return []
        r, h, V = setup.lora_rank, shape.hidden_size, shape.vocab_size
        storage = setup.adapter_storage
        return [TensorGroup("lm_head.lora_A", 1, r * h, storage, True, True, r + h),
                TensorGroup("lm_head.lora_B", 1, V * r, storage, True, True, V + r)]

    def trace_head(self, trace: Trace, y: TraceTensor) -> None:
        if "lm_head" in trace.setup.modules_to_save:
            trace.save(y)                                                # the trained copy's weight saves its input
        if not self.head_targeted(trace.setup):
            return
        h = trace.shape.hidden_size
        ab = adapter_bytes(trace.setup)
        trace.save(trace.cast(y, ab, h))                                 # lora_A saves its (adapter-dtype) input
        trace.save(trace.tok(trace.setup.lora_rank, ab, True))           # lora_B saves lora_A's output

    def head_backward_temporaries(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """A trained head copy's backward: its V x h weight gradient and its input's gradient."""
        if "lm_head" not in setup.modules_to_save:
            return super().head_backward_temporaries(shape, setup)
        a = 4 if setup.mixed else setup.activation_bytes
        w = 4 if self.base_storage(setup)("head", "", False) == "fp32" else 2
        return Size(token=a * shape.hidden_size, const=shape.vocab_size * shape.hidden_size * w)

    def extra_file_bytes(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """With ``lm_head`` targeted, ``save_embedding_layers="auto"`` writes the head's base weight too."""
        return nbytes(shape.embedding_params, self.base_storage(setup)("head", "", False)) if self.head_targeted(setup) else 0

    def trace_linear(self, trace: Trace, x: TraceTensor, m: Matrix) -> bool:
        qb = quantized_base(trace.setup)
        if qb is not None and qb.saves_input and x.rg and m.is_linear:
            from fitplan.methods.qlora import quantized

            if quantized(m.role, m.is_linear, trace.setup.transformers_major):
                trace.keep(x)      # MatMul8bitLt keeps its input on ctx (bitsandbytes autograd/_functions.py 186-188)
        wrapped = trace.memo(experts, lambda: self.wrapped_parameters(trace.shape, trace.setup))
        if id(m) in wrapped:
            # a ParamWrapper'd router: its folded weight needs a gradient, so the product saves the
            # input, and the folded weight for the input's gradient
            trace.save(x)
            trace.save_size(Size(const=self._effective_weight_bytes(m, trace.setup)))
            return True
        if id(m) not in trace.memo(self, lambda: {id(t) for t in self.targets(trace.shape, trace.setup)}):
            return False
        setup = trace.setup
        ab = adapter_bytes(setup)
        xc = trace.cast(x, ab, m.in_features)                 # peft casts the input to the adapter dtype
        xc = trace.dropout(xc, m.in_features, setup.lora_dropout)
        if setup.mixed and ab != trace.a:
            xc = trace.tok(m.in_features, trace.a, True)      # autocast runs lora_A in the compute dtype
        trace.save(xc)                                        # lora_A's weight trains
        u = trace.tok(setup.lora_rank, trace.a if setup.mixed else ab, True)
        trace.save(u)                                         # lora_B's weight trains
        return True

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        # the MLP adapters' (fp32) gradients are made before the MLP's backward peaks
        return sum(
            adapter_bytes(setup) * setup.lora_rank * (m.in_features + m.out_features)
            for m in self.targets(shape, setup) if m.role in _MLP_ROLES
        )

    def peft_targets(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        if "all-linear" in setup.lora_targets:
            return "all-linear"
        kept, _, converted = self._resolved(shape, setup)
        return peft_names(shape, kept) + list(converted) + ([HEAD] if self.head_targeted(setup) else [])

    def lora_config(self, shape: ModelShape, setup: TrainingSetup, **extra: Any) -> Any:
        import peft

        if setup.modules_to_save:
            extra.setdefault("modules_to_save", list(setup.modules_to_save))
        return peft.LoraConfig(
            task_type="CAUSAL_LM", r=setup.lora_rank, lora_alpha=setup.lora_alpha or 2 * setup.lora_rank,
            lora_dropout=setup.lora_dropout, target_modules=self.peft_targets(shape, setup), **extra,
        )

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        return self.lora_config(shape, setup)

    def build(self, model: Any, shape: ModelShape, setup: TrainingSetup) -> Any:
        qb = quantized_base(setup)
        if qb is None:
            return super().build(model, shape, setup)
        import peft

        if any(p.device.type == "meta" for p in model.parameters()):
            raise PlanError(f"--base {qb.name} cannot run under fake tensors (the base is quantized from real "
                            "weights); use --mode cpu or cuda")
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=setup.checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return peft.get_peft_model(model, self.peft_config(shape, setup))


LORA = LoRA()
