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

Known limitations: models whose loss chunks or fuses the logits (Liger, Cut Cross-Entropy) are
not modelled; the logits of every position are computed (no ``logits_to_keep``).
"""

from __future__ import annotations

from planner.architecture import ModelShape
from planner.setup import TrainingSetup


def logit_positions(setup: TrainingSetup) -> int:
    return setup.batch_size * (setup.seq_len + setup.virtual_tokens)


def loss_saved(shape: ModelShape, setup: TrainingSetup) -> int:
    """Bytes the loss keeps for backward: fp32 log_softmax (4 T V) plus int64 padded labels.

    Gemma-2's final logit soft-capping (``tanh(logits / cap) * cap``) saves the tanh output too.
    """
    T = logit_positions(setup)
    labels = 8 * setup.batch_size * (setup.seq_len + setup.virtual_tokens + 1)
    softcap = (4 if setup.compute_dtype == "fp32" or (setup.method == "qlora" and setup.kbit_upcast) else 2) if shape.final_softcap else 0
    return (4 + softcap) * T * shape.vocab_size + labels


def logits_forward_transient(shape: ModelShape, setup: TrainingSetup) -> int:
    """Extra bytes live while the loss is computed in the forward pass: logits and their fp32 copy."""
    a = 4 if setup.compute_dtype == "fp32" else 2
    T = logit_positions(setup)
    # in fp32 the .float() is a no-op, so the copy does not exist
    return (a + (4 if a != 4 else 0)) * T * shape.vocab_size


def logits_backward_transient(shape: ModelShape, setup: TrainingSetup) -> int:
    """Extra bytes at the start of backward: the two fp32 T x V gradients of the loss."""
    return 8 * logit_positions(setup) * shape.vocab_size
