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
    MLP_DOWN,
    MLP_GATE,
    MLP_GATE_UP,
    MLP_UP,
    ROUTER,
    Matrix,
    ModelShape,
)
from fitplan.frozen import frozen
from fitplan.memory.forms import Size
from fitplan.setup import TrainingSetup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


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

    def __init__(self, shape: ModelShape, setup: TrainingSetup, trainable_base: bool | None = None):
        self.shape = shape
        self.setup = setup
        self.method = setup.method
        self.a = activation_bytes(setup)                             # activation bytes per element
        # The residual stream's dtype: the embedding's. Mixed precision keeps the embedding (and
        # norms) in fp32, so hidden states stay fp32 between the bf16 outputs of the matrix products.
        self.r = 4 if setup.mixed else self.a
        self.w = 4 if setup.weight_dtype == "fp32" else 2            # parameter bytes per element
        self.trainable_base = setup.method.trains_base if trainable_base is None else trainable_base
        self.saved: dict[int, Size] = {}
        self._keep: list[TraceTensor] = []
        self._anon = 0
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

    def cast(self, x: TraceTensor, nbytes: int, elements: int) -> TraceTensor:
        """``x.to(dtype)``: the same tensor when the dtype does not change."""
        return x if nbytes == self.a_of(x, elements) else self.tok(elements, nbytes, x.rg)

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
    def rms_norm(self, x: TraceTensor, size: int, gemma: bool = False) -> TraceTensor:
        """transformers' RMSNorm: fp32 upcast, pow, mean, rsqrt, mul, cast back, times weight.

        The output takes the input's dtype (fp32 on an fp32 residual stream).
        """
        out_b = self.a_of(x, size)
        w_rg = self.trainable_base
        x32 = self.cast(x, 4, size)
        r = self.tok(1, 4, x.rg)
        if x.rg:
            self.save(x32, r)                      # pow saves x32; mul(x32, r) saves both
        n32 = self.tok(size, 4, x.rg)              # x32 * rsqrt
        if gemma:
            # Gemma: output = n32 * (1 + weight.float()), then cast; mul saves (1 + w) for n32's
            # gradient and n32 for the weight's
            if x.rg:
                self.save_size(Size(const=4 * size))
            if w_rg:
                self.save(n32)
            return self.cast(self.tok(size, 4, x.rg or w_rg), out_b, size)
        n = self.cast(n32, out_b, size)
        if w_rg:
            self.save(n)                           # weight * n saves n for the weight's gradient
        return self.tok(size, out_b, x.rg or w_rg)

    def layer_norm(self, x: TraceTensor, size: int) -> TraceTensor:
        w_rg = self.trainable_base
        if x.rg or w_rg:
            # native_layer_norm saves input, mean and rstd; the CPU kernel keeps mean and rstd in
            # the input's dtype, CUDA's in fp32
            stat = 4 if self.setup.device == "cuda" else self.a_of(x, size)
            self.save(x, self.tok(2, stat, False))
        return self.tok(size, self.a_of(x, size), x.rg or w_rg)

    def norm(self, x: TraceTensor, size: int) -> TraceTensor:
        if self.shape.norm_kind == "layer":
            return self.layer_norm(x, size)
        return self.rms_norm(x, size, gemma=self.shape.norm_kind == "gemma")

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

    def attention(self, q: TraceTensor, k: TraceTensor, v: TraceTensor) -> TraceTensor:
        """Returns the input of the output projection."""
        s = self.shape
        nh, d = s.num_heads, s.head_dim
        rg = q.rg or k.rg or v.rg
        kernel = self.setup.attention
        dropout = s.dropout > 0
        out = self.tok(nh * d, self.a, rg)
        prefix = self.setup.prefix_tokens
        math_path = dropout and kernel == "sdpa" and self.setup.device == "cpu"
        if prefix and kernel == "sdpa" and not math_path:
            # peft's prefix keys/values arrive as a cache: transformers materialises the mask
            # (batch x seq x kv_seq), so SDPA runs without GQA on keys and values repeated to every
            # head over seq + prefix, and saves the mask too (measured, torch 2.13 / transformers 5.23)
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
            # CPU SDPA with dropout runs the math path in fp32: scaled q and k, v, softmax output,
            # dropout mask and dropped probabilities (4 bytes each per score); keys and values
            # include a prefix's virtual tokens
            if rg:
                kv = 4 * 2 * s.kv_width
                self.save_size(Size(token=4 * nh * d + kv, batch=kv * prefix, score=12))
            return self.tok(nh * d, self.a, rg)
        # eager (or SDPA's math path): scores = q k^T, softmax in fp32, cast, dropout, probs v
        gqa = s.num_kv_heads != nh
        k_rep = self.tok(nh * d, self.a, k.rg) if gqa else k
        v_rep = self.tok(nh * d, self.a, v.rg) if gqa else v
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
            self.save_size(scores)  # fp32 softmax output
            probs = Size(score=self.a) if (self.a != 4 and s.softmax_fp32) else Size()
            if dropout:
                mask = 1 if self.setup.device == "cuda" else self.a
                probs = probs + Size(score=self.a + mask)  # dropout output and mask
            if probs != Size() and v_rep.rg:
                self.save_size(probs)
            self.save(v_rep)
        return self.tok(nh * d, self.a, rg)        # transpose(1, 2).reshape(): a contiguous copy

    def rope(self, x: TraceTensor, width: int) -> TraceTensor:
        if not self.shape.rotary_dim:
            return x
        return self.tok(width, self.a, x.rg)       # q * cos + rotate_half(q) * sin: a new tensor

    def moe(self, x: TraceTensor, by_role: dict[str, Matrix]) -> TraceTensor:
        """A mixture of experts (Mixtral in transformers 5), by the same rules as a dense gated MLP.

        The router is a linear layer whose logits go through an fp32 softmax (saved, 4 x experts
        per token); each token's hidden state is gathered once per chosen expert (a new tensor,
        k x hidden per token), runs the expert's fused gate/up projection, activation and down
        projection, and is weighted by its routing weight (the product saves both operands).
        Not yet checked against a measurement: the expert dispatch of transformers 5 may keep
        other intermediates.
        """
        s = self.shape
        h, i, k = s.hidden_size, s.intermediate_size, s.experts_per_token
        logits = self.linear(x, by_role[ROUTER])
        if logits.rg:
            self.save(self.tok(s.num_experts, 4, True))   # softmax in fp32 saves its output
        w_rg = self.trainable_base
        rg = x.rg or w_rg
        gathered = self.tok(k * h, self.a, x.rg)
        if w_rg:
            self.save(gathered)                            # gate_up's weight trains
        gu = self.tok(k * 2 * i, self.a, rg)
        if rg:
            self.save(gu)                                  # activation input and up half: one storage
        act = self.tok(k * i, self.a, rg)
        if rg:
            self.save(act)
        prod = self.tok(k * i, self.a, rg)
        if w_rg:
            self.save(prod)                                # down's weight trains
        down = self.tok(k * h, self.a, rg)
        if rg or logits.rg:
            self.save(down, self.tok(k, self.a, logits.rg))  # times the routing weight
        return self.tok(h, self.a, rg or logits.rg)

    def mlp(self, x: TraceTensor, by_role: dict[str, Matrix]) -> TraceTensor:
        s = self.shape
        i = s.intermediate_size
        if ROUTER in by_role:
            return self.moe(x, by_role)
        if MLP_GATE_UP in by_role:              # phi3: one projection, chunked (views share storage)
            gu = self.linear(x, by_role[MLP_GATE_UP])
            gate = up = gu
        elif MLP_GATE in by_role:
            gate = self.linear(x, by_role[MLP_GATE])
            up = self.linear(x, by_role[MLP_UP])
        else:
            gate, up = None, self.linear(x, by_role[MLP_UP])
        if gate is not None:
            if gate.rg:
                self.save(gate)                 # silu / gelu saves its input
            act = self.tok(i, self.a, gate.rg)
            if up.rg:
                self.save(act)
            if act.rg:
                self.save(up)
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

    def layer(self, x: TraceTensor) -> TraceTensor:
        s = self.shape
        by_role = {m.role: m for m in s.matrices}
        # attention projections; gpt2's two c_proj share a name, not a role
        n1 = self.norm(x, s.hidden_size)
        if ATTN_QKV in by_role:
            q = k = v = self.linear(n1, by_role[ATTN_QKV])   # views of one storage
        else:
            q = self.linear(n1, by_role[ATTN_Q])
            k = self.linear(n1, by_role[ATTN_K])
            v = self.linear(n1, by_role[ATTN_V])
        if s.qk_norm:
            q = self.rms_norm(q, s.q_width)
            k = self.rms_norm(k, s.kv_width)
        if s.rotary_dim:
            q = self.rope(q, s.q_width)
            k = self.rope(k, s.kv_width)
        attn_in = self.attention(q, k, v)
        o = self.linear(attn_in, by_role[ATTN_O])
        o = self.dropout(o, s.hidden_size, s.dropout)
        o = self.method.trace_block_output(self, o)
        if s.parallel_residual:
            n2 = n1 if len(s.norms) == 1 else self.norm(x, s.hidden_size)
            m = self.mlp(n2, by_role)
            m = self.dropout(m, s.hidden_size, s.dropout)
            m = self.method.trace_block_output(self, m)
            return self.tok(s.hidden_size, self.r, x.rg or o.rg or m.rg)
        if s.sandwich_norms:
            o = self.norm(o, s.hidden_size)      # post_attention_layernorm on the branch
        h = self.tok(s.hidden_size, self.r, x.rg or o.rg)
        n2 = self.norm(h, s.hidden_size)
        m = self.mlp(n2, by_role)
        if s.sandwich_norms:
            m = self.norm(m, s.hidden_size)      # post_feedforward_layernorm
        m = self.dropout(m, s.hidden_size, s.dropout)
        m = self.method.trace_block_output(self, m)
        return self.tok(s.hidden_size, self.r, h.rg or m.rg)

    def total(self) -> Size:
        out = Size()
        for size in self.saved.values():
            out = out + size
        return out


@frozen
class LayerActivations:
    """Saved bytes per decoder layer as linear forms in tokens, scores and mask elements."""

    first: Size       # layer 0
    later: Size       # every other layer
    checkpoint: Size  # what a checkpointed layer keeps (its input)


def activation_forms(shape: ModelShape, setup: TrainingSetup) -> LayerActivations:
    """Saved bytes of layer 0, of every later layer and of a checkpointed layer, as linear forms.

    What enters layer 0 needs a gradient when the embedding trains or the method prepends trained
    virtual tokens; prefix tuning trains keys and values inside every layer's attention.
    """

    def run(rg: bool) -> Size:
        t = Trace(shape, setup)
        t.layer(t.tok(shape.hidden_size, t.r, rg))
        return t.total()

    method = setup.method
    r = Trace(shape, setup).r
    first = run(method.input_requires_grad or setup.prefix_tokens > 0)
    later = run(True)
    return LayerActivations(first=first, later=later, checkpoint=Size(token=shape.hidden_size * r))


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
    y = t.norm(x, shape.hidden_size)
    if trainable_base:
        t.save(y)                                         # lm_head's weight trains
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
    if shape.dropout > 0 and (method.input_requires_grad or setup.checkpointing):
        # the embedding dropout keeps its mask when its input needs a gradient (with checkpointing
        # transformers makes the embedding's output require one)
        form = form + Size(token=shape.hidden_size * (1 if setup.device == "cuda" else t.a))
    return form, per_seq, head
