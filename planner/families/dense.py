"""Dense decoder families with separate q, k, v projections and a gated MLP, the Llama layout and its
descendants: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, olmo2, granite, smollm3, phi3 (fused
qkv and gate/up), and the MoE families' shared attention (``fitplan.families.moe``).

Each reader returns the ModelShape fields its config sets; parameters follow transformers 5.24's
modules exactly (the tests build every preset on the meta device).
"""

from __future__ import annotations

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_QKV,
    ATTN_V,
    EXPERT_DOWN,
    EXPERT_GATE_UP,
    FULL,
    MLP_DOWN,
    MLP_GATE,
    MLP_GATE_UP,
    MLP_UP,
    ROUTER,
    SLIDING,
    LayerKind,
    Matrix,
    Norm,
)
from fitplan.errors import PlanError
from fitplan.families.config import Config, heads_of, layer_types

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


def llama_like(c: Config, model_type: str) -> dict[str, Any]:
    """llama, mistral, mixtral, qwen2, qwen3, gemma, gemma2: RMSNorm, separate q/k/v/o, gated MLP."""
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = heads_of(c, h)
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
            Matrix("gate", h, experts, False, ROUTER, is_linear=False),
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
        norm_topk=bool(experts),               # Mixtral always divides its top-k weights by their sum
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


def phi3(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = heads_of(c, h)
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
        o_proj_copy=True,      # queries sliced from qkv_proj: SDPA's output is copied for o_proj
    )




def _sliding_kinds(c: Config, layers: int, window: int | None, pattern: int | None) -> tuple[tuple[LayerKind, ...], int]:
    """Kinds from ``layer_types`` (or a pattern of one global layer in ``pattern``), and layer 0's kind."""
    if window is None:
        return (), 0
    types = layer_types(c, layers, lambda i: "full_attention" if pattern and (i + 1) % pattern == 0
                        else "sliding_attention")
    sliding = sum(t == "sliding_attention" for t in types)
    kinds = []
    if sliding:
        kinds.append(LayerKind("sliding", sliding, SLIDING, window))
    if layers - sliding:
        kinds.append(LayerKind("full", layers - sliding, FULL))
    first = 0 if types[0] == "sliding_attention" or not sliding else 1
    return tuple(kinds), first


def gemma3(c: Config, model_type: str) -> dict[str, Any]:
    """Gemma 3's text model (``gemma3_text``): Gemma-2's four norms per layer without soft-capping,
    per-head q/k norms, and local sliding-window layers with one global layer in every
    ``sliding_window_pattern`` (transformers 5.24 runs it with SDPA)."""
    fields = llama_like(c, "gemma2")
    d = fields["head_dim"]
    fields["norms"] = fields["norms"] + (Norm("q_norm", d, False), Norm("k_norm", d, False))
    layers = c.int("num_hidden_layers")
    window = c.int("sliding_window", default=None)
    kinds, first = _sliding_kinds(c, layers, window, c.int("sliding_window_pattern", default=6))
    fields.update(qk_norm=True, attn_softcap=c.float("attn_logit_softcapping", None),
                  final_softcap=c.float("final_logit_softcapping", None), sliding_window=window, kinds=kinds,
                  first_kind=first, norm_fp32_product=True, attention_kernels=("eager", "sdpa", "flash"),
                  eager_mask_kinds=2 if len(kinds) > 1 else 1)
    return fields


def olmo2(c: Config, model_type: str) -> dict[str, Any]:
    """OLMo 2: norms on the attention and MLP outputs only (no pre-norms) and q/k norms over the whole
    projection width."""
    fields = llama_like(c, "llama")
    q, kv = fields["num_heads"] * fields["head_dim"], fields["num_kv_heads"] * fields["head_dim"]
    h = fields["hidden_size"]
    fields.update(norms=(Norm("q_norm", q, False), Norm("k_norm", kv, False), Norm("post_attention_layernorm", h, False),
                         Norm("post_feedforward_layernorm", h, False)),
                  norm_placement="post", qk_norm=True, norm_fp32_product=True)
    return fields


def smollm3(c: Config, model_type: str) -> dict[str, Any]:
    """SmolLM3: Llama layers, every fourth without rotary positions (``no_rope_layers``)."""
    fields = llama_like(c, "llama")
    fields["tie_word_embeddings"] = c.bool("tie_word_embeddings", True)   # SmolLM3Config's default
    layers = c.int("num_hidden_layers")
    flags = c.raw.get("no_rope_layers")
    if isinstance(flags, list) and len(flags) == layers:
        nope = sum(1 for f in flags if not f)
        if nope:
            fields["kinds"] = (LayerKind("rope", layers - nope), LayerKind("nope", nope, rope=False))
            fields["first_kind"] = 0 if flags[0] else 1
    return fields
