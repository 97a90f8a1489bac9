"""ModelShape: what every layer of a causal LM holds, and the facts of its forward pass that memory
depends on. ``fitplan.families`` reads a ``config.json`` into one, an adapter per family.

A ``ModelShape`` lists the matrices of the decoder layers under the names transformers gives their
modules (``q_proj``, ``c_attn``, ``query_key_value``, ...), the norms and other 1-D parameters, the
embeddings and the output head, plus the few facts about the forward pass that decide what is saved
for backward (norm kind, gated MLP, fused projections, dropout, rotary or learned positions). Models
whose layers differ (sliding and global attention, dense and MoE layers, linear-attention and
attention layers) list their ``kinds``: each a number of layers with its attention and, where it
differs, its own matrices and norms; a matrix or norm then says how many layers hold it.

Parameter counts follow transformers 5 exactly (tests compare every preset with the count a model
built on the meta device reports, tied weights tied). MoE experts are the fused 3-D parameters of
transformers 5, which are not ``nn.Linear`` modules.
"""

from __future__ import annotations

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
    is_linear: bool = True   # an nn.Linear / Conv1D module that peft and bitsandbytes can wrap
    layers: int | None = None  # how many decoder layers hold it (None: every layer)
    dtype: str | None = None   # kept in this dtype whatever the model's (an fp32 router)

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
    """A norm's weight (and bias), or another 1-D parameter of a layer (attention sinks, A_log)."""

    name: str
    size: int
    bias: bool
    copies: int = 1  # per-head norms (stablelm's qk_layernorm) are one module per head
    layers: int | None = None  # how many decoder layers hold it (None: every layer)

    @property
    def params(self) -> int:
        return self.copies * self.size * (2 if self.bias else 1)


# attention of a layer kind
FULL, SLIDING, CHUNKED, LINEAR = "full", "sliding", "chunked", "linear"


@frozen
class LayerKind:
    """Some decoder layers alike: their attention, and their own matrices and norms where they
    differ from the model's (None: the model's)."""

    name: str
    layers: int
    attention: str = FULL              # full, sliding (window), chunked (window), linear (a recurrent mixer)
    window: int | None = None
    rope: bool = True
    matrices: tuple[Matrix, ...] | None = None
    norms: tuple[Norm, ...] | None = None


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
    qk_l2: bool = False                   # the q/k norm is a weightless L2 norm, rotary layers only (Llama 4)
    sandwich_norms: bool = False          # norms on the attention and MLP branches' outputs (gemma2)
    eager_mask_kinds: int = 1             # distinct masks eager attention keeps (gemma2: sliding and global)
    shared_eager_mask: bool = True        # eager attention's additive mask is built once and kept for every layer
    attention_kernels: tuple[str, ...] = ("eager", "sdpa", "flash")  # what transformers runs for the family
    legacy_loss: bool = False             # transformers 4 computed this family's loss itself, in the logits' dtype
    max_positions: int | None = None      # the longest sequence the positions cover (RoPE scaling included)
    kinds: tuple[LayerKind, ...] = ()     # layers that differ (empty: every layer alike)
    first_kind: int = 0                   # the kind of layer 0
    order: tuple[int, ...] = ()           # each layer's kind, bottom up (empty: layer 0's, then the rest)
    expert_intermediate_size: int = 0     # each routed expert's width (MoE)
    shared_expert_size: int = 0           # the shared experts' total width (0: none)
    router: str = "softmax"               # MoE routing: "softmax" over all experts, "topk_softmax" (gpt-oss),
                                          # "sigmoid" (DeepSeek-V3, GLM-4.5), "dense" (Llama 4: every expert)
    norm_topk: bool = False               # the top-k routing weights are divided by their sum
    norm_fp32_product: bool = False       # the norm multiplies its weight in fp32 (Gemma 3, OLMo 2, gpt-oss)
    norm_placement: str = "pre"           # "pre", or "post" (OLMo 2: norms on the branches' outputs only)
    attention_sinks: bool = False         # a learned sink per head (gpt-oss)
    alibi: bool = False                   # ALiBi positions (BLOOM)
    embedding_norm: Norm | None = None    # a norm on the embeddings (BLOOM)
    v_head_dim: int = 0                   # value head width where it differs from the query's (MLA)
    o_proj_copy: bool = False             # SDPA's output is not laid out as o_proj's input: a copy (GLM-4.5, Phi-3)
    output_gate: bool = False             # attention output times a sigmoid gate (Qwen3-Next)
    linear_attention: tuple[int, int, int, int, int] | None = None  # Gated DeltaNet: Hk, Hv, dk, dv, conv kernel
    vision_parameters: int = 0            # a multimodal checkpoint's vision tower and projector, where loaded
    vision_tensors: int = 0
    checkpoint_base: str = ""             # how the checkpoint stores its linears (quantization_config): a --base name
    note: str = ""                        # what the family reader could not model, for the output

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

    def held_by(self, m: Matrix | Norm) -> int:
        """How many decoder layers hold ``m``."""
        return self.num_layers if m.layers is None else m.layers

    @property
    def layer_params(self) -> int:
        """Parameters of the decoder layers, per layer (an average where layers differ)."""
        return self.decoder_params // self.num_layers

    @property
    def decoder_params(self) -> int:
        return sum(self.held_by(m) * m.params for m in self.matrices) + sum(self.held_by(n) * n.params
                                                                            for n in self.norms)

    @property
    def parameter_count(self) -> int:
        return (
            self.embedding_params
            + self.position_params
            + self.decoder_params
            + self.final_norm.params
            + self.lm_head_params
            + (self.embedding_norm.params if self.embedding_norm else 0)
            + self.vision_parameters
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
        layers = sum(self.held_by(m) * (1 + (1 if m.bias else 0)) for m in self.matrices)
        layers += sum(self.held_by(n) * n.copies * (1 + (1 if n.bias else 0)) for n in self.norms)
        head = (0 if self.tie_word_embeddings else 1) + (1 if self.lm_head_bias else 0)
        extra = (1 + (1 if self.embedding_norm.bias else 0)) if self.embedding_norm else 0
        return (
            1
            + (1 if self.position_embeddings else 0)
            + layers
            + 1
            + (1 if self.final_norm.bias else 0)
            + head
            + extra
            + self.vision_tensors
        )

    def kind_of(self, index: int) -> LayerKind:
        """The kind of one layer kind's index (a whole-model kind where every layer is alike)."""
        return self.kinds[index] if self.kinds else LayerKind("all", self.num_layers)

    @property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        """The kinds of layers (one kind, every layer, where they are alike)."""
        return self.kinds or (LayerKind("all", self.num_layers, SLIDING if self.sliding_window else FULL,
                                        self.sliding_window),)

    def kind_matrices(self, kind: LayerKind) -> tuple[Matrix, ...]:
        return kind.matrices if kind.matrices is not None else self.matrices

    def kind_norms(self, kind: LayerKind) -> tuple[Norm, ...]:
        return kind.norms if kind.norms is not None else self.norms




def shape_from_config(raw: Any, name: str = "config.json") -> ModelShape:
    """Read a Hugging Face ``config.json`` dictionary into a ModelShape (``fitplan.families``)."""
    from fitplan.families import shape_from_config as read

    return read(raw, name)
