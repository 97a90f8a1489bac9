"""Quantized bases for the LoRA family (--base): exact storage layouts, what the loader and the kernels
change, and bitsandbytes' int8 layout against the library itself (the only quantizer that installs
and runs on this project's CPU machines; GPTQ, AWQ, HQQ and FBGEMM FP8 are their documented layouts)."""

import pytest
from fitplan.catalog import load_preset
from fitplan.dtypes import QUANTIZED_LAYOUTS, nbytes, quantized_state_bytes
from fitplan.estimate import estimate
from fitplan.methods import REGISTRY
from fitplan.methods.bases import BASES, note
from fitplan.setup import TrainingSetup

N = 4096 * 4096


@pytest.mark.parametrize("storage, packed, state", [
    # GPTQ int4, group 128: qweight in*out/2; qzeros 32 groups x 4096 x 4 bits; fp16 scales; int32 g_idx
    ("gptq-int4", N // 2, 32 * 4096 // 2 + 2 * 32 * 4096 + 4 * 4096),
    ("gptq-int8", N, 32 * 4096 + 2 * 32 * 4096 + 4 * 4096),
    # AWQ (GEMM, 4-bit, group 128): no g_idx
    ("awq", N // 2, 32 * 4096 // 2 + 2 * 32 * 4096),
    # HQQ 4-bit, group 64: a 16-bit scale and zero per group
    ("hqq", N // 2, 2 * 2 * N // 64),
    # FP8 e4m3 per channel, bitsandbytes LLM.int8: one fp32 per output row
    ("fp8-e4m3", N, 4 * 4096),
    ("bnb-int8", N, 4 * 4096),
])
def test_layouts_of_a_4096_square_weight(storage, packed, state):
    assert nbytes(N, storage) == packed
    assert quantized_state_bytes(storage, N, 4096) == state


def test_every_base_says_where_its_figures_come_from():
    assert {b.storage for b in BASES.values()} - {"nf4", "fp4"} == {q.storage for q in QUANTIZED_LAYOUTS.values()}
    assert "checked against bitsandbytes" in note(BASES["bnb-int8"])
    for name in ("gptq-int4", "gptq-int8", "awq", "hqq", "fp8"):
        assert "documented layout" in note(BASES[name]) and "not checked" in note(BASES[name])
    shape = load_preset("llama-3.2-1b").shape
    assert REGISTRY["lora"].notes(shape, TrainingSetup(base="awq")) == (note(BASES["awq"]),)
    assert REGISTRY["lora"].notes(shape, TrainingSetup()) == ()


def test_a_nf4_base_is_qlora():
    entry = load_preset("llama-3.1-8b")
    lora = estimate(entry, TrainingSetup(method="lora", base="nf4"))
    qlora = estimate(entry, TrainingSetup(method="qlora"))
    assert lora.phases == qlora.phases and lora.setup.checkpointing and lora.trainable_params == qlora.trainable_params


def test_what_each_loader_does():
    entry = load_preset("llama-3.1-8b")
    plain = estimate(entry, TrainingSetup(method="lora"))
    for base in ("gptq-int4", "hqq"):
        # no fp32 upcast (peft utils/other.py 197-203), checkpointing on (221-233): bf16 activations
        s = TrainingSetup(method="lora", base=base)
        assert s.checkpointing and s.activation_bytes == 2
    for base in ("awq", "fp8"):
        s = TrainingSetup(method="lora", base=base)      # upcast, but not checkpointing
        assert not s.checkpointing and s.activation_bytes == 4
    gptq = estimate(entry, TrainingSetup(method="lora", base="gptq-int4", grad_ckpt=False))
    # 4-bit decoder linears; the embedding and the head stay bf16
    assert gptq.peak.weights + gptq.peak.quantization_state < plain.peak.weights / 2
    int8 = TrainingSetup(method="lora", base="bnb-int8")
    assert int8.checkpointing and int8.activation_bytes == 4


def test_bnb_int8_keeps_every_quantized_input_even_with_checkpointing():
    shape = load_preset("llama-3.2-1b").shape
    from fitplan.memory.activations import activation_forms

    plain = activation_forms(shape, TrainingSetup(method="lora", base="nf4"))
    int8 = activation_forms(shape, TrainingSetup(method="lora", base="bnb-int8"))
    h, i = shape.hidden_size, shape.intermediate_size
    # q/k/v share one input, o_proj, gate/up share one, down_proj: fp32 each
    assert int8.checkpoint.token - plain.checkpoint.token == 4 * (3 * h + i)


@pytest.mark.torch
def test_bnb_int8_storage_equals_bitsandbytes_on_cpu():
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    lin = torch.nn.Linear(256, 688, bias=False)
    q = bnb.nn.Linear8bitLt(256, 688, bias=False, has_fp16_weights=False)
    q.weight = bnb.nn.Int8Params(lin.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    q = q.to("cpu")
    q.weight = bnb.nn.Int8Params(*bnb.functional.int8_vectorwise_quant(lin.weight.data.half())[:1],
                                 requires_grad=False, has_fp16_weights=False)
    cb = q.weight.data
    scb = bnb.functional.int8_vectorwise_quant(lin.weight.data.half())[1]
    measured = cb.untyped_storage().nbytes() + scb.untyped_storage().nbytes()
    assert measured == nbytes(256 * 688, "bnb-int8") + quantized_state_bytes("bnb-int8", 256 * 688, 256)
