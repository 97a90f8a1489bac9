"""Every preset's parameter count equals what transformers reports on the meta device."""

import json

import pytest
from fitplan.architecture import shape_from_config
from fitplan.catalog import data_dir, load_preset, model_names, preset_info
from fitplan.errors import PlanError


def _meta_count(raw: dict) -> tuple[int, int]:
    import torch
    import transformers
    from fitplan.families import LOADS_VISION, language_config

    if raw["model_type"] in LOADS_VISION:        # AutoModelForCausalLM builds the image-text model
        cfg = dict(raw)
    else:
        cfg, _ = language_config(raw, "preset")  # a multimodal checkpoint: its language model
        cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    params = list(model.parameters())  # deduplicates tied weights
    return sum(p.numel() for p in params), len(params)


@pytest.mark.torch
@pytest.mark.parametrize("name", model_names())
def test_preset_count_matches_transformers(name):
    entry = load_preset(name)
    raw = json.loads((data_dir() / "models" / preset_info(name)["file"]).read_text())
    if raw["model_type"] == "qwen":
        pytest.skip("the original Qwen's modelling code lives in its repository (trust_remote_code), "
                    "not in transformers; its counts are checked by hand in test_families.py")
    count, tensors = _meta_count(raw)
    assert entry.shape.parameter_count == count
    assert entry.shape.param_tensors == tensors
    assert entry.reference_parameters == count


def test_known_counts():
    assert load_preset("llama-3.2-3b").shape.parameter_count == 3_212_749_824
    assert load_preset("llama-3.1-8b").shape.parameter_count == 8_030_261_248
    assert load_preset("llama-2-7b").shape.parameter_count == 6_738_415_616
    assert load_preset("mixtral-8x7b").shape.parameter_count == 46_702_792_704


def test_falcon_multi_query_uses_one_kv_head():
    shape = load_preset("falcon-7b").shape
    assert shape.num_kv_heads == 1
    assert shape.matrix("qkv").out_features == (71 + 2) * 64


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "must hold a JSON object"),
        ({}, "missing required field 'model_type'"),
        ({"model_type": "t5"}, "architecture 't5'"),       # the generic path's reason, or the validate extra
        ({"model_type": "llama", "hidden_size": 64}, "missing required field 'intermediate_size'"),
        ({"model_type": "llama", "hidden_size": -64, "intermediate_size": 8}, "must be a positive integer"),
        ({"model_type": "llama", "hidden_size": "64", "intermediate_size": 8}, "must be a positive integer"),
        ({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
          "num_hidden_layers": 10**15, "vocab_size": 100}, "absurdly large"),
        ({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 6,
          "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}, "must be a multiple"),
    ],
)
def test_bad_configs_are_plan_errors(raw, message):
    with pytest.raises(PlanError, match=message):
        shape_from_config(raw, "cfg")
