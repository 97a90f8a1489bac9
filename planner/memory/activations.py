"""Activations: the bytes each decoder layer saves for backward, by tracing the layer's ops.

Rather than one closed formula per family, the module replays a layer's forward pass on symbolic
tensors. Each op follows PyTorch's autograd rules for what it saves (tools/autograd/
derivatives.yaml): ``mm`` saves its input when the weight trains and the weight when the input
needs a gradient; ``pow``/``silu``/``gelu`` save their input; ``mul`` saves each operand the other
needs; ``log_softmax``/``softmax``/``rsqrt``/``tanh`` save their output; ``native_layer_norm`` saves
input, mean and rstd; dropout saves a one-byte mask; SDPA kernels save q, k, v, the output and an
fp32 logsumexp per head and token. A tensor saved twice, or a view of a saved tensor, counts once.
Whether a tensor needs a gradient flows from the trainable parameters, as in autograd, so the
same trace covers full fine-tuning, LoRA on any targets, adapters, frozen layers and layer 0 of a
PEFT model (whose input, the frozen embedding, needs no gradient).

Sizes are linear forms in tokens ``T = batch x (seq + virtual tokens)``, attention scores
``batch x heads x seq x kv_seq`` and masks ``seq x kv_seq``, so the trace runs once per shape
and the same numbers serve any batch and sequence.

Kernels: ``sdpa`` on CUDA and ``flash`` run flash/memory-efficient kernels (q, k, v, out,
logsumexp); ``sdpa`` on a CPU runs ``_scaled_dot_product_flash_attention_for_cpu``, which saves the
same set; with attention dropout SDPA falls back to the math path, which saves like eager.
``eager`` saves the fp32 softmax (4 bytes per score), its cast to the compute dtype and, under
GQA, the repeated keys and values.

Gradient checkpointing (transformers' non-reentrant ``torch.utils.checkpoint``): each layer keeps
its input hidden states; in backward one layer at a time is recomputed, its full saved set live.

``--compile`` (torch.compile of each decoder layer, as torchtune and unsloth compile them): AOTAutograd's
min-cut partitioner saves what the backward's matrix products and attention need and recomputes the
pointwise ops from their inputs. Measured on CPU Inductor (torch 2.13; tiny Llama, bf16 and fp32,
LoRA q,v / all-linear and full fine-tuning, every saved tensor by ``saved_tensors_hooks``), three
changes account for every byte: an RMSNorm saves its input in its own dtype and the fp32 rsqrt, not
the fp32 copy nor the normalised tensor for its weight's gradient; a gated MLP saves the gate and up
projections, not the activation; identical casts of one tensor are one tensor (the fp32 input of
every LoRA adapter on the same hidden states).

``--packing packed``: rows of packed sequences whose position ids restart make transformers 5
materialise a block-causal mask (``masking_utils.py`` 864-870, 991-1001), so SDPA runs as with a
window: the mask saved and keys and values repeated to every head.

Known limitations: one layer layout per family (no per-layer differences apart from layer 0);
sliding-window attention is not cheaper than full attention in any kernel here (eager masks the
full square); gemma2 runs eager only (transformers 5.23 has no SDPA path for it).
"""

from __future__ import annotations

from collections.abc import Callable

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_QKV,
    ATTN_V,
    CHUNKED,
    EXPERT_DOWN,
    EXPERT_GATE_UP,
    LINEAR,
    MLP_DOWN,
    MLP_GATE,
    MLP_GATE_UP,
    MLP_UP,
    ROUTER,
    SLIDING,
    LayerKind,
    Matrix,
    ModelShape,
)
from fitplan.families.hybrid import LIN_GATE, LIN_IN, LIN_OUT
from fitplan.families.moe import (
    MLA_KVA,
    MLA_KVB,
    MLA_QA,
    SHARED_DOWN,
    SHARED_GATE,
    SHARED_SCALE,
    SHARED_UP,
)
from fitplan.frozen import frozen
from fitplan.memory.forms import Size
from fitplan.setup import TrainingSetup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


# per-head query/key norms and attention sinks: not the block norms Trace.norm is called for
_NOT_BLOCK_NORMS = ("q_norm", "k_norm", "q_layernorm", "k_layernorm", "sinks")


def activation_bytes(setup: TrainingSetup) -> int:
    """Bytes per element of the activations a layer computes (the method decides: QLoRA's upcast
    makes them fp32)."""
    return setup.activation_bytes


class TraceTensor:
    """A symbolic tensor: its size as a linear form and whether it needs a gradient."""

    __slots__ = ("size", "rg")

    def __init__(self, size: Size, rg: bool):
        self.size = size
        self.rg = rg


class Trace:
    """Replays ops on symbolic tensors and collects what autograd would save.

    Methods add what they save through their hooks (``Method.trace_linear``,
    ``Method.trace_block_output``), with the primitives below.
    """

    def __init__(self, shape: ModelShape, setup: TrainingSetup, trainable_base: bool | None = None,
                 beyond_window: bool = False):
        self.shape = shape
        self.setup = setup
        self.method = setup.method
        self.a = activation_bytes(setup)                             # activation bytes per element
        # The residual stream's dtype: the embedding's. Mixed precision keeps the embedding (and
        # norms) in fp32, so hidden states stay fp32 between the bf16 outputs of the matrix products.
        self.r = 4 if setup.mixed else self.a
        self.w = 4 if setup.weight_dtype == "fp32" else 2            # parameter bytes per element
        self.trainable_base = setup.method.trains_base if trainable_base is None else trainable_base
        self.beyond_window = beyond_window   # sequences longer than the sliding or chunked windows
        self.saved: dict[int, Size] = {}
        # (saved so far, what is alive beyond it): a method's forward temporaries at that point
        self.transients: list[tuple[Size, Size]] = []
        self.attention_saved = Size()
        self.norm_names: list[str] = []   # the layer's norms in call order, for Method.trains_norm
        self.kept: dict[int, Size] = {}   # saved outside autograd's saved tensors: checkpointing keeps them
        self._keep: list[TraceTensor] = []
        self._anon = 0
        self.compiled = setup.compile
        self._casts: dict[tuple[int, int], TraceTensor] = {}
        self._memo: dict[int, Any] = {}

    def memo(self, owner: object, make: Callable[[], Any]) -> Any:
        """A value computed once per trace for ``owner`` (a method's set of wrapped matrices)."""
        key = id(owner)
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # -- primitives
    def new(self, size: Size, rg: bool) -> TraceTensor:
        t = TraceTensor(size, rg)
        self._keep.append(t)  # keep ids unique for the trace's lifetime
        return t

    def tok(self, elements: int, nbytes: int, rg: bool) -> TraceTensor:
        return self.new(Size(token=elements * nbytes), rg)

    def save(self, *tensors: TraceTensor) -> None:
        for t in tensors:
            self.saved[id(t)] = t.size

    def save_size(self, size: Size) -> None:
        """Save a tensor that no other op refers to (a mask, a softmax output)."""
        self._anon -= 1
        self.saved[self._anon] = size

    def keep(self, *tensors: TraceTensor) -> None:
        """Save tensors that a kernel keeps on its autograd context rather than through
        ``save_for_backward`` (bitsandbytes int8's input): checkpointing cannot drop them."""
        self.save(*tensors)
        for t in tensors:
            self.kept[id(t)] = t.size

    def transient(self, size: Size) -> None:
        """Mark a forward moment: ``size`` is alive beyond what the layer has saved so far (a
        method's weight-sized temporaries, freed before its module returns)."""
        self.transients.append((self.total(), size))

    def cast(self, x: TraceTensor, nbytes: int, elements: int) -> TraceTensor:
        """``x.to(dtype)``: the same tensor when the dtype does not change (and, compiled, one cast of a
        tensor to a dtype however often it is asked for)."""
        if nbytes == self.a_of(x, elements):
            return x
        if not self.compiled:
            return self.tok(elements, nbytes, x.rg)
        key = (id(x), nbytes)
        if key not in self._casts:
            self._casts[key] = self.tok(elements, nbytes, x.rg)
        return self._casts[key]

    @staticmethod
    def a_of(x: TraceTensor, elements: int) -> int:
        return x.size.token // elements if elements else 0

    def dropout(self, x: TraceTensor, elements: int, p: float) -> TraceTensor:
        if p <= 0:
            return x
        nbytes = self.a_of(x, elements)
        out = self.tok(elements, nbytes, x.rg)
        if x.rg:
            # CUDA's native_dropout keeps a bool mask; the CPU kernel a scaled mask in x's dtype
            self.save(self.tok(elements, 1 if self.setup.device == "cuda" else nbytes, False))
        return out

    # -- layers
    def rms_norm(self, x: TraceTensor, size: int, gemma: bool = False, groups: int = 1,
                 trains: bool = False, weightless: bool = False) -> TraceTensor:
        """transformers' RMSNorm: fp32 upcast, pow, mean, rsqrt, mul, cast back, times weight.

        The output takes the input's dtype (fp32 on an fp32 residual stream). ``groups``: one rsqrt
        per group (per-head q/k norms). Gemma's ``1 + weight`` and the fp32-product norms (OLMo 2,
        gpt-oss, Gemma 3, Qwen3-Next) multiply in fp32 and save the fp32 normalised tensor for the
        weight's gradient: 8x + 4 bytes per element where Llama's saves 6x + 4 (measured, 5.24).
        ``weightless``: Llama 4's L2 norm of queries and keys (fp32 copy and rsqrt only).
        """
        out_b = self.a_of(x, size)
        w_rg = self.trainable_base or trains
        if self.compiled:
            # Inductor recomputes the upcast and the normalised tensor from the input and the rsqrt
            if x.rg or w_rg:
                self.save(x, self.tok(groups, 4, False))
            return self.tok(size, out_b, x.rg or w_rg)
        x32 = self.cast(x, 4, size)
        r = self.tok(groups, 4, x.rg)
        if x.rg:
            self.save(x32, r)                      # pow saves x32; mul(x32, r) saves both
        n32 = self.tok(size, 4, x.rg)              # x32 * rsqrt
        if weightless:
            return self.cast(n32, out_b, size)
        if gemma or self.shape.norm_fp32_product:
            # output = n32 * (1 + weight).float() (Gemma) or weight.float(), then cast; the product saves
            # the weight term (a constant) for n32's gradient and n32 for the weight's
            if x.rg and gemma:
                self.save_size(Size(const=4 * size))
            if w_rg:
                self.save(n32)
            return self.cast(self.tok(size, 4, x.rg or w_rg), out_b, size)
        n = self.cast(n32, out_b, size)
        if w_rg:
            self.save(n)                           # weight * n saves n for the weight's gradient
        return self.tok(size, out_b, x.rg or w_rg)

    def layer_norm(self, x: TraceTensor, size: int, trains: bool = False) -> TraceTensor:
        w_rg = self.trainable_base or trains
        if x.rg or w_rg:
            # native_layer_norm saves input, mean and rstd; the CPU kernel keeps mean and rstd in
            # the input's dtype, CUDA's in fp32
            stat = 4 if self.setup.device == "cuda" else self.a_of(x, size)
            self.save(x, self.tok(2, stat, False))
        return self.tok(size, self.a_of(x, size), x.rg or w_rg)

    def norm(self, x: TraceTensor, size: int) -> TraceTensor:
        # the method may train this norm's weight (LN tuning): it is the next of the layer's norms
        name = self.norm_names.pop(0) if self.norm_names else ""
        trains = bool(name) and self.method.trains_norm(self.shape, self.setup, name)
        if self.shape.norm_kind == "layer":
            return self.layer_norm(x, size, trains)
        return self.rms_norm(x, size, gemma=self.shape.norm_kind == "gemma", trains=trains)

    def linear(self, x: TraceTensor, m: Matrix) -> TraceTensor:
        """``y = x W^T (+ b)``, plus whatever the method adds around the module."""
        w_rg = self.trainable_base
        # under autocast each matrix product takes its own compute-dtype copy of an fp32 input
        xin = self.tok(m.in_features, self.a, x.rg) if (self.setup.mixed and self.a_of(x, m.in_features) != self.a) else x
        if w_rg:
            self.save(xin)
        out_rg = x.rg or w_rg
        if self.method.trace_linear(self, x, m):
            out_rg = True
        if self.setup.mixed and x.rg:
            # autocast's compute-dtype copy of the weight, kept for the input's gradient
            self.save_size(Size(const=m.in_features * m.out_features * m.copies * self.a))
        return self.tok(m.out_features, self.a, out_rg)

    def attention(self, q: TraceTensor, k: TraceTensor, v: TraceTensor, kind: LayerKind | None = None,
                  v_dim: int | None = None) -> TraceTensor:
        """Returns the input of the output projection.

        A sliding or chunked layer whose window is shorter than the sequence gets a materialised mask:
        SDPA then saves it (2 bytes per batch x seq x kv) and, as transformers turns GQA off with a
        mask, keys and values repeated to every head (measured on CPU kernels, transformers 5.24);
        FlashAttention 2 takes the window itself; eager computes every score anyway. gpt-oss's sinks
        add a column to the softmax (10 bytes per head and token). Value heads wider or narrower than
        the query's (MLA) send CPU SDPA to its fp32 math path.
        """
        s = self.shape
        nh, d = s.num_heads, s.head_dim
        dv = v_dim or d
        rg = q.rg or k.rg or v.rg
        kernel = self.setup.attention
        dropout = s.dropout > 0
        out = self.tok(nh * dv, self.a, rg)
        prefix = self.setup.prefix_tokens
        windowed = self.beyond_window and kind is not None and kind.attention in (SLIDING, CHUNKED) and kind.window
        windowed = windowed or self.setup.packing == "packed"   # a block-causal mask over packed sequences
        math_path = (dropout or dv != d and self.setup.device == "cpu") and kernel == "sdpa" \
            and self.setup.device == "cpu"
        if (prefix or windowed) and kernel == "sdpa" and not math_path:
            # peft's prefix keys/values arrive as a cache, and a window needs its own mask:
            # transformers materialises the mask (batch x seq x kv_seq), so SDPA runs without GQA on
            # keys and values repeated to every head (over seq + prefix), and saves the mask too
            kv_rep = Size(token=self.a * nh * d, batch=self.a * nh * d * prefix)
            if rg:
                self.save(q, out, self.tok(nh, 4, False))
                self.save_size(kv_rep + kv_rep + Size(bmask=self.a))
            return out
        if kernel in ("sdpa", "flash") and not math_path:
            if rg:
                self.save(q, k, v, out, self.tok(nh, 4, False))   # logsumexp, fp32 per head and token
            return out
        if math_path:
            # CPU SDPA with dropout (or MLA's unequal head widths) runs the math path in fp32: scaled
            # q and k, v, softmax output, with dropout its mask and the dropped probabilities (4 bytes
            # each per score); keys and values include a prefix's virtual tokens
            if rg:
                kv = 4 * nh * (d + dv) if dv != d else 4 * 2 * s.kv_width
                self.save_size(Size(token=4 * nh * d + kv, batch=kv * prefix, score=12 if dropout else 4))
            return self.tok(nh * dv, self.a, rg)
        # eager (or SDPA's math path): scores = q k^T, softmax in fp32, cast, dropout, probs v
        if s.alibi and q is k:
            # BLOOM reshapes its fused output to (batch x heads, seq, head): q, k and v are copies
            q, k, v = (self.tok(nh * d, self.a, q.rg) for _ in range(3))
        gqa = s.num_kv_heads != nh
        k_rep = self.tok(nh * d, self.a, k.rg) if gqa else k
        v_rep = self.tok(nh * dv, self.a, v.rg) if gqa else v
        if rg:
            # matmul saves each operand only for the other's gradient
            if k_rep.rg:
                self.save(q)
            if q.rg:
                self.save(k_rep)
            scores = Size(score=4 if s.softmax_fp32 else self.a)
            if s.attn_softcap:
                # scores / cap -> tanh (saves its output) -> * cap
                scores = scores + Size(score=self.a)
            if s.attention_sinks:
                scores = scores + Size(token=10 * nh)   # the sink column of every head's softmax
            self.save_size(scores)  # fp32 softmax output
            probs = Size(score=self.a) if (self.a != 4 and s.softmax_fp32) else Size()
            if dropout:
                mask = 1 if self.setup.device == "cuda" else self.a
                probs = probs + Size(score=self.a + mask)  # dropout output and mask
            if probs != Size() and v_rep.rg:
                self.save_size(probs)
            self.save(v_rep)
        return self.tok(nh * dv, self.a, rg)        # transpose(1, 2).reshape(): a contiguous copy

    def rope(self, x: TraceTensor, width: int) -> TraceTensor:
        if not self.shape.rotary_dim:
            return x
        return self.tok(width, self.a, x.rg)       # q * cos + rotate_half(q) * sin: a new tensor

    def moe(self, x: TraceTensor, by_role: dict[str, Matrix]) -> TraceTensor:
        """A sparse MLP as transformers 5.24 runs it: ``grouped_mm`` over fused 3-D experts (measured on
        qwen3_moe, gpt_oss, deepseek_v3, glm4_moe, qwen3_next), or Llama 4's dense pass of every token
        through every expert.

        Routers (``ModelShape.router``): "softmax" keeps the fp32 softmax over all E experts (4 E per
        token) and the top-k indices (int64, 8 k); "topk_softmax" (gpt-oss) takes the top-k of the raw
        logits and a softmax over those k in the compute dtype (2 k); "sigmoid" (DeepSeek-V3, GLM-4.5)
        an fp32 sigmoid over E. Normalised top-k weights save the sum and the quotient (4 + 4 k, fp32).
        An fp32 router weight computes on an fp32 copy of its input (4 h, kept when it trains) and
        hands fp32 routing weights to the experts (4 bytes per routed row instead of 2).

        ``grouped_mm`` dispatch, per routed row (k per token): three int64 permutations (24 k per token;
        8 k more for the gather of trained expert biases), the gathered input (2 h, when the experts train), the fused
        gate/up output (4 I: the activation keeps its half as a view of the whole storage), the
        activation (2 I), the product (2 I, when the experts train), the expert output (2 h) and its
        routing weight; gpt-oss's clamped SwiGLU keeps 6 I more; the group offsets (int32, 4 E) once.

        Llama 4 ("dense"): a score column per expert (2 E), the hidden state repeated E times (2 h E),
        its product with the scores (2 h E, when the experts train), then the expert MLP over all E
        copies (4 I + 2 I + 2 I when training, per copy). Shared experts run as a dense MLP on the same
        input; Qwen's are scaled by a sigmoid gate (its output and the shared output saved).
        """
        s = self.shape
        h, width, k, E = s.hidden_size, s.expert_intermediate_size or s.intermediate_size, s.experts_per_token, s.num_experts
        a = self.a
        router = by_role[ROUTER]
        fp32_router = router.dtype == "fp32"
        logits = self.linear(self.tok(h, 4, x.rg) if fp32_router else x, router)
        rg_route = logits.rg
        gu_trains, down_trains = self.method.trace_experts(self, by_role[EXPERT_GATE_UP], by_role[EXPERT_DOWN], x.rg)
        w_gu, w_down = self.trainable_base or gu_trains, self.trainable_base or down_trains
        w_rg = w_gu or w_down
        rg = x.rg or w_rg
        weight_bytes = 4 if fp32_router else a
        if rg_route:
            if s.router == "topk_softmax":
                self.save_size(Size(token=8 * k + a * k))
            else:
                self.save_size(Size(token=4 * E + 8 * k))
            if s.norm_topk:
                self.save_size(Size(token=4 + 4 * k))
        if s.router == "dense":
            rows = Size()
            if rg_route:
                rows = rows + Size(token=a * E + a * h * E)          # score columns, the repeated input
            if w_gu:
                rows = rows + Size(token=a * h * E)                  # bmm input: the routed input
            if w_down:
                rows = rows + Size(token=a * width * E)              # bmm input: act * up
            if rg or rg_route:
                rows = rows + Size(token=3 * a * width * E)          # gate/up output, activation
            self.save_size(rows)
        else:
            chain = x.rg or w_rg            # the experts' outputs need a gradient
            rows = Size()
            if x.rg:
                rows = rows + Size(token=16 * k)                       # int64 gather indices of the input
            if chain or rg_route:
                rows = rows + Size(token=8 * k, const=4 * E)           # the inverse permutation; group offsets
            if chain:
                rows = rows + Size(token=k * weight_bytes)             # routing weights, for the outputs' gradient
            if rg_route:
                rows = rows + Size(token=k * a * h)                    # expert outputs, for the weights' gradient
            if w_gu:
                rows = rows + Size(token=k * a * h)                    # gathered input, for gate_up's weight
                if by_role[EXPERT_GATE_UP].bias:
                    rows = rows + Size(token=8 * k)                    # sorted expert ids, for the bias gather
            if chain:
                rows = rows + Size(token=k * a * 3 * width)            # gate/up output, activation
                if s.router == "topk_softmax":
                    rows = rows + Size(token=k * 3 * a * width)        # gpt-oss's clamps and glu
            if w_down:
                rows = rows + Size(token=k * a * width)                # act * up, for down's weight
            self.save_size(rows)
        if SHARED_GATE in by_role:
            shared = self._gated(x, by_role[SHARED_GATE], by_role[SHARED_UP], by_role[SHARED_DOWN],
                                 by_role[SHARED_GATE].out_features)
            if SHARED_SCALE in by_role:
                gate = self.linear(x, by_role[SHARED_SCALE])
                if gate.rg or shared.rg:
                    self.save(self.tok(1, a, True), shared)   # sigmoid output and the shared output
        return self.tok(h, a, rg or rg_route)

    def _gated(self, x: TraceTensor, gate_m: Matrix, up_m: Matrix, down_m: Matrix, i: int) -> TraceTensor:
        gate, up = self.linear(x, gate_m), self.linear(x, up_m)
        act = self.gated_activation(gate, up, i)
        return self.linear(self.tok(i, self.a, act.rg or up.rg), down_m)

    def gated_activation(self, gate: TraceTensor, up: TraceTensor, i: int) -> TraceTensor:
        """``act(gate)``, with what ``act(gate) * up`` saves: silu / gelu its input, the product each
        operand the other's gradient needs; compiled, the activation is recomputed from the gate."""
        if self.compiled:
            if gate.rg or up.rg:
                self.save(gate)
            if gate.rg:
                self.save(up)
            return self.tok(i, self.a, gate.rg)
        if gate.rg:
            self.save(gate)                 # silu / gelu saves its input
        act = self.tok(i, self.a, gate.rg)
        if up.rg:
            self.save(act)
        if act.rg:
            self.save(up)
        return act

    def mlp(self, x: TraceTensor, by_role: dict[str, Matrix]) -> TraceTensor:
        s = self.shape
        if ROUTER in by_role:
            return self.moe(x, by_role)
        i = by_role[MLP_DOWN].in_features
        if MLP_GATE_UP in by_role:              # phi3: one projection, chunked (views share storage)
            gu = self.linear(x, by_role[MLP_GATE_UP])
            gate = up = gu
        elif MLP_GATE in by_role:
            gate = self.linear(x, by_role[MLP_GATE])
            up = self.linear(x, by_role[MLP_UP])
        else:
            gate, up = None, self.linear(x, by_role[MLP_UP])
        if gate is not None:
            act = self.gated_activation(gate, up, i)
            h = self.tok(i, self.a, act.rg or up.rg)
        else:
            if up.rg:
                self.save(up)                   # gelu saves its input
                if s.activation == "gelu_new":
                    # transformers' NewGELUActivation is written in Python ops: pow, tanh and two
                    # products save three more tensors of the intermediate size
                    self.save_size(Size(token=3 * i * self.a))
            h = self.tok(i, self.a, up.rg)
        return self.linear(h, by_role[MLP_DOWN])

    def layer(self, x: TraceTensor, kind: LayerKind | None = None) -> TraceTensor:
        s = self.shape
        kind = kind or s.layer_kinds[0]
        by_role = {m.role: m for m in s.kind_matrices(kind)}
        h_size = s.hidden_size
        post = s.norm_placement == "post"
        self.norm_names = [n.name for n in s.kind_norms(kind) if n.name not in _NOT_BLOCK_NORMS]
        # attention projections; gpt2's two c_proj share a name, not a role
        n1 = x if post else self.norm(x, h_size)
        if kind.attention == LINEAR:
            o = self.linear_attention(n1, by_role)
        elif MLA_KVA in by_role:
            o = self.latent_attention(n1, by_role, kind)
        else:
            if ATTN_QKV in by_role:
                q = k = v = self.linear(n1, by_role[ATTN_QKV])   # views of one storage
            else:
                q = self.linear(n1, by_role[ATTN_Q])
                k = self.linear(n1, by_role[ATTN_K])
                v = self.linear(n1, by_role[ATTN_V])
            if s.qk_norm and (kind.rope or not s.qk_l2):
                gemma = s.norm_kind == "gemma"
                per_head = post is False
                q = self.rms_norm(q, s.q_width, gemma, s.num_heads if per_head else 1, weightless=s.qk_l2)
                k = self.rms_norm(k, s.kv_width, gemma, s.num_kv_heads if per_head else 1, weightless=s.qk_l2)
            if s.rotary_dim and kind.rope:
                q = self.rope(q, s.q_width)
                k = self.rope(k, s.kv_width)
            attn_in = self.attention(q, k, v, kind)
            if s.output_gate:
                # Qwen3-Next: a contiguous copy of the output times a sigmoid of q_proj's gate half
                if attn_in.rg:
                    self.save(self.tok(s.q_width, self.a, True), self.tok(s.q_width, self.a, True))
                attn_in = self.tok(s.q_width, self.a, attn_in.rg)
            elif s.o_proj_copy and self.setup.attention != "eager":
                # queries head-major (partial RoPE by cat) or sliced from a fused projection: SDPA's
                # output follows their layout, and o_proj's input is a contiguous copy of it
                attn_in = self.tok(s.q_width, self.a, attn_in.rg)
            o = self.linear(attn_in, by_role[ATTN_O])
            o = self.method.trace_attention_output(self, n1, o)
        self.attention_saved = self.total()       # what the layer saved up to its attention's output
        o = self.dropout(o, h_size, s.dropout)
        o = self.method.trace_block_output(self, o)
        if s.parallel_residual:
            n2 = n1 if len(s.kind_norms(kind)) == 1 else self.norm(x, h_size)
            m = self.mlp(n2, by_role)
            m = self.dropout(m, h_size, s.dropout)
            m = self.method.trace_block_output(self, m)
            return self.tok(h_size, self.r, x.rg or o.rg or m.rg)
        if s.sandwich_norms or post:
            o = self.norm(o, h_size)             # post_attention_layernorm on the branch
        h = self.tok(h_size, self.r, x.rg or o.rg)
        n2 = h if post else self.norm(h, h_size)
        m = self.mlp(n2, by_role)
        if s.sandwich_norms or post:
            m = self.norm(m, h_size)             # post_feedforward_layernorm
        m = self.dropout(m, h_size, s.dropout)
        m = self.method.trace_block_output(self, m)
        return self.tok(h_size, self.r, h.rg or m.rg)

    def latent_attention(self, x: TraceTensor, by_role: dict[str, Matrix], kind: LayerKind) -> TraceTensor:
        """DeepSeek's multi-head latent attention: queries through the q_a/q_b bottleneck (or q_proj),
        keys and values from kv_a (a latent of ``kv_lora_rank`` and a shared rotary key) through its
        norm and kv_b; heads of nope + rope width, values of ``v_head_dim``."""
        s = self.shape
        nh, qd, dv = s.num_heads, s.head_dim, s.v_head_dim or s.head_dim
        if MLA_QA in by_role:
            qa = self.linear(x, by_role[MLA_QA])
            q = self.linear(self.rms_norm(qa, by_role[MLA_QA].out_features), by_role[ATTN_Q])
        else:
            q = self.linear(x, by_role[ATTN_Q])
        kva = self.linear(x, by_role[MLA_KVA])
        latent = by_role[MLA_KVB].in_features
        kv = self.linear(self.rms_norm(self.tok(latent, self.a, kva.rg), latent), by_role[MLA_KVB])
        q = self.tok(nh * qd, self.a, q.rg)                 # cat(q_nope, rope(q_pe)): a new tensor
        k = self.tok(nh * qd, self.a, kv.rg or kva.rg)      # cat(k_nope, rope(k_pe) expanded to every head)
        v = self.tok(nh * dv, self.a, kv.rg)                # values: a slice of kv_b's output, made contiguous
        attn_in = self.attention(q, k, v, kind, dv)
        return self.linear(attn_in, by_role[ATTN_O])

    def linear_attention(self, x: TraceTensor, by_role: dict[str, Matrix]) -> TraceTensor:
        """A Gated DeltaNet layer (Qwen3-Next, Qwen3.5) as transformers' torch fallback runs it (no
        flash-linear-attention installed): the projections' shared input, the causal conv's input and
        its SiLU (over the sequence and its K - 1 padding), and the chunked delta rule in fp32, whose
        terms per token grow with the value heads (Hv) x the chunk (64) and Hv x (dk + dv), plus one
        recurrent state (Hv dk dv) per chunk; then the gated RMSNorm and out_proj's input. Derived
        term by term from the saved tensors measured on CPU (transformers 5.24), within 0.2%."""
        s = self.shape
        hk, hv, dk, dv, kernel = s.linear_attention
        conv = 2 * hk * dk + hv * dv
        ins = [m for m in by_role.values() if m.role in (LIN_IN, LIN_GATE)]
        outs = [self.linear(x, m) for m in ins]
        rg = any(o.rg for o in outs)
        if rg:
            a, V, chunk = self.a, hv * dv, 64
            per = (2 * a * conv                       # the conv's input and its SiLU's output
                   + a * hv + (4 * chunk + 12) * hv + 8 * hv     # beta, the decays and softplus
                   + 4 * hv * (2 * dk + 1) + 4 * hv * (2 * dk + 1)   # q, k at Hv heads in fp32, normalised, scaled
                   + 20 * hv * dk + 4 * hv * dv + 8 * hv * dk + 4 * hv * dv    # the chunked products
                   + 3 * 4 * chunk * hv                      # pairwise decays, (k beta) k^T, the triangular solve
                   + 4 * hv * dk * dv // chunk               # one recurrent state per chunk
                   + 16 * V + 4 * hv)                        # the gated RMSNorm
            if not self.trainable_base:
                per -= a * V + 4 * hv     # kept only for the norm's weight and A_log / dt_bias's gradients
            self.save_size(Size(token=per, batch=a * conv * (kernel - 1), const=chunk * chunk))
        return self.linear(self.tok(hv * dv, self.a, rg), by_role[LIN_OUT])

    def total(self) -> Size:
        out = Size()
        for size in self.saved.values():
            out = out + size
        return out


@frozen
class LayerActivations:
    """Saved bytes per decoder layer as linear forms in tokens, scores and mask elements.

    Where some layers attend within a window (sliding or chunked attention), a sequence longer than the
    window saves more (``*_long``, from ``window`` on)."""

    first: Size             # layer 0
    later: Size             # every other layer, summed
    largest: Size           # the largest single later layer (recomputed, or the top layer's)
    checkpoint: Size        # what a checkpointed layer keeps (its input)
    window: int | None = None
    first_long: Size | None = None
    later_long: Size | None = None
    largest_long: Size | None = None
    transients: tuple[tuple[Size, Size], ...] = ()  # a later layer's forward moments (Trace.transient)
    attention_freed: Size = Size()  # what the top layer has freed when its attention's backward starts

    def at(self, seq_len: int) -> tuple[Size, Size, Size]:
        """(layer 0, later layers summed, the largest later layer) for sequences of ``seq_len``."""
        if self.window is not None and seq_len > self.window:
            return self.first_long, self.later_long, self.largest_long
        return self.first, self.later, self.largest


def activation_forms(shape: ModelShape, setup: TrainingSetup) -> LayerActivations:
    """Saved bytes of layer 0, of the later layers and of a checkpointed layer, as linear forms.

    What enters layer 0 needs a gradient when the embedding trains or the method prepends trained
    virtual tokens; prefix tuning trains keys and values inside every layer's attention. Layers of
    different kinds are traced apart and summed by their counts.
    """
    method = setup.method
    kinds = shape.layer_kinds
    first_kind = kinds[shape.first_kind] if shape.kinds else kinds[0]
    frozen = 0 if setup.checkpointing else method.frozen_layers(shape, setup)

    traced: dict[int, Trace] = {}       # a later layer of each kind, traced with a gradient-needing input

    def run(kind: LayerKind, rg: bool, long: bool) -> tuple[Size, bool]:
        t = Trace(shape, setup, beyond_window=long)
        out = t.layer(t.tok(shape.hidden_size, t.r, rg), kind)
        if rg and not long:
            traced[id(kind)] = t
        return t.total(), out.rg

    def forms(long: bool) -> tuple[Size, Size, Size]:
        first, flows = run(first_kind, method.input_grad(setup) or setup.prefix_tokens > 0, long)
        left = {id(k): k.layers for k in kinds}
        left[id(first_kind)] -= 1 + frozen     # the bottom layers LLaMA-Adapter leaves without a gradient save nothing
        later, largest = Size(), Size()
        if not flows and not frozen:
            # layers above layer 0 that nothing below trains see an input without a gradient (a
            # hybrid's linear-attention layers below its first attention layer, under LoRA on q, v)
            for index in shape.order[1:]:
                kind = kinds[index]
                one, flows = run(kind, False, long)
                later = later + one
                left[id(kind)] -= 1
                if flows:
                    break
        for kind in kinds:
            n = left[id(kind)]
            if n <= 0:
                continue
            one, _ = run(kind, True, long)
            later = later + one.scaled(n)
            if one.token >= largest.token:
                largest = one
        return first, later, largest

    r = Trace(shape, setup).r
    first, later, largest = forms(False)
    top = traced.get(id(kinds[-1]))               # the top layer, for a method's forward temporaries
    if top is None:
        top = Trace(shape, setup)
        top.layer(top.tok(shape.hidden_size, top.r, True), kinds[-1])
    transients = tuple(top.transients)
    kept = Size()
    for size in top.kept.values():
        kept = kept + size
    windows = [k.window for k in kinds if k.attention in (SLIDING, CHUNKED) and k.window]
    freed = top.total() - top.attention_saved     # the MLP side, the post-attention norm, a block's output
    if setup.attention == "eager" and top.a != 4 and shape.softmax_fp32:
        freed = freed + Size(score=top.a)         # and the probabilities' cast, read by probs @ v's backward
    out = LayerActivations(first=first, later=later, largest=largest,
                           checkpoint=Size(token=shape.hidden_size * r) + kept, transients=transients,
                           attention_freed=freed)
    if windows:
        first_l, later_l, largest_l = forms(True)
        out = LayerActivations(first=first, later=later, largest=largest, checkpoint=out.checkpoint,
                               window=min(windows), first_long=first_l, later_long=later_l, largest_long=largest_l,
                               transients=transients, attention_freed=freed)
    return out


def layer_backward_temporaries(shape: ModelShape, setup: TrainingSetup) -> tuple[Size, ...]:
    """Gradients alive inside one layer's MLP backward, beyond what the layer saved (measured, CPU):
    alternatives, the largest of which is the peak.

    Gated MLP: about a x T x 2(h + i); a plain MLP with transformers' Python ``gelu_new``: the three
    intermediate-size gradients of its products and one of the hidden size, a x T x (3i + h);
    other plain MLPs a x T x (2i + h). The method may add alternatives (QLoRA's dequantized weight).
    """
    a, h, i = activation_bytes(setup), shape.hidden_size, shape.intermediate_size
    if shape.gated_mlp:
        temps = Size(token=a * 2 * (h + i))
    else:
        temps = Size(token=a * ((3 if shape.activation == "gelu_new" else 2) * i + h))
    return setup.method.layer_backward_temporaries(shape, setup, temps)


def attention_backward_temporaries(shape: ModelShape, setup: TrainingSetup) -> Size | None:
    """Eager attention's softmax backward, beyond what the layer saved: the probabilities' gradient
    (upcast to fp32 where the softmax is) and the softmax's own, score-sized, beside the attention
    output's gradient and its head-split copy (measured on CPU kernels, fp32 and bf16, 512 and 1024
    tokens: 8 bytes per score with an fp32 softmax, 2 a h per token). None for the fused kernels."""
    if setup.attention != "eager":
        return None
    a = activation_bytes(setup)
    return Size(token=2 * a * shape.hidden_size, score=8 if shape.softmax_fp32 else 2 * a)


def top_layer_freed(shape: ModelShape, setup: TrainingSetup) -> Size:
    """What the top layer's MLP tail has already freed when its MLP backward peaks: what the method
    saves there (the down projection's input when its weight trains, an adapter's tensors), the
    dropout mask after the MLP and a post-MLP norm's saved tensors."""
    a, h = activation_bytes(setup), shape.hidden_size
    out = setup.method.mlp_tail(shape, setup)
    if shape.dropout > 0:
        out = out + Size(token=h * (1 if setup.device == "cuda" else a))
    if shape.post_mlp_norm:
        out = out + Size(token=4 * h + 4)                  # post_feedforward_layernorm's x32 and rsqrt
    return out


def outside_form(shape: ModelShape, setup: TrainingSetup) -> tuple[Size, int, Size]:
    """Bytes saved outside the decoder layers, the loss excepted (fitplan.memory.logits has it).

    Returns (a form, bytes per sequence position independent of the batch, the part of the form
    that the head's backward frees: the final norm's and the head's saved tensors):
    the final norm's saved set; the output head's input when the head trains; the token ids an
    embedding's backward keeps when it trains (int64); the rotary cos/sin tables shared by every
    layer (2 x seq x rotary_dim in the model dtype) and learned position ids; eager attention's
    additive mask; a method's own encoder; gpt2's embedding dropout mask.
    """
    method = setup.method
    trainable_base = method.trains_base
    t = Trace(shape, setup)
    x = t.tok(shape.hidden_size, t.r, True)
    t.norm_names = [shape.final_norm.name]
    y = t.norm(x, shape.hidden_size)
    if trainable_base:
        t.save(y)                                         # lm_head's weight trains
    method.trace_head(t, y)                               # what a method adds at the output head
    form = t.total()
    head = form
    per_seq = 0
    if trainable_base:
        form = form + Size(token=8)                       # embedding backward keeps input_ids
        if shape.position_embeddings:
            per_seq += 8
    if shape.rotary_dim:
        per_seq += 2 * shape.rotary_dim * t.w
    if setup.attention == "eager" and shape.shared_eager_mask:
        # the additive mask, shared by every layer (Gemma-2's eager path keeps none alive: measured)
        form = form + Size(bmask=t.a)
    form = form + method.encoder_form(shape, setup)
    if shape.dropout > 0 and (method.input_grad(setup) or setup.checkpointing):
        # the embedding dropout keeps its mask when its input needs a gradient (with checkpointing
        # transformers makes the embedding's output require one)
        form = form + Size(token=shape.hidden_size * (1 if setup.device == "cuda" else t.a))
    return form, per_seq, head
