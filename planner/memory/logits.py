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

Known limitations: models whose loss chunks or fuses the logits (Liger, Cut Cross-Entropy) are
not modelled; the logits of every position are computed (no ``logits_to_keep``).
"""

from __future__ import annotations

from fitplan.architecture import ModelShape
from fitplan.setup import TrainingSetup


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
