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

from dataclasses import dataclass

from planner.architecture import (
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
from planner.methods import lora_target_matrices
from planner.setup import TrainingSetup


@dataclass(frozen=True)
class Size:
    """Bytes as a linear form: per token, per attention score, per mask element, and constant."""  # noqa: D401

    token: int = 0
    score: int = 0
    mask: int = 0
    const: int = 0
    bmask: int = 0   # per batch x seq x kv_seq (a materialised attention mask)
    batch: int = 0   # per sequence of the batch (prefix keys and values)

    def __add__(self, other: Size) -> Size:
        return Size(
            self.token + other.token, self.score + other.score, self.mask + other.mask, self.const + other.const,
            self.bmask + other.bmask, self.batch + other.batch,
        )

    def bytes(self, tokens: int, scores: int, mask: int, bmask: int = 0, batch: int = 0) -> int:
        return (
            self.token * tokens + self.score * scores + self.mask * mask + self.const
            + self.bmask * bmask + self.batch * batch
        )


def activation_bytes(setup: TrainingSetup) -> int:
    """Bytes per element of the activations a layer computes.

    QLoRA: peft's ``prepare_model_for_kbit_training`` upcasts the embedding, norms and head to fp32,
    and bitsandbytes' ``Linear4bit`` returns its output in its input's dtype, so the whole forward
    pass runs on fp32 tensors (measured on CPU, transformers 5.23, peft 0.21, bitsandbytes 0.50:
    every saved tensor and the logits are fp32).
    """
    return 4 if (setup.compute_dtype == "fp32" or (setup.method == "qlora" and setup.kbit_upcast)) else 2


class _Tensor:
    __slots__ = ("size", "rg")

    def __init__(self, size: Size, rg: bool):
        self.size = size
        self.rg = rg


class _Trace:
    """Replays ops on symbolic tensors and collects what autograd would save."""

    def __init__(self, shape: ModelShape, setup: TrainingSetup, trainable_base: bool, lora: set[int], adapters: bool):
        self.shape = shape
        self.setup = setup
        self.a = activation_bytes(setup)                             # activation bytes per element
        # The residual stream's dtype: the embedding's. Mixed precision keeps the embedding (and
        # norms) in fp32, so hidden states stay fp32 between the bf16 outputs of the matrix products.
        self.r = 4 if setup.mixed else self.a
        self.w = 4 if setup.weight_dtype == "fp32" else 2            # parameter bytes per element
        self.trainable_base = trainable_base
        self.lora = lora          # ids of the Matrix objects LoRA wraps
        self.adapters = adapters
        self.saved: dict[int, Size] = {}
        self._keep: list[_Tensor] = []
        self._anon = 0

    # -- primitives
    def new(self, size: Size, rg: bool) -> _Tensor:
        t = _Tensor(size, rg)
        self._keep.append(t)  # keep ids unique for the trace's lifetime
        return t

    def tok(self, elements: int, nbytes: int, rg: bool) -> _Tensor:
        return self.new(Size(token=elements * nbytes), rg)

    def save(self, *tensors: _Tensor) -> None:
        for t in tensors:
            self.saved[id(t)] = t.size

    def save_size(self, size: Size) -> None:
        """Save a tensor that no other op refers to (a mask, a softmax output)."""
        self._anon -= 1
        self.saved[self._anon] = size

    def cast(self, x: _Tensor, nbytes: int, elements: int) -> _Tensor:
        """``x.to(dtype)``: the same tensor when the dtype does not change."""
        return x if nbytes == self.a_of(x, elements) else self.tok(elements, nbytes, x.rg)

    @staticmethod
    def a_of(x: _Tensor, elements: int) -> int:
        return x.size.token // elements if elements else 0

    def dropout(self, x: _Tensor, elements: int, p: float) -> _Tensor:
        if p <= 0:
            return x
        nbytes = self.a_of(x, elements)
        out = self.tok(elements, nbytes, x.rg)
        if x.rg:
            # CUDA's native_dropout keeps a bool mask; the CPU kernel a scaled mask in x's dtype
            self.save(self.tok(elements, 1 if self.setup.device == "cuda" else nbytes, False))
        return out

    # -- layers
    def rms_norm(self, x: _Tensor, size: int, gemma: bool = False) -> _Tensor:
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

    def layer_norm(self, x: _Tensor, size: int) -> _Tensor:
        w_rg = self.trainable_base
        if x.rg or w_rg:
            # native_layer_norm saves input, mean and rstd; the CPU kernel keeps mean and rstd in
            # the input's dtype, CUDA's in fp32
            stat = 4 if self.setup.device == "cuda" else self.a_of(x, size)
            self.save(x, self.tok(2, stat, False))
        return self.tok(size, self.a_of(x, size), x.rg or w_rg)

    def norm(self, x: _Tensor, size: int) -> _Tensor:
        if self.shape.norm_kind == "layer":
            return self.layer_norm(x, size)
        return self.rms_norm(x, size, gemma=self.shape.model_type in ("gemma", "gemma2"))

    def linear(self, x: _Tensor, m: Matrix) -> _Tensor:
        """``y = x W^T (+ b)`` plus, where LoRA wraps the module, ``B(A(dropout(x.float())))``."""
        w_rg = self.trainable_base
        # under autocast each matrix product takes its own compute-dtype copy of an fp32 input
        xin = self.tok(m.in_features, self.a, x.rg) if (self.setup.mixed and self.a_of(x, m.in_features) != self.a) else x
        if w_rg:
            self.save(xin)
        out_rg = x.rg or w_rg
        if id(m) in self.lora:
            xc = self.cast(x, 4, m.in_features)               # peft casts the input to the adapter dtype
            xc = self.dropout(xc, m.in_features, self.setup.lora_dropout)
            if self.setup.mixed:
                xc = self.tok(m.in_features, self.a, True)    # autocast runs lora_A in the compute dtype
            self.save(xc)                                     # lora_A's weight trains
            u = self.tok(self.setup.lora_rank, self.a if self.setup.mixed else 4, True)
            self.save(u)                                      # lora_B's weight trains
            out_rg = True
        if self.setup.mixed and x.rg:
            # autocast's compute-dtype copy of the weight, kept for the input's gradient
            self.save_size(Size(const=m.in_features * m.out_features * m.copies * self.a))
        return self.tok(m.out_features, self.a, out_rg)

    def adapter(self, x: _Tensor) -> _Tensor:
        """Houlsby bottleneck on the sub-layer output: x + up(act(down(x.float()))), fp32 inside."""
        h, m = self.shape.hidden_size, self.setup.adapter_size
        xc = self.cast(x, 4, h)
        self.save(xc)                                         # down's weight trains
        d = self.tok(m, 4, True)
        self.save(d)                                          # the activation saves its input
        act = self.tok(m, 4, True)
        self.save(act)                                        # up's weight trains
        return self.tok(h, self.a, True)

    def attention(self, q: _Tensor, k: _Tensor, v: _Tensor, fused: _Tensor | None) -> _Tensor:
        """Returns the input of the output projection."""
        s = self.shape
        nh, d = s.num_heads, s.head_dim
        rg = q.rg or k.rg or v.rg
        kernel = self.setup.attention
        dropout = s.dropout > 0
        out = self.tok(nh * d, self.a, rg)
        prefix = self.setup.num_virtual_tokens if self.setup.method == "prefix" else 0
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

    def rope(self, x: _Tensor, width: int) -> _Tensor:
        if not self.shape.rotary_dim:
            return x
        return self.tok(width, self.a, x.rg)       # q * cos + rotate_half(q) * sin: a new tensor

    def moe(self, x: _Tensor, by_role: dict[str, Matrix]) -> _Tensor:
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

    def mlp(self, x: _Tensor, by_role: dict[str, Matrix]) -> _Tensor:
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

    def layer(self, x: _Tensor) -> _Tensor:
        s = self.shape
        by_role = {m.role: m for m in s.matrices}
        # attention projections; gpt2's two c_proj share a name, not a role
        n1 = self.norm(x, s.hidden_size)
        if ATTN_QKV in by_role:
            qkv = self.linear(n1, by_role[ATTN_QKV])
            q = k = v = qkv                      # views of one storage
            fused = qkv
        else:
            q = self.linear(n1, by_role[ATTN_Q])
            k = self.linear(n1, by_role[ATTN_K])
            v = self.linear(n1, by_role[ATTN_V])
            fused = None
        if s.model_type == "qwen3":
            q = self.rms_norm(q, s.q_width)
            k = self.rms_norm(k, s.kv_width)
        if s.rotary_dim:
            q = self.rope(q, s.q_width)
            k = self.rope(k, s.kv_width)
        elif fused is not None:
            pass
        attn_in = self.attention(q, k, v, fused)
        o = self.linear(attn_in, by_role[ATTN_O])
        o = self.dropout(o, s.hidden_size, s.dropout)
        if self.adapters:
            o = self.adapter(o)
        if s.parallel_residual:
            n2 = n1 if len(s.norms) == 1 else self.norm(x, s.hidden_size)
            m = self.mlp(n2, by_role)
            m = self.dropout(m, s.hidden_size, s.dropout)
            if self.adapters:
                m = self.adapter(m)
            return self.tok(s.hidden_size, self.r, x.rg or o.rg or m.rg)
        if s.model_type == "gemma2":
            o = self.norm(o, s.hidden_size)      # post_attention_layernorm on the branch
        h = self.tok(s.hidden_size, self.r, x.rg or o.rg)
        n2 = self.norm(h, s.hidden_size)
        m = self.mlp(n2, by_role)
        if s.model_type == "gemma2":
            m = self.norm(m, s.hidden_size)      # post_feedforward_layernorm
        m = self.dropout(m, s.hidden_size, s.dropout)
        if self.adapters:
            m = self.adapter(m)
        return self.tok(s.hidden_size, self.r, h.rg or m.rg)

    def total(self) -> Size:
        out = Size()
        for size in self.saved.values():
            out = out + size
        return out


@dataclass(frozen=True)
class LayerActivations:
    """Saved bytes per decoder layer as linear forms in tokens, scores and mask elements."""

    first: Size       # layer 0
    later: Size       # every other layer
    checkpoint: Size  # what a checkpointed layer keeps (its input)


def activation_forms(shape: ModelShape, setup: TrainingSetup) -> LayerActivations:
    """Saved bytes of layer 0, of every later layer and of a checkpointed layer, as linear forms."""
    method = setup.method
    trainable_base = method == "full"
    lora = {id(m) for m in lora_target_matrices(shape, setup.lora_targets)} if method in ("lora", "qlora") else set()
    adapters = method == "adapter"
    # What enters layer 0: the embedding output needs a gradient when the embedding trains, or when
    # the method prepends trained virtual tokens; prefix tuning trains keys/values inside attention.
    input_rg = method in ("full", "prompt", "ptuning")

    def run(rg: bool) -> Size:
        t = _Trace(shape, setup, trainable_base, lora, adapters)
        x = t.tok(shape.hidden_size, t.r, rg)
        if method == "prefix":
            # past key/values of the virtual tokens require grad: every layer's attention saves
            # (the prefix lengthens keys and values, counted through kv_seq in the scores)
            x.rg = rg
        t.layer(x)
        return t.total()

    r = _Trace(shape, setup, False, set(), False).r
    first = run(input_rg or method == "prefix")
    later = run(True)
    return LayerActivations(first=first, later=later, checkpoint=Size(token=shape.hidden_size * r))


def _counts(shape: ModelShape, setup: TrainingSetup) -> tuple[int, int, int, int, int]:
    """(tokens, attention scores, mask elements, batch mask elements, batch) of one step."""
    s = setup.seq_len + setup.virtual_tokens
    kv = s + (setup.num_virtual_tokens if setup.method == "prefix" else 0)
    b = setup.batch_size
    return b * s, b * shape.num_heads * s * kv, s * kv, b * s * kv, b


def layer_backward_temporaries(shape: ModelShape, setup: TrainingSetup) -> tuple[Size, ...]:
    """Gradients alive inside one layer's MLP backward, beyond what the layer saved (measured, CPU):
    alternatives, the largest of which is the peak.

    Gated MLP: about a x T x 2(h + i); a plain MLP with transformers' Python ``gelu_new``: the three
    intermediate-size gradients of its products and one of the hidden size, a x T x (3i + h);
    other plain MLPs a x T x (2i + h).
    """
    a, h, i = activation_bytes(setup), shape.hidden_size, shape.intermediate_size
    if shape.gated_mlp:
        temps = Size(token=a * 2 * (h + i))
    else:
        temps = Size(token=a * ((3 if shape.activation == "gelu_new" else 2) * i + h))
    if setup.method != "qlora":
        return (temps,)
    # bitsandbytes' MatMul4Bit.backward dequantizes the weight (to the compute dtype) for the
    # input's gradient, one matrix at a time; at the down projection, the MLP's first, beside the
    # incoming gradient and the gradient of the projection's input
    compute = 4 if setup.compute_dtype == "fp32" else 2
    largest = max(m.in_features * m.out_features for m in shape.matrices if m.is_linear)
    # dropout after the MLP adds its own gradient of the hidden size
    hidden_grads = 2 if shape.dropout > 0 else 1
    saves_after_down = shape.model_type == "gemma2" or shape.dropout > 0   # a norm or a dropout mask
    if setup.checkpointing and not saves_after_down:
        # a frozen 4-bit down projection saves nothing, so a checkpointed layer is recomputed only
        # at the MLP's product, after the down projection's backward; the peak is at the gate/up
        # projection, where the product's saved tensors have been consumed and their gradients made
        return (temps, Size(token=a * hidden_grads * h, const=compute * largest))
    return (temps, Size(token=a * (hidden_grads * h + i), const=compute * largest))


def top_layer_freed(shape: ModelShape, setup: TrainingSetup) -> Size:
    """What the top layer's MLP tail has already freed when its MLP backward peaks: the down
    projection's saved input (when its weight trains) and the dropout mask after the MLP."""
    t = _Trace(shape, setup, setup.method == "full", set(), False)
    h = shape.hidden_size
    out = Size()
    if setup.method == "full":
        out = out + Size(token=t.a * shape.intermediate_size)
    if shape.dropout > 0:
        out = out + Size(token=h * (1 if setup.device == "cuda" else t.a))
    if setup.method == "adapter":
        # the MLP adapter's fp32 input and its bottleneck's two saved tensors
        out = out + Size(token=4 * h + 8 * setup.adapter_size)
    if shape.model_type == "gemma2":
        out = out + Size(token=4 * h + 4)                  # post_feedforward_layernorm's x32 and rsqrt
    return out


def outside_form(shape: ModelShape, setup: TrainingSetup) -> tuple[Size, int, Size]:
    """Bytes saved outside the decoder layers, the loss excepted (planner.memory.logits has it).

    Returns (a form, bytes per sequence position independent of the batch, the part of the form
    that the head's backward frees: the final norm's and the head's saved tensors):
    the final norm's saved set; the output head's input when the head trains; the token ids an
    embedding's backward keeps when it trains (int64); the rotary cos/sin tables shared by every
    layer (2 x seq x rotary_dim in the model dtype) and learned position ids; eager attention's
    additive mask; gpt2's embedding dropout mask.
    """
    method = setup.method
    trainable_base = method == "full"
    t = _Trace(shape, setup, trainable_base, set(), False)
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
    if setup.attention == "eager" and shape.model_type != "gemma2":
        # the additive mask, shared by every layer (Gemma-2's eager path keeps none alive: measured)
        form = form + Size(bmask=t.a)
    if method == "ptuning":
        # peft's prompt encoder (embedding, then Linear-ReLU-Linear-ReLU-Linear) runs once per step
        # on the virtual tokens: the three linears' inputs in fp32 and the token indices
        vt, h = setup.num_virtual_tokens, shape.hidden_size
        form = form + Size(const=3 * vt * h * 4 + 8 * vt)
    if shape.dropout > 0 and (trainable_base or method in ("prompt", "ptuning") or setup.checkpointing):
        # the embedding dropout keeps its mask when its input needs a gradient (with checkpointing
        # transformers makes the embedding's output require one)
        form = form + Size(token=shape.hidden_size * (1 if setup.device == "cuda" else t.a))
    return form, per_seq, head
