"""Hybrid families: Gated DeltaNet linear-attention layers between gated full-attention layers
(Qwen3-Next, ``qwen3_next``; Qwen3.5, ``qwen3_5_text`` and ``qwen3_5_moe_text``), every
``full_attention_interval``-th layer full (or as ``layer_types`` says).

A linear-attention layer projects the input to queries, keys, values and an output gate (one fused
``in_proj_qkvz`` and ``in_proj_ba`` in Qwen3-Next; ``in_proj_qkv``, ``in_proj_z``, ``in_proj_b`` and
``in_proj_a`` in Qwen3.5), runs a depthwise causal conv1d over ``2 Hk dk + Hv dv`` channels, the
gated delta rule over ``Hv`` value heads, a gated RMSNorm of the value width and ``out_proj``. The
full-attention layers' ``q_proj`` also yields the output gate (twice the query width), and their
q/k norms are Gemma-style.
"""

from __future__ import annotations

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_V,
    FULL,
    LINEAR,
    MLP_DOWN,
    MLP_GATE,
    MLP_UP,
    LayerKind,
    Matrix,
    Norm,
)
from fitplan.families.config import Config, heads_of, layer_types
from fitplan.families.moe import _experts, _shared

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

LIN_IN, LIN_GATE, LIN_OUT, LIN_CONV = "linear_in", "linear_gate", "linear_out", "linear_conv"


def qwen_next(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    heads, kv_heads, d = heads_of(c, h)
    L = c.int("num_hidden_layers")
    interval = c.int("full_attention_interval", default=4)
    types = layer_types(c, L, lambda i: "full_attention" if (i + 1) % interval == 0 else "linear_attention")
    n_full = sum(t == "full_attention" for t in types)
    n_lin = L - n_full
    hk, hv = c.int("linear_num_key_heads"), c.int("linear_num_value_heads")
    dk, dv = c.int("linear_key_head_dim"), c.int("linear_value_head_dim")
    kernel = c.int("linear_conv_kernel_dim", default=4)
    conv = 2 * hk * dk + hv * dv
    if model_type == "qwen3_next":
        linear = [Matrix("in_proj_qkvz", h, 2 * hk * dk + 2 * hv * dv, False, LIN_IN, layers=n_lin),
                  Matrix("in_proj_ba", h, 2 * hv, False, LIN_GATE, layers=n_lin)]
    else:
        linear = [Matrix("in_proj_qkv", h, conv, False, LIN_IN, layers=n_lin),
                  Matrix("in_proj_z", h, hv * dv, False, LIN_IN, layers=n_lin),
                  Matrix("in_proj_b", h, hv, False, LIN_GATE, layers=n_lin),
                  Matrix("in_proj_a", h, hv, False, LIN_GATE, layers=n_lin)]
    linear += [Matrix("conv1d", kernel, conv, False, LIN_CONV, is_linear=False, layers=n_lin),
               Matrix("out_proj", hv * dv, h, False, LIN_OUT, layers=n_lin)]
    gated = c.bool("attn_output_gate", True)
    full = [Matrix("q_proj", h, heads * d * (2 if gated else 1), False, ATTN_Q, layers=n_full),
            Matrix("k_proj", h, kv_heads * d, False, ATTN_K, layers=n_full),
            Matrix("v_proj", h, kv_heads * d, False, ATTN_V, layers=n_full),
            Matrix("o_proj", heads * d, h, False, ATTN_O, layers=n_full)]
    lin_norms = [Norm("linear_attn.dt_bias", hv, False, layers=n_lin), Norm("linear_attn.A_log", hv, False, layers=n_lin),
                 Norm("linear_attn.norm", dv, False, layers=n_lin)]
    full_norms = [Norm("self_attn.q_norm", d, False, layers=n_full), Norm("self_attn.k_norm", d, False, layers=n_full)]
    common_norms = [Norm("input_layernorm", h, False), Norm("post_attention_layernorm", h, False)]
    experts = c.int("num_experts", default=0, allow_zero=True)
    if experts:
        width = c.int("moe_intermediate_size")
        shared_width = c.int("shared_expert_intermediate_size", default=0, allow_zero=True)
        mlp = _experts(c, h, experts, c.int("num_experts_per_tok"), width, L) + \
            (_shared(h, shared_width, L, "shared_expert", gated=True) if shared_width else [])
    else:
        width, shared_width = 0, 0
        i = c.int("intermediate_size")
        mlp = [Matrix("mlp.gate_proj", h, i, False, MLP_GATE), Matrix("mlp.up_proj", h, i, False, MLP_UP),
               Matrix("mlp.down_proj", i, h, False, MLP_DOWN)]
    kinds = tuple(k for k in (
        LayerKind("linear", n_lin, LINEAR, matrices=tuple(linear + mlp), norms=tuple(lin_norms + common_norms)),
        LayerKind("full", n_full, FULL, matrices=tuple(full + mlp), norms=tuple(full_norms + common_norms)),
    ) if k.layers)
    return dict(
        hidden_size=h, intermediate_size=c.int("intermediate_size", default=width), num_heads=heads,
        num_kv_heads=kv_heads, head_dim=d, matrices=tuple(linear + full + mlp),
        norms=tuple(lin_norms + full_norms + common_norms), final_norm=Norm("norm", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False), num_experts=experts,
        experts_per_token=c.int("num_experts_per_tok", default=0, allow_zero=True), expert_intermediate_size=width,
        shared_expert_size=shared_width, norm_topk=c.bool("norm_topk_prob", True),
        dropout=c.float("attention_dropout", 0.0) or 0.0,
        rotary_dim=int(d * (c.float("partial_rotary_factor", 0.25) or 0.25)), kinds=kinds,
        first_kind=0 if types[0] == "linear_attention" or not n_lin else 1,
        order=tuple(0 if t == "linear_attention" or not n_lin else 1 for t in types) if len(kinds) > 1 else (), qk_norm=True, norm_kind="gemma",
        norm_fp32_product=True, output_gate=gated, linear_attention=(hk, hv, dk, dv, kernel),
        note="linear-attention layers modelled as transformers' torch fallback of the gated delta rule "
             "(flash-linear-attention's kernels save less)",
    )
