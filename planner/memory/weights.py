"""Weights, quantization state and the saved files.

Known limitations: the adapter file size counts tensor bytes only (safetensors adds a small JSON
header); a full checkpoint is counted in the training storage type (fp32 under mixed precision).
"""

from __future__ import annotations

from collections.abc import Sequence

from fitplan.methods.base import TensorGroup


def weights(groups: Sequence[TensorGroup]) -> int:
    """Bytes of every parameter's values: base weights (packed 4-bit where quantized) and adapters.

    weights = sum over groups of count x ceil(numel x bits / 8)
    """
    return sum(g.data_bytes() for g in groups)


def quantization_state(groups: Sequence[TensorGroup], double_quant: bool) -> int:
    """Bytes of bitsandbytes' per-weight quantization state (absmax, nested absmax, code books).

    See fitplan.dtypes.four_bit_bytes for the layout (bitsandbytes functional.quantize_4bit).
    """
    return sum(g.quant_state_bytes(double_quant) for g in groups)


def trainable_params(groups: Sequence[TensorGroup]) -> int:
    return sum(g.elements for g in groups if g.trainable)


def total_params(groups: Sequence[TensorGroup]) -> int:
    return sum(g.elements for g in groups)


def saved_file_bytes(groups: Sequence[TensorGroup], full: bool) -> int:
    """What training saves: the whole model for full fine-tuning, else the added tensors the adapter
    file holds (peft's ``get_peft_model_state_dict``: parameters and persistent buffers)."""
    return sum(g.data_bytes() for g in groups if (g.trainable if full else g.added and g.in_file))
