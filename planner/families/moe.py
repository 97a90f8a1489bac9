"""Mixture-of-experts families of transformers 5.24, each an attention of the Llama kind (or DeepSeek's
multi-head latent attention) and a sparse MLP.

Every one keeps its routed experts as fused 3-D parameters (``experts.gate_up_proj`` [E, 2 I, h] and
``experts.down_proj`` [E, h, I], or transposed), not ``nn.Linear`` modules: peft's ``target_modules``
cannot wrap them and bitsandbytes leaves them unquantized. The router is ``gate`` (``router`` in
gpt-oss and Llama 4), with a bias in gpt-oss and fp32 weights in DeepSeek and GLM-4.5; shared experts
are ``shared_experts`` (DeepSeek, GLM-4.5: ``n_shared_experts`` x the expert width) or ``shared_expert``
with a sigmoid ``shared_expert_gate`` (Qwen1.5-MoE, Qwen3-Next, Qwen3.5) or without one (Llama 4).
Dense layers replace the sparse MLP where the config says (``first_k_dense_replace``,
``mlp_only_layers`` and ``decoder_sparse_step``, ``interleave_moe_layer_step``).

Known limitations: routing is taken as balanced (each token's activations for its ``top_k`` experts);
no expert capacity or token dropping; the aux-loss router logits (``output_router_logits``) are not
counted.
"""

from __future__ import annotations

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_V,
    CHUNKED,
    EXPERT_DOWN,
    EXPERT_GATE_UP,
    FULL,
    MLP_DOWN,
    MLP_GATE,
    MLP_UP,
    ROUTER,
    SLIDING,
    LayerKind,
    Matrix,
    Norm,
)
from fitplan.errors import PlanError
from fitplan.families.config import Config, heads_of, layer_types
from fitplan.families.dense import llama_like

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

SHARED_GATE, SHARED_UP, SHARED_DOWN, SHARED_SCALE = "shared_gate", "shared_up", "shared_down", "shared_scale"
MLA_QA, MLA_QB, MLA_KVA, MLA_KVB = "mla_q_a", "mla_q_b", "mla_kv_a", "mla_kv_b"


def _experts(c: Config, h: int, experts: int, top_k: int, width: int, layers: int, *, prefix: str = "mlp.",
             router: str = "gate", router_bias: bool = False, expert_bias: bool = False,
             router_dtype: str | None = None, router_linear: bool = False) -> list[Matrix]:
    if top_k > experts:
        raise PlanError(f"{c.source}: {top_k} experts per token cannot exceed the {experts} experts")
    return [
        # routers are custom modules holding a weight (Llama 4's subclasses nn.Linear)
        Matrix(prefix + router, h, experts, router_bias, ROUTER, layers=layers, dtype=router_dtype,
               is_linear=router_linear),
        Matrix(prefix + "experts.gate_up_proj", h, 2 * width, expert_bias, EXPERT_GATE_UP, copies=experts,
               is_linear=False, layers=layers),
        Matrix(prefix + "experts.down_proj", width, h, expert_bias, EXPERT_DOWN, copies=experts, is_linear=False,
               layers=layers),
    ]


def _shared(h: int, width: int, layers: int, name: str, gated: bool, prefix: str = "mlp.") -> list[Matrix]:
    out = [
        Matrix(f"{prefix}{name}.gate_proj", h, width, False, SHARED_GATE, layers=layers),
        Matrix(f"{prefix}{name}.up_proj", h, width, False, SHARED_UP, layers=layers),
        Matrix(f"{prefix}{name}.down_proj", width, h, False, SHARED_DOWN, layers=layers),
    ]
    if gated:
        out.append(Matrix(f"{prefix}shared_expert_gate", h, 1, False, SHARED_SCALE, layers=layers))
    return out


def _dense(h: int, width: int, layers: int, prefix: str = "mlp.") -> list[Matrix]:
    return [
        Matrix(f"{prefix}gate_proj", h, width, False, MLP_GATE, layers=layers),
        Matrix(f"{prefix}up_proj", h, width, False, MLP_UP, layers=layers),
        Matrix(f"{prefix}down_proj", width, h, False, MLP_DOWN, layers=layers),
    ]


def _attention(c: Config, h: int, bias: bool, o_bias: bool | None = None) -> tuple[list[Matrix], int, int, int]:
    heads, kv_heads, d = heads_of(c, h)
    o_bias = bias if o_bias is None else o_bias
    return [
        Matrix("q_proj", h, heads * d, bias, ATTN_Q),
        Matrix("k_proj", h, kv_heads * d, bias, ATTN_K),
        Matrix("v_proj", h, kv_heads * d, bias, ATTN_V),
        Matrix("o_proj", heads * d, h, o_bias, ATTN_O),
    ], heads, kv_heads, d


def _kinds(sparse: list[bool], dense_matrices: list[Matrix], sparse_matrices: list[Matrix], shared: list[Matrix],
           norms: list[Norm]) -> tuple[tuple[LayerKind, ...], int, list[Matrix], tuple[int, ...]]:
    """Layer kinds (dense and MoE) from a per-layer flag; the union of the matrices; each layer's kind."""
    n_sparse = sum(sparse)
    n_dense = len(sparse) - n_sparse
    kinds = []
    if n_dense:
        kinds.append(LayerKind("dense", n_dense, matrices=tuple(shared + dense_matrices), norms=tuple(norms)))
    if n_sparse:
        kinds.append(LayerKind("moe", n_sparse, matrices=tuple(shared + sparse_matrices), norms=tuple(norms)))
    first = 0 if (not sparse[0] or not n_dense) else 1
    order = tuple(int(s) for s in sparse) if len(kinds) > 1 else ()
    return (tuple(kinds) if len(kinds) > 1 else ()), first, shared + (dense_matrices if n_dense else []) + \
        (sparse_matrices if n_sparse else []), order


def qwen_moe(c: Config, model_type: str) -> dict[str, Any]:
    """Qwen1.5-MoE (``qwen2_moe``) and Qwen3-MoE (``qwen3_moe``): every ``decoder_sparse_step``-th layer
    sparse unless listed in ``mlp_only_layers``; Qwen1.5's shared expert with its sigmoid gate."""
    base = llama_like(c, "qwen2" if model_type == "qwen2_moe" else "qwen3")
    h, L = base["hidden_size"], c.int("num_hidden_layers")
    experts, top_k = c.int("num_experts"), c.int("num_experts_per_tok")
    width = c.int("moe_intermediate_size")
    step = c.int("decoder_sparse_step", default=1)
    only = c.raw.get("mlp_only_layers") or []
    sparse = [i not in only and (i + 1) % step == 0 for i in range(L)]
    attention = [m for m in base["matrices"] if m.role in (ATTN_Q, ATTN_K, ATTN_V, ATTN_O)]
    n_sparse = sum(sparse)
    shared_width = c.int("shared_expert_intermediate_size", default=0, allow_zero=True)
    shared = _shared(h, shared_width, n_sparse, "shared_expert", gated=True) if shared_width else []
    moe = _experts(c, h, experts, top_k, width, n_sparse) + shared
    dense = _dense(h, base["intermediate_size"], L - n_sparse)
    kinds, first, matrices, order = _kinds(sparse, dense, moe, attention, list(base["norms"]))
    base.update(matrices=tuple(matrices), kinds=kinds, first_kind=first, order=order, num_experts=experts,
                experts_per_token=top_k, expert_intermediate_size=width, shared_expert_size=shared_width,
                norm_topk=c.bool("norm_topk_prob", False))
    return base


def gpt_oss(c: Config, model_type: str) -> dict[str, Any]:
    """gpt-oss: biased q, k, v, o and router, biased experts stored [E, h, 2 I] and [E, I, h], a learned
    attention sink per head, alternating sliding (128) and full layers; eager attention only in
    transformers 5.24 (SDPA has no sinks). The checkpoint stores its experts in MXFP4; transformers'
    model (what is trained) holds them in bf16."""
    h = c.int("hidden_size")
    attention, heads, kv_heads, d = _attention(c, h, c.bool("attention_bias", True))
    L = c.int("num_hidden_layers")
    experts = c.int("num_local_experts")
    top_k = c.int("num_experts_per_tok", "experts_per_token")
    width = c.int("intermediate_size")
    window = c.int("sliding_window", default=None)
    types = layer_types(c, L, lambda i: "sliding_attention" if i % 2 == 0 else "full_attention")
    sliding = sum(t == "sliding_attention" for t in types)
    kinds = tuple(k for k in (LayerKind("sliding", sliding, SLIDING, window), LayerKind("full", L - sliding, FULL))
                  if k.layers)
    matrices = attention + _experts(c, h, experts, top_k, width, L, router="router", router_bias=True,
                                    expert_bias=True)
    return dict(
        hidden_size=h, intermediate_size=width, num_heads=heads, num_kv_heads=kv_heads, head_dim=d,
        matrices=tuple(matrices),
        norms=(Norm("sinks", heads, False), Norm("input_layernorm", h, False), Norm("post_attention_layernorm", h, False)),
        final_norm=Norm("norm", h, False), tie_word_embeddings=c.bool("tie_word_embeddings", False),
        num_experts=experts, experts_per_token=top_k, expert_intermediate_size=width,
        dropout=c.float("attention_dropout", 0.0) or 0.0, sliding_window=window, rotary_dim=d,
        kinds=kinds if len(kinds) > 1 else (), first_kind=0 if types[0] == "sliding_attention" or not sliding else 1,
        attention_sinks=True, norm_fp32_product=True, attention_kernels=("eager", "flash"), softmax_fp32=False,
        router="topk_softmax",
    )


def llama4(c: Config, model_type: str) -> dict[str, Any]:
    """Llama 4's text model (``llama4_text``): MoE layers every ``interleave_moe_layer_step`` (experts
    [E, h, 2 I] and [E, I, h], a shared expert, top-1 routing; transformers runs every token through
    every expert), dense layers of ``intermediate_size_mlp`` between; chunked attention (8192) in the
    rotary layers and global attention without rotary in every fourth (``no_rope_layers``)."""
    h = c.int("hidden_size")
    attention, heads, kv_heads, d = _attention(c, h, c.bool("attention_bias", False))
    L = c.int("num_hidden_layers")
    experts, top_k = c.int("num_local_experts"), c.int("num_experts_per_tok")
    width = c.int("intermediate_size")
    step = c.int("interleave_moe_layer_step", default=1)
    sparse = [(i + 1) % step == 0 for i in range(L)]
    n_sparse = sum(sparse)
    moe = _experts(c, h, experts, top_k, width, n_sparse, prefix="feed_forward.", router="router",
                   router_linear=True) + \
        _shared(h, width, n_sparse, "shared_expert", gated=False, prefix="feed_forward.")
    dense = _dense(h, c.int("intermediate_size_mlp", default=width), L - n_sparse, prefix="feed_forward.")
    norms = [Norm("input_layernorm", h, False), Norm("post_attention_layernorm", h, False)]
    _, _, matrices, _ = _kinds(sparse, dense, moe, attention, norms)
    rope_flags = c.raw.get("no_rope_layers")
    if not isinstance(rope_flags, list) or len(rope_flags) != L:
        rope_flags = [int((i + 1) % 4 != 0) for i in range(L)]
    chunk = c.int("attention_chunk_size", default=None)
    kinds = []
    for is_sparse in (False, True):
        for rope in (1, 0):
            n = sum(1 for i in range(L) if sparse[i] == is_sparse and bool(rope_flags[i]) == bool(rope))
            if n:
                mats = tuple(attention + (moe if is_sparse else dense))
                kinds.append(LayerKind(("moe" if is_sparse else "dense") + ("" if rope else "-nope"), n,
                                       CHUNKED if rope and chunk else FULL, chunk if rope else None, bool(rope),
                                       mats, tuple(norms)))
    first = next(k for k, kind in enumerate(kinds) if kind.name == ("moe" if sparse[0] else "dense")
                 + ("" if rope_flags[0] else "-nope"))
    return dict(
        hidden_size=h, intermediate_size=width, num_heads=heads, num_kv_heads=kv_heads, head_dim=d,
        matrices=tuple(matrices), norms=tuple(norms), final_norm=Norm("norm", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False), num_experts=experts, experts_per_token=top_k,
        expert_intermediate_size=width, shared_expert_size=width, router="dense", dropout=c.float("attention_dropout", 0.0) or 0.0,
        rotary_dim=d, kinds=tuple(kinds), first_kind=first, qk_norm=c.bool("use_qk_norm", True), qk_l2=True,
        softmax_fp32=False,
    )


def glm4_moe(c: Config, model_type: str) -> dict[str, Any]:
    """GLM-4.5 (``glm4_moe``): biased q, k, v, partial rotary, an fp32 router, shared experts, the first
    ``first_k_dense_replace`` layers dense."""
    h = c.int("hidden_size")
    attention, heads, kv_heads, d = _attention(c, h, c.bool("attention_bias", False), o_bias=False)
    L = c.int("num_hidden_layers")
    experts, top_k = c.int("n_routed_experts"), c.int("num_experts_per_tok")
    width = c.int("moe_intermediate_size")
    first_dense = c.int("first_k_dense_replace", default=1, allow_zero=True)
    sparse = [i >= first_dense for i in range(L)]
    n_sparse = sum(sparse)
    shared_width = width * c.int("n_shared_experts", default=1, allow_zero=True)
    moe = _experts(c, h, experts, top_k, width, n_sparse, router_dtype="fp32") + \
        (_shared(h, shared_width, n_sparse, "shared_experts", gated=False) if shared_width else [])
    dense = _dense(h, c.int("intermediate_size"), L - n_sparse)
    norms = [Norm("input_layernorm", h, False), Norm("post_attention_layernorm", h, False)]
    if c.bool("use_qk_norm", False):
        norms += [Norm("self_attn.q_norm", d, False), Norm("self_attn.k_norm", d, False)]
    kinds, first, matrices, order = _kinds(sparse, dense, moe, attention, norms)
    return dict(
        hidden_size=h, intermediate_size=c.int("intermediate_size"), num_heads=heads, num_kv_heads=kv_heads,
        head_dim=d, matrices=tuple(matrices), norms=tuple(norms), final_norm=Norm("norm", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False), num_experts=experts, experts_per_token=top_k,
        expert_intermediate_size=width, shared_expert_size=shared_width, router="sigmoid",
        norm_topk=c.bool("norm_topk_prob", True), o_proj_copy=True,
        dropout=c.float("attention_dropout", 0.0) or 0.0,
        rotary_dim=int(d * (c.float("partial_rotary_factor", 0.5) or 0.5)), kinds=kinds, first_kind=first,
        order=order, qk_norm=c.bool("use_qk_norm", False),
    )


def deepseek(c: Config, model_type: str) -> dict[str, Any]:
    """DeepSeek-V2 and V3 / R1: multi-head latent attention (queries through a ``q_lora_rank`` bottleneck
    where there is one, keys and values through ``kv_lora_rank`` plus a shared rotary key of
    ``qk_rope_head_dim``; heads of ``qk_nope_head_dim + qk_rope_head_dim``, values of ``v_head_dim``),
    an fp32 router, shared experts, the first ``first_k_dense_replace`` layers dense."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    rope, nope, v = c.int("qk_rope_head_dim"), c.int("qk_nope_head_dim"), c.int("v_head_dim")
    kv_rank = c.int("kv_lora_rank")
    q_rank = c.int("q_lora_rank", default=None)
    qd = rope + nope
    bias = c.bool("attention_bias", False)
    if q_rank:
        attention = [Matrix("q_a_proj", h, q_rank, bias, MLA_QA), Matrix("q_b_proj", q_rank, heads * qd, False, ATTN_Q)]
        norms = [Norm("self_attn.q_a_layernorm", q_rank, False)]
    else:
        attention = [Matrix("q_proj", h, heads * qd, False, ATTN_Q)]
        norms = []
    attention += [
        Matrix("kv_a_proj_with_mqa", h, kv_rank + rope, bias, MLA_KVA),
        Matrix("kv_b_proj", kv_rank, heads * (nope + v), False, MLA_KVB),
        Matrix("o_proj", heads * v, h, bias, ATTN_O),
    ]
    norms += [Norm("self_attn.kv_a_layernorm", kv_rank, False), Norm("input_layernorm", h, False),
              Norm("post_attention_layernorm", h, False)]
    L = c.int("num_hidden_layers")
    experts, top_k = c.int("n_routed_experts"), c.int("num_experts_per_tok")
    width = c.int("moe_intermediate_size")
    first_dense = c.int("first_k_dense_replace", default=0, allow_zero=True)
    freq = c.int("moe_layer_freq", default=1)
    sparse = [i >= first_dense and i % freq == 0 for i in range(L)]
    n_sparse = sum(sparse)
    shared_width = width * c.int("n_shared_experts", default=0, allow_zero=True)
    moe = _experts(c, h, experts, top_k, width, n_sparse, router_dtype="fp32") \
        + (_shared(h, shared_width, n_sparse, "shared_experts", gated=False) if shared_width else [])
    dense = _dense(h, c.int("intermediate_size"), L - n_sparse)
    kinds, first, matrices, order = _kinds(sparse, dense, moe, attention, norms)
    return dict(
        hidden_size=h, intermediate_size=c.int("intermediate_size"), num_heads=heads, num_kv_heads=heads, head_dim=qd,
        matrices=tuple(matrices), norms=tuple(norms), final_norm=Norm("norm", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False), num_experts=experts, experts_per_token=top_k,
        expert_intermediate_size=width, shared_expert_size=shared_width,
        router="sigmoid" if model_type == "deepseek_v3" else "softmax",
        norm_topk=model_type == "deepseek_v3" and c.bool("norm_topk_prob", True),
        dropout=c.float("attention_dropout", 0.0) or 0.0, rotary_dim=rope, v_head_dim=v, kinds=kinds,
        first_kind=first, order=order,
    )
