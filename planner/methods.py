"""Fine-tuning methods: one registry, one small protocol.

Each method says which tensors the trained model holds (the base model's, in which storage type,
and the ones it adds), which of them train, and what it adds to the forward pass. Counts follow
peft 0.21 and bitsandbytes 0.50 as they really build the model (tests compare with peft's own
trainable counts on small configs):

- ``lora``: ``lora_A`` (rank x in) and ``lora_B`` (out x rank) per targeted ``nn.Linear``, kept in
  fp32 (peft's ``autocast_adapter_dtype``); ``all-linear`` targets every linear of the decoder
  layers, not the output head.
- ``qlora``: LoRA on a base whose decoder ``nn.Linear`` weights are 4-bit (not embeddings, not
  the head, not MoE routers, not the fused 3-D expert tensors of transformers 5); every other
  parameter is upcast to fp32 by peft's ``prepare_model_for_kbit_training``.
- ``adapter``: Houlsby bottleneck adapters after attention and after the MLP of every layer,
  ``down`` (hidden -> size) and ``up`` (size -> hidden) with biases, fp32.
- ``prefix``: ``num_virtual_tokens x layers x 2 x kv_width`` (GQA-aware); with the
  reparameterisation an embedding of kv_width plus a two-layer MLP (kv_width -> kv_width ->
  layers x 2 x kv_width).
- ``prompt``: ``num_virtual_tokens x hidden``.
- ``ptuning``: a ``num_virtual_tokens x hidden`` embedding and peft's MLP encoder of three
  hidden x hidden linears with biases.

Known limitations: one adapter per model; LoRA on embeddings or the head, DoRA and rsLoRA
variants, and trainable norms alongside adapters are not modelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.architecture import ATTN_K, ATTN_O, ATTN_Q, ATTN_QKV, ATTN_V, EXPERT_DOWN, EXPERT_GATE_UP, ROUTER, ModelShape
from planner.dtypes import four_bit_bytes, nbytes
from planner.errors import PlanError
from planner.setup import TrainingSetup

ADAPTER_DTYPE = "fp32"  # peft keeps adapter weights in fp32 (autocast_adapter_dtype=True)


@dataclass(frozen=True)
class TensorGroup:
    """``count`` tensors of ``numel`` elements each, stored alike."""

    label: str
    count: int
    numel: int
    storage: str          # a dtype name: fp32, bf16, fp16, nf4, fp4
    trainable: bool
    added: bool = False   # added by the method (what an adapter file holds)
    factored: int = 0     # elements of Adafactor's row + column statistics; 0 for 1-D tensors

    @property
    def elements(self) -> int:
        return self.count * self.numel

    def data_bytes(self) -> int:
        """Bytes of the values themselves (packed 4-bit for quantized weights)."""
        return self.count * nbytes(self.numel, self.storage)

    def quant_state_bytes(self, double_quant: bool) -> int:
        """Bytes of bitsandbytes' quantization state (absmax, nested absmax, code books)."""
        if self.storage not in ("nf4", "fp4"):
            return 0
        return self.count * (four_bit_bytes(self.numel, double_quant=double_quant) - nbytes(self.numel, self.storage))


def base_groups(shape: ModelShape, storage_of: Callable[[str, str, bool], str], trainable: bool) -> list[TensorGroup]:
    """The base model's parameter tensors, grouped by shape.

    ``storage_of(kind, role, is_linear)`` picks each group's storage type; kind is one of
    ``embedding``, ``position``, ``weight``, ``bias``, ``norm``, ``head``.
    """
    L = shape.num_layers
    h, V = shape.hidden_size, shape.vocab_size
    groups = [
        TensorGroup("embed_tokens", 1, shape.embedding_params, storage_of("embedding", "", False), trainable, factored=V + h)
    ]
    if shape.position_embeddings:
        groups.append(
            TensorGroup(
                "position_embeddings", 1, shape.position_params, storage_of("position", "", False), trainable,
                factored=shape.position_embeddings + h,
            )
        )
    for m in shape.matrices:
        groups.append(
            TensorGroup(
                f"{m.name}.weight", L, m.weight_numel, storage_of("weight", m.role, m.is_linear), trainable,
                factored=m.copies * (m.in_features + m.out_features),
            )
        )
        if m.bias:
            groups.append(TensorGroup(f"{m.name}.bias", L, m.bias_numel, storage_of("bias", m.role, m.is_linear), trainable))
    for n in shape.norms:
        storage = storage_of("norm", "", False)
        groups.append(TensorGroup(f"{n.name}.weight", L * n.copies, n.size, storage, trainable))
        if n.bias:
            groups.append(TensorGroup(f"{n.name}.bias", L * n.copies, n.size, storage, trainable))
    fn = shape.final_norm
    groups.append(TensorGroup(f"{fn.name}.weight", 1, fn.size, storage_of("norm", "", False), trainable))
    if fn.bias:
        groups.append(TensorGroup(f"{fn.name}.bias", 1, fn.size, storage_of("norm", "", False), trainable))
    if not shape.tie_word_embeddings:
        groups.append(
            TensorGroup("lm_head.weight", 1, shape.embedding_params, storage_of("head", "", False), trainable, factored=V + h)
        )
    if shape.lm_head_bias:
        groups.append(TensorGroup("lm_head.bias", 1, shape.vocab_size, storage_of("head", "", False), trainable))
    return groups


# ---- LoRA targets ----------------------------------------------------------------------

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


def lora_target_matrices(shape: ModelShape, targets: tuple[str, ...]):
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


# ---- the registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A fine-tuning method: its tensors and what it adds to the forward pass."""

    name: str
    title: str
    tensors: Callable[[ModelShape, TrainingSetup], list[TensorGroup]]
    strength: int  # order of preference when it fits: higher is more expressive

    def trainable_params(self, shape: ModelShape, setup: TrainingSetup) -> int:
        return sum(g.elements for g in self.tensors(shape, setup) if g.trainable)


def _dense(setup: TrainingSetup) -> Callable[[str, str, bool], str]:
    return lambda kind, role, is_linear: setup.weight_dtype


def _full(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    return base_groups(shape, _dense(setup), trainable=True)


def _lora_groups(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    r = setup.lora_rank
    L = shape.num_layers
    out = []
    for m in lora_target_matrices(shape, setup.lora_targets):
        out.append(TensorGroup(f"{m.name}.lora_A", L, r * m.in_features, ADAPTER_DTYPE, True, True, r + m.in_features))
        out.append(TensorGroup(f"{m.name}.lora_B", L, m.out_features * r, ADAPTER_DTYPE, True, True, m.out_features + r))
    return out


def _lora(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    return base_groups(shape, _dense(setup), trainable=False) + _lora_groups(shape, setup)


def quantized(role: str, is_linear: bool, transformers_major: int = 5) -> bool:
    """Whether bitsandbytes 4-bit loading quantizes a decoder matrix.

    transformers 5 (with bitsandbytes 0.50) quantizes ``nn.Linear`` modules but not MoE routers or
    the fused 3-D expert tensors; transformers 4 kept each expert as ``nn.Linear``s, quantized too.
    """
    if role in (EXPERT_GATE_UP, EXPERT_DOWN):
        return transformers_major < 5
    return is_linear and role != ROUTER


def _qlora(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    def storage(kind: str, role: str, is_linear: bool) -> str:
        if kind == "weight" and quantized(role, is_linear, setup.transformers_major):
            return setup.quant
        # prepare_model_for_kbit_training upcasts every non-4-bit parameter
        return "fp32" if setup.kbit_upcast else setup.weight_dtype

    return base_groups(shape, storage, trainable=False) + _lora_groups(shape, setup)


def _adapter(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    h, m, n = shape.hidden_size, setup.adapter_size, 2 * shape.num_layers
    return base_groups(shape, _dense(setup), trainable=False) + [
        TensorGroup("adapter.down.weight", n, m * h, ADAPTER_DTYPE, True, True, m + h),
        TensorGroup("adapter.down.bias", n, m, ADAPTER_DTYPE, True, added=True),
        TensorGroup("adapter.up.weight", n, h * m, ADAPTER_DTYPE, True, True, h + m),
        TensorGroup("adapter.up.bias", n, h, ADAPTER_DTYPE, True, added=True),
    ]


def _prefix(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    vt, kv, L = setup.num_virtual_tokens, shape.kv_width, shape.num_layers
    if not setup.prefix_projection:
        added = [TensorGroup("prefix.embedding", 1, vt * L * 2 * kv, ADAPTER_DTYPE, True, True, vt + L * 2 * kv)]
    else:
        added = [
            TensorGroup("prefix.embedding", 1, vt * kv, ADAPTER_DTYPE, True, True, vt + kv),
            TensorGroup("prefix.transform.0.weight", 1, kv * kv, ADAPTER_DTYPE, True, True, 2 * kv),
            TensorGroup("prefix.transform.0.bias", 1, kv, ADAPTER_DTYPE, True, added=True),
            TensorGroup("prefix.transform.2.weight", 1, kv * L * 2 * kv, ADAPTER_DTYPE, True, True, kv + L * 2 * kv),
            TensorGroup("prefix.transform.2.bias", 1, L * 2 * kv, ADAPTER_DTYPE, True, added=True),
        ]
    return base_groups(shape, _dense(setup), trainable=False) + added


def _prompt(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    vt, h = setup.num_virtual_tokens, shape.hidden_size
    added = [TensorGroup("prompt.embedding", 1, vt * h, ADAPTER_DTYPE, True, True, vt + h)]
    return base_groups(shape, _dense(setup), trainable=False) + added


def _ptuning(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    h = shape.hidden_size
    added = [
        TensorGroup("ptuning.embedding", 1, setup.num_virtual_tokens * h, ADAPTER_DTYPE, True, True, setup.num_virtual_tokens + h),
        TensorGroup("ptuning.mlp.weight", 3, h * h, ADAPTER_DTYPE, True, True, 2 * h),
        TensorGroup("ptuning.mlp.bias", 3, h, ADAPTER_DTYPE, True, added=True),
    ]
    return base_groups(shape, _dense(setup), trainable=False) + added


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", "full fine-tuning", _full, strength=6),
        Method("lora", "LoRA", _lora, strength=5),
        Method("qlora", "QLoRA", _qlora, strength=4),
        Method("adapter", "bottleneck adapters (Houlsby)", _adapter, strength=3),
        Method("prefix", "prefix tuning", _prefix, strength=2),
        Method("ptuning", "P-tuning", _ptuning, strength=1),
        Method("prompt", "prompt tuning", _prompt, strength=0),
    )
}


def method(name: str) -> Method:
    from planner.errors import unknown_choice

    if name not in REGISTRY:
        raise unknown_choice("method", name, REGISTRY)
    return REGISTRY[name]


