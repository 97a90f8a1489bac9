"""Configs as people have them: pre-quantized checkpoints, multimodal wrappers."""

import pytest
from fitplan.architecture import shape_from_config
from fitplan.families import checkpoint_quantization
from fitplan.planning import plan

LLAMA = dict(model_type="llama", hidden_size=256, intermediate_size=512, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=1000, num_hidden_layers=2)


@pytest.mark.parametrize("q, base", [
    ({"quant_method": "gptq", "bits": 4}, "gptq-int4"),
    ({"quant_method": "gptq", "bits": 8}, "gptq-int8"),
    ({"quant_method": "awq", "bits": 4}, "awq"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}, "fp4"),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "bnb-int8"),
    ({"quant_method": "fp8", "fmt": "e4m3"}, "fp8"),
    ({"quant_method": "mxfp4"}, ""),
    ({"quant_method": "compressed-tensors"}, ""),
])
def test_quantization_config_names_the_base(q, base):
    found, note = checkpoint_quantization({**LLAMA, "quantization_config": q}, "x")
    assert found == base
    assert base or note            # what is not a base is said


def test_a_gptq_checkpoint_is_planned_as_stored_for_lora(tmp_path):
    path = tmp_path / "config.json"
    import json

    path.write_text(json.dumps({**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    shape = shape_from_config(json.loads(path.read_text()), "x")
    assert shape.checkpoint_base == "gptq-int4"
    p = plan(model=str(path), method="lora")
    assert p.setup.base == "gptq-int4"
    assert any("stores its linear weights as gptq-int4" in n for n in p.notes)
    assert plan(model=str(path), method="lora", base="none").setup.base == "none"


def test_gpt_oss_mxfp4_is_trained_dequantized():
    p = plan(model="gpt-oss-20b", method="lora")
    assert p.setup.base == "none"
    assert any("MXFP4" in n for n in p.notes)
