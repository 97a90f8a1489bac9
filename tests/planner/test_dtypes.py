"""4-bit storage counted as bitsandbytes 0.50 stores it on the CPU."""

import pytest
from fitplan.architecture import shape_from_config
from fitplan.dtypes import dtype, four_bit_bytes, nbytes
from fitplan.errors import PlanError
from fitplan.memory.weights import quantization_state, weights
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup


def _state_bytes(q, state):
    tensors = [q, state.absmax, state.code]
    if state.nested:
        tensors += [state.offset, state.state2.absmax, state.state2.code]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_published_4096_square():
    assert four_bit_bytes(4096 * 4096, double_quant=False) == 9_437_248
    assert four_bit_bytes(4096 * 4096, double_quant=True) == 8_655_940


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(4096, 4096), (100, 70), (1024, 4096), (333, 17)])
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_matches_bitsandbytes(shape, double_quant, quant_type):
    import bitsandbytes.functional as bnbf
    import torch

    w = torch.randn(*shape, dtype=torch.bfloat16)
    q, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type=quant_type)
    assert four_bit_bytes(w.numel(), double_quant=double_quant) == _state_bytes(q, state)


def test_unknown_dtype_lists_valid_names():
    with pytest.raises(PlanError, match="unknown dtype 'fp6'.*Valid: awq, bf16, bnb-int8, fp16, fp32, fp4, fp8, "
                                        "fp8-e4m3, gptq-int4, gptq-int8, hqq, int32, int64, int8, nf4, uint8"):
        dtype("fp6")
    assert nbytes(3, "nf4") == 2
    assert nbytes(3, "gptq-int4") == 2 and nbytes(3, "fp8") == 3


@pytest.mark.torch
def test_qlora_model_bytes_match_bitsandbytes_on_cpu():
    from fitplan.validate.build import build_real

    raw = dict(model_type="qwen2", hidden_size=256, intermediate_size=512, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)
    shape = shape_from_config(raw, "tiny-qwen2")
    setup = TrainingSetup(method="qlora", lora_rank=8, grad_ckpt=False, device="cpu")
    q = build_real(raw, shape, setup, "cpu")  # saved, reloaded 4-bit, prepare_model_for_kbit_training, LoRA
    measured_w = sum(p.numel() * p.element_size() for p in q.parameters())
    measured_q = 0
    for p in q.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            measured_q += _state_bytes(p, state) - p.numel() * p.element_size()
    groups = REGISTRY["qlora"].tensors(shape, setup)
    assert weights(groups) == measured_w
    assert quantization_state(groups, double_quant=True) == measured_q
