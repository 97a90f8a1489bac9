"""Logits and loss, and what lives outside the decoder layers.

transformers 5 (``ForCausalLMLoss``) computes bf16/fp16 logits with ``lm_head``, upcasts them
with ``logits.float()`` and runs ``cross_entropy``, whose ``log_softmax`` output (fp32, T x V) is
saved for backward; neither the logits nor their fp32 copy is saved. Measured on fake tensors
(torch 2.13, transformers 5.23):

- forward, at ``log_softmax``: the logits (a T V), their fp32 copy (4 T V) and the output
  (4 T V) are live together: 6 T V bytes beyond what the forward keeps;
- backward start, the step's usual peak for PEFT methods: ``nll_loss_backward`` and
  ``_log_softmax_backward_data`` each make an fp32 T x V tensor while the saved output is still
  live: 8 T V bytes beyond what the forward keeps. Checkpointing does not remove any of this.

T counts every position the model computes logits for: batch x (sequence + virtual tokens).
The coefficients below are bytes per logit (T x V); fitplan.estimate multiplies them out.

Other losses (``--loss``, set by the training stacks; ``loss_model``), each from its library's source:

- ``chunked:N`` (torchtune's ``CEWithChunkedOutputLoss``, axolotl's ``chunked_cross_entropy``): the
  logits in N chunks along the sequence, each upcast and cross-entropied alone. Eager
  ``cross_entropy`` still saves every chunk's fp32 log-softmax (4 T V), and the compute-dtype logits
  are held until the loss is summed (torchtune ``del logits`` before backward); what chunking
  removes is the fp32 copy of all the logits (one chunk's instead) and, at the start of backward,
  the two fp32 gradients of all the logits (one chunk's: autograd runs the chunks one by one).
- ``litgpt`` (LitGPT 0.5.13 ``lm_head_chunk_size=128`` and ``chunked_cross_entropy``, ``litgpt/utils.py``
  302-331): the head applied to 128-token slices of the sequence, each ``cross_entropy``'d without an
  upcast: its log-softmax saved in the logits' dtype (fp32 under autocast, which runs log_softmax in
  fp32), and the logits list still referenced during backward (no ``del``): logits and log-softmax
  held; the gradients one 128-token chunk at a time.
- ``liger`` (Liger-Kernel 0.8.5 ``LigerFusedLinearCrossEntropyFunction``): no logits; chunks of
  ``next_power_of_2(ceil(T / ceil(V / h)))`` rows (``ops/fused_linear_cross_entropy.py`` 97-106)
  through one logits buffer in the input's dtype, the gradient computed in the forward into
  ``grad_input`` (T x h, the input's dtype; 108), held until backward (574-580), and the head's
  weight gradient with it when the head trains.
- ``unsloth`` (unsloth-zoo 2026.10 ``fused_linear_cross_entropy``): the same gradient-in-forward
  design with unsloth's row rule (``fused_losses/fused_linear.py`` ``fused_linear_rows``: a power of
  two at most T h / V, at least 512 and the rows of 512 x 151936 logits, at most 4096, at most
  2 GiB of fp32 logits) and fp32 chunk logits; ``grad_h`` (T x h, hidden dtype) held.
- ``cce`` (Apple Cut Cross-Entropy, ``impl="cce"``): no logits anywhere in memory; saves the hidden
  states it was given, an fp32 log-sum-exp per token and an fp32 ``logit_avg`` of the vocabulary
  (``cce.py`` 141); backward allocates the hidden states' gradient (``cce_backward.py`` 390-394).
- ``trl`` (TRL 1.16 SFTTrainer's fused LM head, ``trl/kernels/chunked_logprob.py``): a gathered copy
  of the labelled positions' hidden states and two fp32 per-token statistics saved (386); the
  forward projects tiles of 4096 tokens x 32768 vocabulary columns in the compute dtype (347); the
  backward recomputes each tile and accumulates an fp32 gradient of the hidden states (406-411),
  returned in their dtype.

Under ``--compile`` Inductor fuses the upcast, log-softmax and nll of the standard and chunked
losses: the saved tensor is the compute-dtype logits with two fp32 statistics per row (measured on
CPU Inductor, torch 2.13), and the backward makes the logits' gradient in the compute dtype.

Known limitations: the logits of every position are computed and the fused losses score every
position (no ``logits_to_keep``, no fraction of labelled tokens); Liger's and unsloth's layer
kernels (RMSNorm, SwiGLU, RoPE) are not modelled, only their losses.
"""

from __future__ import annotations

from fitplan.architecture import ModelShape
from fitplan.frozen import frozen
from fitplan.setup import TrainingSetup

LIGER_CHUNK_CONST = 1            # liger_kernel/ops/fused_linear_cross_entropy.py 27 (_CHUNK_MEM_CONST)
UNSLOTH_MIN_LOGITS = 512 * 151936  # unsloth_zoo/fused_losses/fused_linear.py _MIN_LOGITS
UNSLOTH_MAX_ROWS = 4096
UNSLOTH_CHUNK_BYTES = 2 * 2**30  # UNSLOTH_LOGPROB_CHUNK_GB = 2.0, at 4 bytes per logit
LITGPT_CHUNK = 128               # litgpt/finetune/lora.py 355-358 (lm_head_chunk_size=128)
TRL_TOKEN_TILE = 4096            # trl/kernels/chunked_logprob.py 31 (TOKEN_CHUNK_SIZE)
TRL_VOCAB_TILE = 32768           # trl/trainer/utils.py 1506 (_CHUNKED_LOGPROB_CHUNK_SIZE)


def loss_coefficients(shape: ModelShape, setup: TrainingSetup) -> dict[str, int]:
    """Bytes per logit (batch x positions x vocabulary) of the loss, by software stack.

    ``loss_bytes``: what the loss saves (fp32 log_softmax); ``loss_forward``: what is alive beside
    it while it is computed (the logits in the compute dtype and their fp32 copy, which is the same
    tensor when the logits are fp32 already); ``loss_backward``: the two fp32 gradients at the start
    of backward. transformers 4 made one more contiguous fp32 copy of the shifted logits; its
    gpt_bigcode computed its own cross-entropy on the shifted logits without the upcast, all in the
    logits' dtype. Gemma-2's final soft-capping (``tanh(logits / cap) * cap``) saves the tanh's
    output, in the logits' dtype, beside what the loss saves.
    """
    a = setup.activation_bytes
    softcap = a if shape.final_softcap else 0
    if setup.transformers_major < 5 and shape.legacy_loss:
        return {"loss_bytes": a + softcap, "loss_forward": 2 * a, "loss_backward": 2 * a}
    upcast = 4 if a != 4 else 0
    extra = 4 if setup.transformers_major < 5 else 0
    return {"loss_bytes": 4 + softcap, "loss_forward": a + upcast + extra, "loss_backward": 8}


def _pow2_up(x: float) -> int:
    n = 1
    while n < x:
        n *= 2
    return n


def _pow2_down(x: float) -> int:
    n = _pow2_up(x)
    return n // 2 if n > x and n > 1 else n


@frozen
class Loss:
    """What one loss keeps, as coefficients: bytes per logit (T x V), per logit of one chunk, per
    token and constant, for what is held from the loss into backward (``saved``), what is alive
    beside it at the loss's worst forward moment (``forward``) and at the start of backward
    (``backward``). ``chunks`` cuts the sequence (the chunked loss); ``rows`` is a fused loss's rule
    for the tokens of one chunk (``liger``, ``unsloth``, ``trl``)."""

    kind: str
    chunks: int = 1
    rows: str = ""
    saved_logit: int = 0
    saved_token: int = 0
    saved_const: int = 0
    forward_logit: int = 0
    forward_chunk: int = 0
    forward_token: int = 0
    forward_const: int = 0
    backward_logit: int = 0
    backward_chunk: int = 0
    backward_token: int = 0
    backward_const: int = 0
    head_logit: int = 4      # the logits' gradient left when the head's own backward runs (per logit)
    hidden: int = 0          # the hidden states' width (fused losses' rows)
    cast_const: int = 0      # trl: compute-dtype copies of one weight tile (the weight's dtype differs)
    tile_forward: int = 0    # trl without Triton (a CPU): the torch fold's temporaries per tile element
    tile_backward: int = 0

    def chunk_tokens(self, batch: int, seq: int, vocab: int) -> int:
        """Tokens of the largest chunk the loss computes logits for at once."""
        tokens = batch * seq
        if self.rows == "liger":
            inc = -(-vocab // (LIGER_CHUNK_CONST * self.hidden))
            return min(tokens, _pow2_up(-(-tokens // inc)))
        if self.rows == "unsloth":
            rows = _pow2_down(tokens * self.hidden / vocab)
            least = min(max(_pow2_down(UNSLOTH_MIN_LOGITS / vocab), 512), UNSLOTH_MAX_ROWS)
            rows = min(max(rows, least), UNSLOTH_MAX_ROWS, max(UNSLOTH_CHUNK_BYTES // (4 * vocab), 2))
            return max(min(rows, tokens), 1)
        if self.rows == "trl":
            return min(tokens, TRL_TOKEN_TILE)
        if self.rows == "litgpt":
            return batch * min(seq, LITGPT_CHUNK)
        return batch * -(-seq // self.chunks)

    def bytes(self, batch: int, seq: int, vocab: int) -> tuple[int, int, int, int]:
        """(held into backward, alive beside it in the forward, at the start of backward, the logits'
        gradient at the head's backward), in bytes."""
        T = batch * seq
        C = self.chunk_tokens(batch, seq, vocab)
        # TRL's tile buffer is TOKEN x VOCAB tile wide whatever the vocabulary; the tile is a view of it
        cols = TRL_VOCAB_TILE if self.rows == "trl" else vocab
        TV, CV = T * vocab, C * cols
        tile = C * min(vocab, TRL_VOCAB_TILE)
        saved = self.saved_logit * TV + self.saved_token * T + self.saved_const
        forward = self.forward_logit * TV + self.forward_chunk * CV + self.forward_token * T + self.forward_const
        backward = self.backward_logit * TV + self.backward_chunk * CV + self.backward_token * T + self.backward_const
        if self.cast_const:
            forward += self.cast_const
            backward += self.cast_const
        forward += self.tile_forward * tile
        backward += self.tile_backward * tile
        head = self.head_logit * (CV if self.chunks > 1 or self.rows == "litgpt" else TV)
        return saved, forward, backward, head


def loss_model(shape: ModelShape, setup: TrainingSetup, head_trains: bool = False) -> Loss:
    """The loss ``setup.loss`` (and ``setup.compile``) keeps, as a ``Loss`` (see the module docstring).

    ``head_trains``: the output head's weight trains (full fine-tuning, ``--modules-to-save lm_head``):
    the fused losses then make its V x h gradient inside the loss.
    """
    kind, k = setup.loss_kind, setup.loss_chunks
    a = setup.activation_bytes                      # the logits' dtype: the compute dtype's
    r = 4 if setup.mixed else a                     # the hidden states' dtype (mixed: fp32 residual)
    w = 4 if setup.weight_dtype == "fp32" else 2    # the head weight's dtype
    h, V = shape.hidden_size, shape.vocab_size
    head = V * h if head_trains else 0
    softcap = a if shape.final_softcap else 0
    if kind in ("standard", "chunked") and setup.compile:
        # Inductor fuses upcast, log_softmax and nll: it saves the compute-dtype logits (the same
        # tensor the model returned) and two fp32 statistics per row; the backward makes the logits'
        # gradient in the compute dtype
        if kind == "standard":
            return Loss(kind, saved_logit=a + softcap, saved_token=8, backward_logit=a, head_logit=a)
        return Loss(kind, chunks=k, saved_logit=a + softcap, saved_token=8, backward_chunk=a, head_logit=a)
    if kind == "standard":
        c = loss_coefficients(shape, setup)
        return Loss(kind, saved_logit=c["loss_bytes"], forward_logit=c["loss_forward"],
                    backward_logit=c["loss_backward"])
    if kind == "chunked":
        upcast = 4 if a != 4 else 0
        return Loss(kind, chunks=k, saved_logit=4 + softcap, forward_logit=a, forward_chunk=upcast,
                    backward_chunk=8)
    if kind == "litgpt":
        soft = 4 if setup.mixed else a      # autocast runs log_softmax in fp32
        return Loss(kind, rows="litgpt", saved_logit=a + soft + softcap, backward_chunk=2 * soft, head_logit=a)
    if kind == "liger":
        # grad_input (T x h) and, for a trained head, grad_weight made in the forward and held;
        # one chunk's logits in the input's dtype and the fp32 per-token loss in the forward
        return Loss(kind, rows="liger", hidden=h, saved_token=r * h, saved_const=head * w, forward_chunk=r,
                    forward_token=4, head_logit=0)
    if kind == "unsloth":
        return Loss(kind, rows="unsloth", hidden=h, saved_token=r * h, saved_const=head * 4, forward_chunk=4,
                    forward_token=4, head_logit=0)
    if kind == "cce":
        # saves the hidden states it was given (the model's final hidden states, counted while the
        # forward holds them) and the fp32 log-sum-exp; backward makes their gradient (and dc)
        return Loss(kind, hidden=h, saved_token=r * h + 4, saved_const=4 * V, forward_token=-r * h,
                    backward_token=r * h, backward_const=head * w, head_logit=0)
    # trl: a gathered copy of the hidden states, log_z and entropy (fp32) and the gathered targets
    # saved; a tile of the logits in the compute dtype and seven fp32 running statistics per token in
    # the forward; an fp32 gradient of the hidden states, the tile again and, where the hidden states
    # are not fp32, their cast back in the backward (fp32 V x h for a trained head, and its cast)
    # (on a CPU there is no Triton: _forward_tile and _backward_tile, 211-296, fold each tile with torch
    # ops: three fp32 tile-sized temporaries and a bool mask forward, seven and a mask backward)
    cast = (TRL_VOCAB_TILE * h * a if w != a else 0) + (TRL_TOKEN_TILE * h * a if r != a else 0)
    cpu = setup.device == "cpu"
    return Loss(kind, rows="trl", hidden=h, saved_token=r * h + 16, forward_chunk=a, forward_token=28,
                backward_chunk=a, backward_token=4 * h + (r * h if r != 4 else 0),
                backward_const=head * (4 + (w if w != 4 else 0)), head_logit=0, cast_const=min(cast, V * h * a),
                tile_forward=3 * 4 + 1 if cpu else 0, tile_backward=7 * 4 + 1 if cpu else 0)
