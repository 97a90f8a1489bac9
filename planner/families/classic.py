"""The earlier families with fused or differently named projections: gpt2 and gpt_bigcode, gpt_neox,
falcon, phi, stablelm; and BLOOM and the original Qwen (``qwen``, remote code, which transformers
cannot build: its modules are read from its published modelling code)."""

from __future__ import annotations

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_QKV,
    ATTN_V,
    MLP_DOWN,
    MLP_GATE,
    MLP_UP,
    Matrix,
    Norm,
)
from fitplan.families.config import Config, divide, heads_of

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


def phi(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = heads_of(c, h)
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


def stablelm(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads, kv_heads, d = heads_of(c, h)
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


def gpt2(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    d = divide(c, h, heads, "n_embd / n_head")
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


def gpt_neox(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    i = c.int("intermediate_size")
    heads = c.int("num_attention_heads")
    d = divide(c, h, heads, "hidden_size / heads")
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


def falcon(c: Config, model_type: str) -> dict[str, Any]:
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads", "n_head")
    d = divide(c, h, heads, "hidden_size / heads")
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




def bloom(c: Config, model_type: str) -> dict[str, Any]:
    """BLOOM: LayerNorm on the embeddings, a fused query_key_value with biases, ALiBi positions (no
    rotary tables), a GELU MLP of 4h; eager attention only in transformers 5.24."""
    h = c.int("hidden_size", "n_embed")
    heads = c.int("n_head", "num_attention_heads")
    d = divide(c, h, heads, "hidden_size / n_head")
    matrices = (
        Matrix("query_key_value", h, 3 * h, True, ATTN_QKV),
        Matrix("dense", h, h, True, ATTN_O),
        Matrix("dense_h_to_4h", h, 4 * h, True, MLP_UP),
        Matrix("dense_4h_to_h", 4 * h, h, True, MLP_DOWN),
    )
    return dict(
        hidden_size=h, intermediate_size=4 * h, num_heads=heads, num_kv_heads=heads, head_dim=d,
        matrices=matrices, norms=(Norm("input_layernorm", h, True), Norm("post_attention_layernorm", h, True)),
        final_norm=Norm("ln_f", h, True), embedding_norm=Norm("word_embeddings_layernorm", h, True),
        tie_word_embeddings=c.bool("tie_word_embeddings", True), norm_kind="layer", gated_mlp=False,
        dropout=max(c.float("attention_dropout", 0.0) or 0.0, c.float("hidden_dropout", 0.0) or 0.0),
        rotary_dim=0, alibi=True, activation="bloom_gelu", attention_kernels=("eager",),
        max_positions=c.int("seq_length", "max_position_embeddings", default=None),
    )


def qwen_v1(c: Config, model_type: str) -> dict[str, Any]:
    """The original Qwen (``model_type: qwen``): a fused c_attn with biases, c_proj, and an MLP whose
    two input projections w1 (up) and w2 (gate) are half of ``intermediate_size`` each (Qwen-7B's
    modeling_qwen.py: ``self.w1 = nn.Linear(hidden, ff_dim_in)`` with ``ff_dim_in = intermediate_size // 2``)."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    d = c.int("kv_channels", default=0, allow_zero=True) or divide(c, h, heads, "hidden_size / heads")
    i = divide(c, c.int("intermediate_size"), 2, "intermediate_size / 2 (Qwen's w1 and w2 are half of it)")
    bias = not c.bool("no_bias", True)
    matrices = (
        Matrix("c_attn", h, 3 * heads * d, True, ATTN_QKV),
        Matrix("attn.c_proj", heads * d, h, bias, ATTN_O),
        Matrix("w2", h, i, bias, MLP_GATE),
        Matrix("w1", h, i, bias, MLP_UP),
        Matrix("mlp.c_proj", i, h, bias, MLP_DOWN),
    )
    return dict(
        hidden_size=h, intermediate_size=i, num_heads=heads, num_kv_heads=heads, head_dim=d, matrices=matrices,
        norms=(Norm("ln_1", h, False), Norm("ln_2", h, False)), final_norm=Norm("ln_f", h, False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        dropout=max(c.float("attn_dropout_prob", 0.0) or 0.0, c.float("emb_dropout_prob", 0.0) or 0.0),
        rotary_dim=int(d * (c.float("rotary_pct", 1.0) or 1.0)), attention_kernels=("eager", "sdpa", "flash"),
        note="the original Qwen runs remote code transformers cannot build here: planned from its modules, "
             "not validated",
    )
