"""The closed table of storage types, and 4-bit storage as bitsandbytes lays it out.

Everything is computed in bits and rounded to bytes once.
"""

from __future__ import annotations

from fitplan.errors import unknown_choice
from fitplan.frozen import frozen


@frozen
class DType:
    name: str
    bits: int
    torch_name: str


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("fp32", 32, "float32"),
        DType("bf16", 16, "bfloat16"),
        DType("fp16", 16, "float16"),
        DType("int8", 8, "int8"),
        DType("nf4", 4, "nf4"),
        DType("fp4", 4, "fp4"),
    )
}

_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float": "fp32"}


def dtype(name: str) -> DType:
    """Look a storage type up by name (``fp32``, ``bf16``, ``float16``, ...).

    Raises:
        PlanError: for a name not in the table, listing the valid ones.
    """
    found = DTYPES.get(name)  # the common case: a name of the table
    if found is not None:
        return found
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DTYPES:
        raise unknown_choice("dtype", name, DTYPES)
    return DTYPES[key]


def nbytes(numel: int, dt: DType | str) -> int:
    """Bytes of ``numel`` elements stored densely in ``dt`` (rounded up to whole bytes)."""
    d = dt if isinstance(dt, DType) else dtype(dt)
    return -(-numel * d.bits // 8)


# bitsandbytes 4-bit layout (bitsandbytes/functional.py, quantize_4bit and quantize_blockwise).
FOUR_BIT_BLOCKSIZE = 64          # elements per absmax block of the 4-bit weight
NESTED_BLOCKSIZE = 256           # elements per block when the absmax itself is quantized (double quant)
FOUR_BIT_CODE_BYTES = 16 * 4     # the NF4/FP4 code book, 16 fp32 values, one per quantized weight
NESTED_CODE_BYTES = 256 * 4      # the dynamic 8-bit map of the nested absmax, one copy per weight
NESTED_OFFSET_BYTES = 4          # the fp32 mean subtracted from absmax before nesting


def four_bit_bytes(numel: int, *, double_quant: bool, blocksize: int = FOUR_BIT_BLOCKSIZE) -> int:
    """Bytes bitsandbytes keeps for one 4-bit (NF4 or FP4) weight of ``numel`` elements.

    Packed weight: two 4-bit values per uint8, ``ceil(numel / 2)`` bytes. One absmax per block of
    ``blocksize``: fp32 without double quantization; with it, uint8 per block plus, per 256 of
    those, one fp32 nested absmax, plus a 4-byte fp32 offset. Each weight keeps its own 16-entry
    fp32 code book and, with double quantization, its own copy of the 256-entry fp32 dynamic map
    (bitsandbytes 0.50 on CPU: the tensors do not share storage between weights).

    A 4096 x 4096 weight: 9,437,248 bytes; 8,655,940 with double quantization.
    """
    packed = -(-numel // 2)
    blocks = -(-numel // blocksize)
    if not double_quant:
        absmax = blocks * 4
    else:
        nested_blocks = -(-blocks // NESTED_BLOCKSIZE)
        absmax = blocks * 1 + nested_blocks * 4 + NESTED_OFFSET_BYTES + NESTED_CODE_BYTES
    return packed + absmax + FOUR_BIT_CODE_BYTES
