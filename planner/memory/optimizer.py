"""Gradients, optimizer states and the optimizer step's temporaries, by the optimizer table
(``fitplan.optimizers``, where each optimizer's law is written down and cited).

Under ``bf16-master`` precision the gradients and states are fp32 whatever the weights, beside a
4 n fp32 master copy of every trained tensor (DeepSpeed's and Megatron's mixed precision).

Known limitations: see ``fitplan.optimizers``; ZeRO's sharding is applied in ``fitplan.sharding``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fitplan.dtypes import dtype, nbytes
from fitplan.methods.base import TensorGroup
from fitplan.optimizers import optimizer
from fitplan.setup import TrainingSetup


def gradients(groups: Sequence[TensorGroup], setup: TrainingSetup) -> int:
    """Bytes of the gradients of trainable tensors, each in its parameter's dtype (fp32 under
    ``bf16-master``, whose optimizer reduces and keeps fp32 gradients)."""
    if setup.master_weights:
        return sum(4 * g.elements for g in groups if g.trainable)
    return sum(g.data_bytes() for g in groups if g.trainable)


def optimizer_states(groups: Sequence[TensorGroup], setup: TrainingSetup) -> int:
    """Bytes of the optimizer's state for every trainable tensor (and the master copy, if any)."""
    law = optimizer(setup.optimizer).state
    cpu = setup.device == "cpu"
    total = 0
    for g in groups:
        if not g.trainable:
            continue
        b = dtype(g.storage).bits // 8
        if setup.master_weights:
            b = 4                            # states in fp32 ...
            total += g.count * 4 * g.numel   # ... beside the fp32 master copy
        total += g.count * law(g.numel, b, g.factored, cpu)
    return total


def parameter_order(groups: Sequence[TensorGroup], layers: int) -> list[int]:
    """Byte sizes of single tensors in the model's parameter order.

    Groups that repeat per layer (``count`` a multiple of ``layers``) are laid out layer by layer,
    interleaved in listed order (an adapter's down and up weights, once after attention and once
    after the MLP); the groups listed before the first per-layer group come first (embeddings),
    the rest last (final norm, head).
    """
    per_layer = [g for g in groups if g.per_layer(layers)]
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
    # groups that only some layers hold (a hybrid's attention layers) follow, their layers' share
    out += [nbytes(g.numel, g.storage) for g in per_layer for _ in range(g.count % layers)]
    out += [nbytes(g.numel, g.storage) for g in tail for _ in range(g.count)]
    return out


def optimizer_temporaries(groups: Sequence[TensorGroup], setup: TrainingSetup, layers: int = 1) -> int:
    """Peak bytes the optimizer step allocates beyond states, gradients and weights (the laws are in
    ``fitplan.optimizers``: AdamW single-tensor and foreach, Adafactor, none for the others)."""
    trainable = [g for g in groups if g.trainable]
    if not trainable:
        return 0
    kind = optimizer(setup.optimizer).temporaries
    if kind == "adamw":
        if setup.uses_foreach:
            return sum(g.data_bytes() for g in trainable)
        sizes = parameter_order(trainable, layers)
        return max(prev + 2 * cur for prev, cur in zip([0, *sizes[:-1]], sizes))
    if kind == "adafactor":
        return 3 * max(4 * g.numel for g in trainable)
    return 0


def paged_state_bytes(groups: Sequence[TensorGroup], setup: TrainingSetup) -> int:
    """Bytes of optimizer state a paged bitsandbytes optimizer keeps in CUDA unified memory (tensors of
    at least ``PAGED_MIN_NUMEL`` elements; ``fitplan.optimizers``); 0 for the others and on a CPU."""
    from fitplan.optimizers import PAGED_MIN_NUMEL

    o = optimizer(setup.optimizer)
    if not o.paged or setup.device != "cuda":
        return 0
    return sum(g.count * o.state(g.numel, dtype(g.storage).bits // 8, g.factored, False)
               for g in groups if g.trainable and g.numel >= PAGED_MIN_NUMEL)
