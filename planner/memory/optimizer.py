"""Gradients, optimizer states and the optimizer step's temporaries.

Formulas per optimizer, for a trainable tensor of n elements stored in b bytes per element:

- ``adamw`` (torch.optim.AdamW): exp_avg and exp_avg_sq in the parameter's dtype, 2 n b; plus a
  4-byte fp32 ``step`` per tensor, which lives on the CPU unless ``capturable``/``fused``
  (torch/optim/adam.py ``_init_group``), so it counts only on a CPU device.
- ``adamw-8bit`` / ``paged-adamw-8bit`` (bitsandbytes Optimizer2State, optim_bits=8): tensors of
  at least 4,096 elements keep two uint8 states plus one fp32 absmax per 256 elements per state,
  2 n + 8 ceil(n / 256); smaller tensors keep two fp32 states, 8 n.
- ``paged-adamw`` (bitsandbytes, 32-bit): two fp32 states, 8 n, in paged (unified) memory that
  the driver may evict to the host under pressure.
- ``sgd``: none. ``sgd-momentum``: one momentum buffer in the parameter's dtype, n b.
- ``adafactor`` (transformers.optimization.Adafactor, factored, no first moment): for matrices
  the row and column second-moment statistics in the gradient's dtype; for vectors one full
  statistic.
- ``lion`` (bitsandbytes Lion, 32-bit): one fp32 momentum, 4 n.
- under ``bf16-master`` precision the states are fp32 whatever the weights, beside a 4 n fp32
  master copy of every trained tensor.

Known limitations: the step temporaries are modelled for torch AdamW (single-tensor and
foreach) and bounded by the largest tensor for the others; fused AdamW and ZeRO are elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.dtypes import nbytes
from planner.methods import TensorGroup
from planner.setup import TrainingSetup

BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes Optimizer8bit min_8bit_size
BNB_BLOCK = 256           # bitsandbytes blockwise 8-bit state block


def gradients(groups: Sequence[TensorGroup], setup: TrainingSetup | None = None) -> int:
    """Bytes of the gradients of trainable tensors, each in its parameter's dtype (fp32 under
    ``bf16-master``, whose optimizer reduces and keeps fp32 gradients)."""
    if setup is not None and setup.master_weights:
        return sum(4 * g.elements for g in groups if g.trainable)
    return sum(g.data_bytes() for g in groups if g.trainable)


def _adam8bit_bytes(numel: int) -> int:
    if numel < BNB_MIN_8BIT_SIZE:
        return 2 * 4 * numel
    return 2 * numel + 2 * 4 * -(-numel // BNB_BLOCK)


def optimizer_states(groups: Sequence[TensorGroup], setup: TrainingSetup) -> int:
    """Bytes of the optimizer's state for every trainable tensor (see the module docstring)."""
    total = 0
    opt = setup.optimizer
    for g in groups:
        if not g.trainable:
            continue
        n, per = g.numel, nbytes(g.numel, g.storage)
        if setup.master_weights:
            per = 4 * n                      # states in fp32 ...
            total += g.count * 4 * n         # ... beside the fp32 master copy
        if opt == "adamw":
            state = 2 * per + (4 if setup.device == "cpu" else 0)
        elif opt in ("adamw-8bit", "paged-adamw-8bit"):
            state = _adam8bit_bytes(n)
        elif opt == "paged-adamw":
            state = 8 * n
        elif opt == "sgd":
            state = 0
        elif opt == "sgd-momentum":
            state = per
        elif opt == "adafactor":
            state = nbytes(g.factored, g.storage) if g.factored else per
        elif opt == "lion":
            state = 4 * n
        else:  # pragma: no cover - TrainingSetup rejects unknown optimizers
            raise AssertionError(opt)
        total += g.count * state
    return total


def parameter_order(groups: Sequence[TensorGroup], layers: int) -> list[int]:
    """Byte sizes of single tensors in the model's parameter order.

    Groups that repeat per layer (``count`` a multiple of ``layers``) are laid out layer by layer,
    interleaved in listed order (an adapter's down and up weights, once after attention and once
    after the MLP); the groups listed before the first per-layer group come first (embeddings),
    the rest last (final norm, head).
    """
    per_layer = [g for g in groups if g.count >= layers and g.count % layers == 0]
    if not per_layer:
        return [nbytes(g.numel, g.storage) for g in groups for _ in range(g.count)]
    first = groups.index(per_layer[0])
    head = [g for g in groups[:first] if g not in per_layer]
    tail = [g for g in groups[first:] if g not in per_layer]
    layer: list[int] = []
    for rep in range(max(g.count // layers for g in per_layer)):
        layer += [nbytes(g.numel, g.storage) for g in per_layer if g.count // layers > rep]
    out = [nbytes(g.numel, g.storage) for g in head for _ in range(g.count)]
    out += layer * layers
    out += [nbytes(g.numel, g.storage) for g in tail for _ in range(g.count)]
    return out


def optimizer_temporaries(groups: Sequence[TensorGroup], setup: TrainingSetup, layers: int = 1) -> int:
    """Peak bytes the optimizer step allocates beyond states, gradients and weights.

    torch AdamW, single-tensor (the CPU default, torch/optim/adam.py ``_single_tensor_adam``): per
    tensor, ``denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)`` makes two
    temporaries of the tensor's size, and ``denom`` lives on until the next tensor's is made: the
    peak is the largest ``size[i-1] + 2 size[i]`` over the tensors in the optimizer's order
    (the model's parameter order), see ``parameter_order``.
    Foreach (the CUDA default, ``_multi_tensor_adam``): ``torch._foreach_sqrt(exp_avg_sqs)`` makes
    one copy of every second moment at once, and the rest works in place: all trainable bytes.
    (Measured on fake tensors, torch 2.13: Llama-3.1-8B full bf16 single-tensor 2 x lm_head;
    foreach one copy of every parameter.) bitsandbytes' 8-bit and paged optimizers and Lion update
    in their own kernels: none. Adafactor (transformers) makes fp32 copies of a tensor's gradient,
    parameter and update: 3 x the largest tensor in fp32.
    """
    trainable = [g for g in groups if g.trainable]
    if not trainable:
        return 0
    largest_fp32 = max(4 * g.numel for g in trainable)
    opt = setup.optimizer
    if opt == "adamw":
        if setup.uses_foreach:
            return sum(g.data_bytes() for g in trainable)
        sizes = parameter_order(trainable, layers)
        return max(prev + 2 * cur for prev, cur in zip([0, *sizes[:-1]], sizes))
    if opt == "adafactor":
        return 3 * largest_fp32
    return 0
