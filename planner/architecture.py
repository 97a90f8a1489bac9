"""config.json -> ModelShape: what every layer of a causal LM holds, one small adapter per family.

A ``ModelShape`` lists the matrices of one decoder layer under the names transformers gives
their modules (``q_proj``, ``c_attn``, ``query_key_value``, ...), the norms, the embeddings and the
output head, plus the few facts about the forward pass that decide what is saved for backward
(norm kind, gated MLP, fused projections, dropout, rotary or learned positions).

Parameter counts follow transformers 5 exactly (tests compare every preset with the count a model
built on the meta device reports, tied weights tied).

Known limitations: decoder-only models of the listed families; every layer identical (no
per-layer shapes as in some hybrid models); Mixtral's experts are the fused 3-D parameters of
transformers 5, which are not ``nn.Linear`` modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from fitplan.errors import PlanError
from fitplan.frozen import frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

# Roles name what a matrix does, across families' module names.
ATTN_Q, ATTN_K, ATTN_V, ATTN_QKV, ATTN_O = "q", "k", "v", "qkv", "o"
MLP_GATE, MLP_UP, MLP_GATE_UP, MLP_DOWN = "gate", "up", "gate_up", "down"
ROUTER, EXPERT_GATE_UP, EXPERT_DOWN = "router", "expert_gate_up", "expert_down"


@frozen
class Matrix:
    """One weight matrix of a decoder layer (``copies`` > 1 for fused expert tensors)."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    role: str
    copies: int = 1
    is_linear: bool = True  # an nn.Linear / Conv1D module that peft and bitsandbytes can wrap

    @property
    def params(self) -> int:
        return self.copies * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    @property
    def weight_numel(self) -> int:
        return self.copies * self.in_features * self.out_features

    @property
    def bias_numel(self) -> int:
        return self.copies * self.out_features if self.bias else 0


@frozen
class Norm:
    name: str
    size: int
    bias: bool
    copies: int = 1  # per-head norms (stablelm's qk_layernorm) are one module per head

    @property
    def params(self) -> int:
        return self.copies * self.size * (2 if self.bias else 1)


@frozen
class ModelShape:
    """What a causal LM holds, with the facts of its forward pass that memory depends on."""

    name: str
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    matrices: tuple[Matrix, ...]          # one decoder layer
    norms: tuple[Norm, ...]               # one decoder layer
    final_norm: Norm
    position_embeddings: int = 0          # learned absolute positions (gpt2), rows
    tie_word_embeddings: bool = False
    lm_head_bias: bool = False
    norm_kind: str = "rms"                # "rms", "gemma" (RMSNorm times 1 + weight) or "layer"
    gated_mlp: bool = True
    parallel_residual: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    dropout: float = 0.0                  # residual / attention dropout probability in training
    embedding_scale: bool = False         # gemma multiplies embeddings by sqrt(hidden)
    sliding_window: int | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    rotary_dim: int = 0                   # 0 for learned positions
    activation: str = "silu"              # hidden_act / activation_function
    softmax_fp32: bool = True             # eager attention upcasts the softmax to fp32
    qk_norm: bool = False                 # RMSNorm on each head's queries and keys (qwen3)
    sandwich_norms: bool = False          # norms on the attention and MLP branches' outputs (gemma2)
    eager_mask_kinds: int = 1             # distinct masks eager attention keeps (gemma2: sliding and global)
    shared_eager_mask: bool = True        # eager attention's additive mask is built once and kept for every layer
    attention_kernels: tuple[str, ...] = ("eager", "sdpa", "flash")  # what transformers runs for the family
    legacy_loss: bool = False             # transformers 4 computed this family's loss itself, in the logits' dtype
    max_positions: int | None = None      # the longest sequence the positions cover (RoPE scaling included)

    @property
    def post_mlp_norm(self) -> bool:
        """A norm saves tensors after the MLP's down projection."""
        return self.sandwich_norms

    # ---- parameter counts -------------------------------------------------------------
    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def position_params(self) -> int:
        return self.position_embeddings * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters of the output head that are not shared with the input embedding."""
        weight = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return weight + (self.vocab_size if self.lm_head_bias else 0)

    @property
    def layer_params(self) -> int:
        return sum(m.params for m in self.matrices) + sum(n.params for n in self.norms)

    @property
    def parameter_count(self) -> int:
        return (
            self.embedding_params
            + self.position_params
            + self.num_layers * self.layer_params
            + self.final_norm.params
            + self.lm_head_params
        )

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def q_width(self) -> int:
        return self.num_heads * self.head_dim

    def matrix(self, role: str) -> Matrix | None:
        return next((m for m in self.matrices if m.role == role), None)

    @property
    def param_tensors(self) -> int:
        """How many separate parameter tensors the model has (optimizer per-tensor costs)."""
        per_layer = sum(1 + (1 if m.bias else 0) for m in self.matrices)
        per_layer += sum(n.copies * (1 + (1 if n.bias else 0)) for n in self.norms)
        head = (0 if self.tie_word_embeddings else 1) + (1 if self.lm_head_bias else 0)
        return (
            1
            + (1 if self.position_embeddings else 0)
            + self.num_layers * per_layer
            + 1
            + (1 if self.final_norm.bias else 0)
            + head
        )


# ---- reading config.json ----------------------------------------------------------------

_MISSING = object()


class _Config:
    """Typed reads of a config dict, each failure a PlanError naming the field."""

    def __init__(self, raw: Mapping[str, Any], source: str):
        self.raw = raw
        self.source = source

    def int(self, *names: str, default: Any = _MISSING, allow_zero: bool = False) -> int:
        for name in names:
            if name in self.raw and self.raw[name] is not None:
                value = self.raw[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise PlanError(f"{self.source}: field {name!r} must be a positive integer, got {value!r}")
                if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
                    raise PlanError(f"{self.source}: field {name!r} must be a positive integer, got {value!r}")
                value = int(value)
                if value < 0 or (value == 0 and not allow_zero):
                    raise PlanError(f"{self.source}: field {name!r} must be a positive integer, got {value}")
                if value > 10**9:
                    raise PlanError(f"{self.source}: field {name!r} is absurdly large ({value})")
                return value
        if default is _MISSING:
            raise PlanError(f"{self.source}: missing required field {' or '.join(repr(n) for n in names)}")
        return default

    def float(self, name: str, default: float | None) -> float | None:
        value = self.raw.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlanError(f"{self.source}: field {name!r} must be a number, got {value!r}")
        return float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise PlanError(f"{self.source}: field {name!r} must be true or false, got {value!r}")
        return value


def _max_positions(c: _Config) -> int | None:
    """The longest sequence a RoPE model's config covers: ``max_position_embeddings``, times the
    ``rope_scaling`` factor where the config states the original length apart (YaRN and linear
    scaling leave ``max_position_embeddings`` at the pre-trained length; Llama 3's type already
    states the extended one)."""
    n = c.int("max_position_embeddings", "n_positions", "max_sequence_length", default=None)
    scaling = c.raw.get("rope_scaling") or {}
    if n is None or not isinstance(scaling, Mapping):
        return n
    factor = scaling.get("factor")
    kind = scaling.get("rope_type") or scaling.get("type")
    if isinstance(factor, (int, float)) and factor > 1 and kind in ("yarn", "linear", "dynamic") \
            and not scaling.get("original_max_position_embeddings"):
        return int(n * factor)
    return n


def _divide(c: _Config, total: int, parts: int, what: str) -> int:
    if total % parts:
        raise PlanError(f"{c.source}: {what}: {total} is not divisible by {parts}")
    return total // parts


def _heads(c: _Config, hidden: int) -> tuple[int, int, int]:
    heads = c.int("num_attention_heads", "n_head")
    kv_heads = c.int("num_key_value_heads", default=heads)
    if kv_heads > heads:
        raise PlanError(f"{c.source}: num_key_value_heads ({kv_heads}) cannot exceed num_attention_heads ({heads})")
    if heads % kv_heads:
        raise PlanError(
            f"{c.source}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
        )
    head_dim = c.int("head_dim", default=0, allow_zero=True) or _divide(c, hidden, heads, "hidden_size / heads")
    return heads, kv_heads, head_dim


def _llama_like(c: _Config, model_type: str) -> dict[str, Any]:
    """llama, mistral, mixtral, qwen2, qwen3, gemma, gemma2: RMSNorm, separate q/k/v/o, gated MLP."""
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = _heads(c, h)
    q_bias = kv_bias = o_bias = c.bool("attention_bias", False)
    if model_type == "qwen2":
        q_bias = kv_bias = True
        o_bias = False
    mlp_bias = c.bool("mlp_bias", False)
    matrices = [
        Matrix("q_proj", h, heads * d, q_bias, ATTN_Q),
        Matrix("k_proj", h, kv_heads * d, kv_bias, ATTN_K),
        Matrix("v_proj", h, kv_heads * d, kv_bias, ATTN_V),
        Matrix("o_proj", heads * d, h, o_bias, ATTN_O),
    ]
    experts = experts_per_token = 0
    if model_type == "mixtral":
        experts = c.int("num_local_experts")
        experts_per_token = c.int("num_experts_per_tok")
        if experts_per_token > experts:
            raise PlanError(f"{c.source}: num_experts_per_tok ({experts_per_token}) cannot exceed the "
                            f"{experts} experts (num_local_experts)")
        matrices += [
            Matrix("gate", h, experts, False, ROUTER),
            Matrix("gate_up_proj", h, 2 * i, False, EXPERT_GATE_UP, copies=experts, is_linear=False),
            Matrix("down_proj", i, h, False, EXPERT_DOWN, copies=experts, is_linear=False),
        ]
    else:
        matrices += [
            Matrix("gate_proj", h, i, mlp_bias, MLP_GATE),
            Matrix("up_proj", h, i, mlp_bias, MLP_UP),
            Matrix("down_proj", i, h, mlp_bias, MLP_DOWN),
        ]
    norms = [Norm("input_layernorm", h, False), Norm("post_attention_layernorm", h, False)]
    if model_type == "gemma2":
        norms += [Norm("pre_feedforward_layernorm", h, False), Norm("post_feedforward_layernorm", h, False)]
    if model_type == "qwen3":
        norms += [Norm("q_norm", d, False), Norm("k_norm", d, False)]
    tie_default = model_type in ("gemma", "gemma2")
    gemma2 = model_type == "gemma2"
    sliding = c.int("sliding_window", default=None) if c.bool("use_sliding_window", True) else None
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=d,
        matrices=tuple(matrices),
        norms=tuple(norms),
        final_norm=Norm("norm", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", tie_default),
        num_experts=experts,
        experts_per_token=experts_per_token,
        dropout=c.float("attention_dropout", 0.0) or 0.0,
        embedding_scale=model_type in ("gemma", "gemma2"),
        sliding_window=sliding if model_type in ("mistral", "mixtral", "gemma2") else None,
        attn_softcap=c.float("attn_logit_softcapping", None) if model_type == "gemma2" else None,
        final_softcap=c.float("final_logit_softcapping", None) if model_type == "gemma2" else None,
        rotary_dim=d,
        activation=str(c.raw.get("hidden_activation") or c.raw.get("hidden_act") or "silu"),
        norm_kind="gemma" if model_type in ("gemma", "gemma2") else "rms",
        qk_norm=model_type == "qwen3",
        sandwich_norms=gemma2,
        # Gemma-2 alternates a sliding and a global mask and keeps neither alive outside the layers
        eager_mask_kinds=2 if gemma2 and sliding else 1,
        shared_eager_mask=not gemma2,
        attention_kernels=("eager", "flash") if gemma2 else ("eager", "sdpa", "flash"),  # 5.24: no SDPA with softcapping
    )


def _phi3(c: _Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = _heads(c, h)
    matrices = (
        Matrix("qkv_proj", h, (heads + 2 * kv_heads) * d, False, ATTN_QKV),
        Matrix("o_proj", heads * d, h, False, ATTN_O),
        Matrix("gate_up_proj", h, 2 * i, False, MLP_GATE_UP),
        Matrix("down_proj", i, h, False, MLP_DOWN),
    )
    partial = c.float("partial_rotary_factor", 1.0) or 1.0
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=d,
        matrices=matrices,
        norms=(Norm("input_layernorm", h, False), Norm("post_attention_layernorm", h, False)),
        final_norm=Norm("norm", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        dropout=max(c.float("attention_dropout", 0.0) or 0.0, c.float("resid_pdrop", 0.0) or 0.0),
        sliding_window=c.int("sliding_window", default=None),
        rotary_dim=int(d * partial),
    )


def _phi(c: _Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = _heads(c, h)
    matrices = (
        Matrix("q_proj", h, heads * d, True, ATTN_Q),
        Matrix("k_proj", h, kv_heads * d, True, ATTN_K),
        Matrix("v_proj", h, kv_heads * d, True, ATTN_V),
        Matrix("dense", heads * d, h, True, ATTN_O),
        Matrix("fc1", h, i, True, MLP_UP),
        Matrix("fc2", i, h, True, MLP_DOWN),
    )
    qk_ln = c.bool("qk_layernorm", False)
    norms = [Norm("input_layernorm", h, True)]
    if qk_ln:
        norms += [Norm("q_layernorm", d, True), Norm("k_layernorm", d, True)]
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=d,
        matrices=matrices,
        norms=tuple(norms),
        final_norm=Norm("final_layernorm", h, True),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        lm_head_bias=True,
        norm_kind="layer",
        gated_mlp=False,
        parallel_residual=True,
        dropout=max(c.float("attention_dropout", 0.0) or 0.0, c.float("resid_pdrop", 0.0) or 0.0),
        rotary_dim=int(d * (c.float("partial_rotary_factor", 0.5) or 0.5)),
        activation=str(c.raw.get("hidden_act") or "gelu_new"),
    )


def _stablelm(c: _Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = _heads(c, h)
    qkv_bias = c.bool("use_qkv_bias", False)
    matrices = (
        Matrix("q_proj", h, heads * d, qkv_bias, ATTN_Q),
        Matrix("k_proj", h, kv_heads * d, qkv_bias, ATTN_K),
        Matrix("v_proj", h, kv_heads * d, qkv_bias, ATTN_V),
        Matrix("o_proj", heads * d, h, False, ATTN_O),
        Matrix("gate_proj", h, i, False, MLP_GATE),
        Matrix("up_proj", h, i, False, MLP_UP),
        Matrix("down_proj", i, h, False, MLP_DOWN),
    )
    parallel = c.bool("use_parallel_residual", False)
    norms = [Norm("input_layernorm", h, True)]
    if not parallel:
        norms.append(Norm("post_attention_layernorm", h, True))
    if c.bool("qk_layernorm", False):
        # one LayerNorm (no bias) per head for q and for k, each of head_dim
        norms += [Norm("q_layernorm", d, False, copies=heads), Norm("k_layernorm", d, False, copies=kv_heads)]
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=d,
        matrices=matrices,
        norms=tuple(norms),
        final_norm=Norm("norm", h, True),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        norm_kind="layer",
        parallel_residual=parallel,
        dropout=max(c.float("attention_dropout", 0.0) or 0.0, c.float("hidden_dropout", 0.0) or 0.0),
        rotary_dim=int(d * (c.float("partial_rotary_factor", 0.25) or 0.25)),
    )


def _gpt2(c: _Config, model_type: str) -> dict[str, Any]:
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    d = _divide(c, h, heads, "n_embd / n_head")
    i = c.int("n_inner", default=4 * h)
    positions = c.int("n_positions", "max_position_embeddings")
    if model_type == "gpt_bigcode":
        kv_heads = 1 if c.bool("multi_query", True) else heads
    else:
        kv_heads = heads
    matrices = (
        Matrix("c_attn", h, h + 2 * kv_heads * d, True, ATTN_QKV),
        Matrix("c_proj", h, h, True, ATTN_O),
        Matrix("c_fc", h, i, True, MLP_UP),
        Matrix("c_proj", i, h, True, MLP_DOWN),
    )
    dropout = max(c.float("resid_pdrop", 0.1) or 0.0, c.float("attn_pdrop", 0.1) or 0.0, c.float("embd_pdrop", 0.1) or 0.0)
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=d,
        matrices=matrices,
        norms=(Norm("ln_1", h, True), Norm("ln_2", h, True)),
        final_norm=Norm("ln_f", h, True),
        position_embeddings=positions,
        tie_word_embeddings=c.bool("tie_word_embeddings", True),
        norm_kind="layer",
        gated_mlp=False,
        dropout=dropout,
        rotary_dim=0,
        activation=str(c.raw.get("activation_function") or ("gelu_pytorch_tanh" if model_type == "gpt_bigcode" else "gelu_new")),
        softmax_fp32=model_type == "gpt_bigcode" and c.bool("attention_softmax_in_fp32", True),
        legacy_loss=model_type == "gpt_bigcode",
    )


def _gpt_neox(c: _Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads = c.int("num_attention_heads")
    d = _divide(c, h, heads, "hidden_size / heads")
    bias = c.bool("attention_bias", True)
    matrices = (
        Matrix("query_key_value", h, 3 * h, bias, ATTN_QKV),
        Matrix("dense", h, h, bias, ATTN_O),
        Matrix("dense_h_to_4h", h, i, True, MLP_UP),
        Matrix("dense_4h_to_h", i, h, True, MLP_DOWN),
    )
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=d,
        matrices=matrices,
        norms=(Norm("input_layernorm", h, True), Norm("post_attention_layernorm", h, True)),
        final_norm=Norm("final_layer_norm", h, True),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        norm_kind="layer",
        gated_mlp=False,
        parallel_residual=c.bool("use_parallel_residual", True),
        dropout=max(c.float("attention_dropout", 0.0) or 0.0, c.float("hidden_dropout", 0.0) or 0.0),
        rotary_dim=int(d * (c.float("rotary_pct", 0.25) or 0.25)),
        activation=str(c.raw.get("hidden_act") or "gelu"),
    )


def _falcon(c: _Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads", "n_head")
    d = _divide(c, h, heads, "hidden_size / heads")
    new_arch = c.bool("new_decoder_architecture", False)
    if new_arch:
        kv_heads = c.int("num_kv_heads", default=heads)
    elif c.bool("multi_query", True):
        kv_heads = 1
    else:
        kv_heads = heads
    bias = c.bool("bias", False)
    i = c.int("ffn_hidden_size", default=4 * h)
    matrices = (
        Matrix("query_key_value", h, (heads + 2 * kv_heads) * d, bias, ATTN_QKV),
        Matrix("dense", h, h, bias, ATTN_O),
        Matrix("dense_h_to_4h", h, i, bias, MLP_UP),
        Matrix("dense_4h_to_h", i, h, bias, MLP_DOWN),
    )
    parallel = c.bool("parallel_attn", True)
    if new_arch and c.int("num_ln_in_parallel_attn", default=2) == 2:
        norms = (Norm("ln_attn", h, True), Norm("ln_mlp", h, True))
    elif parallel:
        norms = (Norm("input_layernorm", h, True),)
    else:
        norms = (Norm("input_layernorm", h, True), Norm("post_attention_layernorm", h, True))
    return dict(
        hidden_size=h,
        intermediate_size=i,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=d,
        matrices=matrices,
        norms=norms,
        final_norm=Norm("ln_f", h, True),
        tie_word_embeddings=c.bool("tie_word_embeddings", True),
        norm_kind="layer",
        gated_mlp=False,
        parallel_residual=parallel or new_arch,
        dropout=max(c.float("attention_dropout", 0.0) or 0.0, c.float("hidden_dropout", 0.0) or 0.0),
        rotary_dim=d if c.bool("rotary", True) else 0,
        activation=str(c.raw.get("activation") or "gelu"),
    )


FAMILIES: dict[str, Callable[[_Config, str], dict[str, Any]]] = {
    "llama": _llama_like,
    "mistral": _llama_like,
    "mixtral": _llama_like,
    "qwen2": _llama_like,
    "qwen3": _llama_like,
    "gemma": _llama_like,
    "gemma2": _llama_like,
    "phi3": _phi3,
    "phi": _phi,
    "stablelm": _stablelm,
    "gpt2": _gpt2,
    "gpt_bigcode": _gpt2,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
}


def shape_from_config(raw: Any, name: str = "config.json") -> ModelShape:
    """Read a Hugging Face ``config.json`` dictionary into a ModelShape.

    Args:
        raw: the parsed JSON.
        name: what to call the model in messages and output.

    Raises:
        PlanError: not a JSON object, an unsupported ``model_type``, a missing or non-positive field.
    """
    if not isinstance(raw, Mapping):
        raise PlanError(f"{name}: a config.json must hold a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise PlanError(f"{name}: field 'model_type' must be a string naming the architecture, got {model_type!r}")
    if not model_type:
        raise PlanError(f"{name}: missing required field 'model_type' (supported: {', '.join(sorted(FAMILIES))})")
    if model_type not in FAMILIES:
        raise PlanError(
            f"{name}: architecture {model_type!r} is not supported. Supported: {', '.join(sorted(FAMILIES))}"
        )
    c = _Config(raw, name)
    nested = [k for k in ("text_config", "llm_config", "language_config") if isinstance(raw.get(k), Mapping)]
    if nested and "hidden_size" not in raw and "n_embd" not in raw:
        raise PlanError(f"{name}: the language model's fields sit under {nested[0]!r} (a multimodal config); "
                        f"give the {nested[0]} as its own config.json")
    fields = FAMILIES[model_type](c, model_type)
    fields.setdefault("max_positions", fields.get("position_embeddings") or _max_positions(c))
    layers = c.int("num_hidden_layers", "n_layer")
    vocab = c.int("vocab_size")
    shape = ModelShape(name=name, model_type=model_type, vocab_size=vocab, num_layers=layers, **fields)
    _check_limits(shape, name)
    return shape


# Sizes beyond any model that can be trained: a config past them is a typo or a test of the tool.
LIMITS = {"num_layers": 2_000, "hidden_size": 1_000_000, "vocab_size": 20_000_000, "num_heads": 100_000,
          "intermediate_size": 10_000_000, "num_experts": 1_000_000}
MAX_PARAMETERS = 10**14   # 100 trillion


def _check_limits(shape: ModelShape, name: str) -> None:
    for field, limit in LIMITS.items():
        value = getattr(shape, field)
        if value > limit:
            raise PlanError(f"{name}: {field} of {value:,} is beyond the {limit:,} any trainable model has")
    if shape.parameter_count > MAX_PARAMETERS:
        raise PlanError(f"{name}: {shape.parameter_count:,} parameters is beyond the {MAX_PARAMETERS:,} "
                        "(100 trillion) any trainable model has")
