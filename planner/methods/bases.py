"""Quantized bases for the LoRA family (``--base``): how the frozen base is stored, what its loader
does to the rest of the model, and what its kernels keep during backward.

Storage layouts are ``fitplan.dtypes.QUANTIZED_LAYOUTS`` (packed values and their scales, zeros and
indices). Beyond storage:

- peft's ``prepare_model_for_kbit_training`` (``utils/other.py`` 183-233), which recipes call on any
  quantized model, upcasts every fp16/bf16 parameter that is not 4-bit to fp32 except for GPTQ,
  AQLM, EETQ, HQQ and torchao models (lines 197-209), and turns gradient checkpointing on for
  bitsandbytes-loaded (``is_loaded_in_8bit``/``4bit``), GPTQ and HQQ models (lines 221-233). With
  the upcast the embedding returns fp32 and the layers pass the dtype through, so the activations
  are fp32 (measured for bitsandbytes; from the layouts for AWQ and FP8).
- In backward each quantized linear dequantizes its weight for the input's gradient, one matrix at a
  time: bitsandbytes int8 ``MatMul8bitLt.backward`` (``bitsandbytes/autograd/_functions.py`` 236-238)
  in the input's dtype; bitsandbytes 4-bit, GPTQ's and AWQ's Triton/torch paths, HQQ's
  ``HQQMatmulNoCacheDeq`` and FBGEMM FP8 in the compute dtype.
- bitsandbytes int8 keeps the layer's input for backward when it needs a gradient (``ctx.tensors =
  (CAt, subA, A)``, lines 186-188) and its outlier columns (data-dependent, a few columns: not
  counted).

Only bitsandbytes (0.50) installs and runs here: its int8 and 4-bit layouts are checked against the
library (tests/planner/methods/test_bases.py, tests/validate/test_cpu_smoke.py); GPTQ, AWQ, HQQ and
FBGEMM FP8 come from their documented layouts and the planner's output says so.
"""

from __future__ import annotations

from fitplan.dtypes import QUANTIZED_LAYOUTS
from fitplan.frozen import frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.setup import TrainingSetup


@frozen
class QuantizedBase:
    name: str
    storage: str           # the packed weight's dtype-table name
    upcast: bool           # prepare_model_for_kbit_training upcasts the other parameters to fp32
    checkpointing: bool    # ... and turns gradient checkpointing on
    saves_input: bool      # the kernel keeps its input for the input's gradient (bitsandbytes int8)
    dequant_in_input_dtype: bool   # the backward dequantizes to the input's dtype (else the compute dtype)
    runs_here: bool        # the library installs and runs on this project's CPU machines
    source: str


BASES: dict[str, QuantizedBase] = {
    b.name: b
    for b in (
        QuantizedBase("nf4", "nf4", True, True, False, False, True, "bitsandbytes 0.50 Linear4bit (NF4)"),
        QuantizedBase("fp4", "fp4", True, True, False, False, True, "bitsandbytes 0.50 Linear4bit (FP4)"),
        QuantizedBase("bnb-int8", "bnb-int8", True, True, True, True, True, QUANTIZED_LAYOUTS["bnb-int8"].source),
        QuantizedBase("gptq-int4", "gptq-int4", False, True, False, False, False, QUANTIZED_LAYOUTS["gptq-int4"].source),
        QuantizedBase("gptq-int8", "gptq-int8", False, True, False, False, False, QUANTIZED_LAYOUTS["gptq-int8"].source),
        QuantizedBase("awq", "awq", True, False, False, False, False, QUANTIZED_LAYOUTS["awq"].source),
        QuantizedBase("hqq", "hqq", False, True, False, False, False, QUANTIZED_LAYOUTS["hqq"].source),
        QuantizedBase("fp8", "fp8-e4m3", True, False, False, False, False, QUANTIZED_LAYOUTS["fp8"].source),
    )
}


def quantized_base(setup: TrainingSetup) -> QuantizedBase | None:
    """The setup's quantized base, or None for a base in the training dtype."""
    return BASES.get(setup.base)


def note(base: QuantizedBase) -> str:
    """What the output says about where a base's figures come from."""
    if base.runs_here:
        return f"{base.name} base: {base.source}, checked against bitsandbytes on this machine"
    return (f"{base.name} base: from the documented layout ({base.source}); its kernels do not install here, "
            "so the bytes are not checked against the library")


def four_bit(quant: str, setup: TrainingSetup) -> dict[str, Any]:
    """bitsandbytes' 4-bit loading settings (``Method.quantization_config``'s form)."""
    return {"bits": 4, "quant_type": quant, "double_quant": setup.double_quant, "compute_dtype": setup.compute_dtype}


def quantization_config(base: QuantizedBase, setup: TrainingSetup) -> dict[str, Any]:
    """The bitsandbytes settings the validator loads the base with (bitsandbytes bases only).

    Raises:
        PlanError: a base whose library does not run here.
    """
    from fitplan.errors import PlanError

    if not base.runs_here:
        raise PlanError(f"--base {base.name} cannot be loaded here (its kernels do not install on a CPU machine); "
                        "the planner's figures for it are from the documented layout")
    if base.name == "bnb-int8":
        return {"bits": 8}
    return four_bit(base.name, setup)
