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
        DType("int64", 64, "int64"),   # index buffers (OFT's triangle indices)
        DType("int32", 32, "int32"),   # packed GPTQ/AWQ words, g_idx
        DType("uint8", 8, "uint8"),    # HQQ's packed values
        DType("fp8", 8, "float8_e4m3fn"),
        # quantized bases (QUANTIZED_LAYOUTS below): bits of the packed values per weight element
        DType("gptq-int4", 4, "int32"),
        DType("gptq-int8", 8, "int32"),
        DType("awq", 4, "int32"),
        DType("hqq", 4, "uint8"),
        DType("fp8-e4m3", 8, "float8_e4m3fn"),
        DType("bnb-int8", 8, "int8"),
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


# Quantized bases: the layouts of the libraries' own linear modules, from their source and
# documentation (none of GPTQ's, AWQ's, HQQ's or FBGEMM's kernels installs on this project's CPU
# machines, so only bitsandbytes' int8 layout is checked against the library itself; the others are
# the documented layouts, and the planner says so in its output).
GPTQ_GROUP = 128   # GPTQConfig.group_size (transformers), AutoGPTQ / GPTQModel QuantLinear
AWQ_GROUP = 128    # AwqConfig.group_size, AutoAWQ WQLinear_GEMM
HQQ_GROUP = 64     # HqqConfig.group_size (transformers), hqq HQQLinear


@frozen
class QuantizedLayout:
    """How one quantized base stores an ``out x in`` linear weight.

    ``storage``: the dtype-table name of the packed values; ``state_bytes(numel, in_features)``: the
    scales, zeros and indices beside them; ``source``: where the layout comes from; ``checked``:
    whether a test compares it with the library's own tensors here.
    """

    name: str
    storage: str
    source: str
    checked: bool


QUANTIZED_LAYOUTS: dict[str, QuantizedLayout] = {
    q.name: q
    for q in (
        QuantizedLayout("gptq-int4", "gptq-int4", "AutoGPTQ/GPTQModel QuantLinear: qweight int32 [in*4/32, out], "
                        "qzeros int32 [in/128, out*4/32], scales fp16 [in/128, out], g_idx int32 [in]", False),
        QuantizedLayout("gptq-int8", "gptq-int8", "AutoGPTQ/GPTQModel QuantLinear: qweight int32 [in*8/32, out], "
                        "qzeros int32 [in/128, out*8/32], scales fp16 [in/128, out], g_idx int32 [in]", False),
        QuantizedLayout("awq", "awq", "AutoAWQ WQLinear_GEMM: qweight int32 [in, out/8], qzeros int32 [in/128, out/8], "
                        "scales fp16 [in/128, out]", False),
        QuantizedLayout("hqq", "hqq", "hqq HQQLinear (nbits 4, group 64, axis 1): W_q uint8 [numel/2], scale and "
                        "zero in the compute dtype per group of 64", False),
        QuantizedLayout("fp8", "fp8-e4m3", "FBGEMM FP8 (transformers FbgemmFp8Linear): weight float8_e4m3fn "
                        "[out, in], weight_scale fp32 [out, 1] (per channel)", False),
        QuantizedLayout("bnb-int8", "bnb-int8", "bitsandbytes 0.50 Linear8bitLt (LLM.int8): Int8Params int8 [out, in], "
                        "SCB fp32 [out] (row absmax)", True),
    )
}


def quantized_state_bytes(storage: str, numel: int, in_features: int) -> int:
    """Bytes beside the packed values of one quantized ``out x in`` weight (``numel = out x in``).

    GPTQ (bits b, group 128): qzeros ``ceil(in/128) out b/8`` + fp16 scales ``2 ceil(in/128) out`` +
    int32 g_idx ``4 in``. AWQ (4-bit, group 128): qzeros ``ceil(in/128) out / 2`` + fp16 scales
    ``2 ceil(in/128) out``. HQQ (4-bit, group 64): a scale and a zero per group in fp16/bf16,
    ``4 ceil(numel/64)``. FP8 per channel: ``4 out``. bitsandbytes int8: SCB ``4 out``.
    A 4096 x 4096 GPTQ int4 weight: 8,388,608 packed + 65,536 qzeros + 262,144 scales + 16,384 g_idx
    = 8,732,672 bytes.
    """
    out = numel // in_features if in_features else 0
    if storage in ("gptq-int4", "gptq-int8"):
        bits = DTYPES[storage].bits
        groups = -(-in_features // GPTQ_GROUP)
        return groups * out * bits // 8 + 2 * groups * out + 4 * in_features
    if storage == "awq":
        groups = -(-in_features // AWQ_GROUP)
        return groups * out // 2 + 2 * groups * out
    if storage == "hqq":
        return 2 * 2 * -(-numel // HQQ_GROUP)
    if storage in ("fp8-e4m3", "bnb-int8"):
        return 4 * out
    return 0
