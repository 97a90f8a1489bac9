"""The generic path (``fitplan.validate.generic``): any config transformers can build, planned.

Every causal-LM model type of transformers is built from its default config, shrunk, and its
generic shape must count the meta model's parameters exactly; the types transformers cannot build
from their default config are listed with the reason and must still fail. The fake-tensor
measurement of a model with a family reader agrees with the family path's; T5 and BERT give a
positive peak with the categories their step has; the cache answers the second call.
"""

import json
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from fitplan.architecture import shape_from_config  # noqa: E402
from fitplan.errors import PlanError  # noqa: E402
from fitplan.frozen import replace  # noqa: E402
from fitplan.setup import TrainingSetup  # noqa: E402
from fitplan.validate import generic  # noqa: E402
from fitplan.validate.generic import (  # noqa: E402
    GenericMeasurement,
    cache_dir,
    cache_path,
    generic_measure,
    generic_plan,
    generic_shape,
    small_config,
)
from fitplan.validate.measure import measure_fake  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "configs"

# model type -> why transformers 5.24 cannot build it from its default config (a fragment of its error)
KNOWN_FAILURES = {
    "cohere_compass_text": "KeyError: 'full_attention'",             # default layer_types name no rope type
    "dbrx": "has no attribute 'rope_theta'",                          # DbrxAttentionConfig lacks the rope fields
    "dots1": "empty() takes 1 positional argument",                   # a None size reaches torch.empty
    "gemma3n": "requires the timm library",                           # the vision tower is a timm model
    "gemma4_assistant": "hidden_size_per_layer_input must be 0",      # its config refuses its own defaults
    "hunyuan_v1_dense": "unsupported operand type(s) for ** or pow()",  # no rope_theta in the default config
    "hunyuan_v1_moe": "unsupported operand type(s) for ** or pow()",
    "lfm2_moe": "'NoneType' object is not subscriptable",             # no layer_types in the default config
    "ministral": "unsupported operand type(s) for ** or pow()",       # no rope_theta in the default config
    "musicgen": "has no attribute 'dropout'",                         # the composite config lacks the decoder's fields
    "musicgen_melody": "has no attribute 'dropout'",
    "nemotron": "unsupported operand type(s) for //",                 # no head_dim nor heads to derive it
    "qwen4_exp": "unsupported operand type(s) for //",
    "qwen4_exp_text": "unsupported operand type(s) for //",
    "reformer": "make sure that `is_decoder=True`",                   # the LM head needs is_decoder=True
}

def _meta_causal(raw: dict):
    cfg = AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def _small_config(model_type: str) -> tuple[dict, torch.nn.Module]:
    """The smallest of (dims and layers shrunk, layers shrunk, default) that transformers builds."""
    try:
        raw = small_config(model_type)
    except PlanError as exc:
        raise AssertionError(f"{exc}: add it to KNOWN_FAILURES") from None
    return raw, _meta_causal(raw)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(level)


@pytest.mark.parametrize("model_type", sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))
def test_generic_shape_counts_every_causal_lm_exactly(model_type):
    if model_type in KNOWN_FAILURES:
        with pytest.raises(PlanError) as err:
            generic_shape({"model_type": model_type}, model_type, task="causal")
        message = str(err.value)
        assert "\n" not in message and repr(model_type) in message
        assert KNOWN_FAILURES[model_type] in message, f"{model_type} fails otherwise now: {message}"
        return
    raw, model = _small_config(model_type)
    shape = generic_shape(raw, model_type, task="causal")
    assert shape.parameter_count == model.num_parameters(), model_type
    assert shape.model_type == model.config.model_type
    assert shape.note.startswith("generic path:")
    assert shape.embedding_params + shape.position_params + shape.decoder_params + shape.final_norm.params \
        + shape.lm_head_params + (shape.embedding_norm.params if shape.embedding_norm else 0) == shape.parameter_count
    # every nn.Linear matrix names real modules, as peft's suffix match finds them
    from transformers.pytorch_utils import Conv1D

    linears = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    for m in shape.matrices:
        if m.is_linear:
            assert any(n.endswith("." + m.name) for n in linears), (model_type, m.name)


def test_known_failures_are_causal_lm_types():
    assert set(KNOWN_FAILURES) <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


# ---- the measurement ------------------------------------------------------------------------
def _tiny_llama() -> dict:
    return json.loads((CONFIGS / "tiny-llama.json").read_text())


T5 = {"model_type": "t5", "d_model": 64, "d_ff": 128, "num_layers": 4, "num_decoder_layers": 5, "num_heads": 4,
      "d_kv": 16, "vocab_size": 256}
BERT = {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 128}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_generic_measurement_of_tiny_llama_agrees_with_the_family_path(method):
    raw = _tiny_llama()
    setup = TrainingSetup(method=method, seq_len=64, batch_size=2, device="cpu")
    family = measure_fake(raw, shape_from_config(raw, "tiny"), setup)
    shape = generic_shape(raw, "tiny")
    assert shape.parameter_count == shape_from_config(raw, "tiny").parameter_count
    m = generic_measure(raw, shape, setup)
    assert m.task == "causal" and m.model_type == "llama"
    assert abs(m.peak_bytes - family.peak_bytes) <= 0.02 * family.peak_bytes
    assert m.peak_phase == family.peak_phase
    for category, nbytes in family.breakdown.shared().items():
        assert abs(m.categories[category] - nbytes) <= 0.02 * max(family.peak_bytes, 1), category
    assert m.measured_layers == [{"layers": 2}, {"layers": 3}] and m.extrapolated_to == {"layers": 4}
    assert any("extrapolated linearly to 4" in n for n in m.notes)
    if method == "full":
        assert m.trainable_params == m.total_params == shape.parameter_count
    else:
        # LoRA on q and v, rank 16: (256 + 256) x 16 x 2 per q, and 256 x 16 + 16 x 128 per v, 4 layers
        assert m.total_params > shape.parameter_count
        assert m.trainable_params == m.total_params - shape.parameter_count == 4 * (16 * (256 + 256) + 16 * (256 + 128))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_t5_measures_both_stacks(method):
    shape = generic_shape(T5, "tiny-t5")
    assert shape.num_layers == 9            # encoder 4 + decoder 5
    setup = TrainingSetup(method=method, seq_len=32, batch_size=2, precision="fp32", device="cpu")
    m = generic_measure(T5, shape, setup)
    assert m.task == "seq2seq" and m.peak_bytes > 0
    assert m.extrapolated_to == {"decoder": 5, "encoder": 4}
    assert len(m.measured_layers) == 3
    b = m.breakdown
    assert b.weights > 0 and b.optimizer_states > 0 and b.activations > 0 and b.logits_loss > 0
    assert b.quantization_state == 0 and b.overhead == 0
    assert m.phases["optimizer"]["gradients"] > 0
    assert sum(b.parts().values()) == m.peak_bytes
    if method == "lora":
        assert 0 < m.trainable_params < shape.parameter_count
    else:
        assert m.trainable_params == shape.parameter_count


def test_bert_is_a_sequence_classifier_with_every_category():
    shape = generic_shape(BERT, "tiny-bert")
    assert shape.parameter_count == 163_010 and shape.num_layers == 4
    setup = TrainingSetup(method="full", seq_len=32, batch_size=2, precision="fp32", device="cpu")
    m = generic_measure(BERT, shape, setup)
    assert m.task == "seq_cls" and m.peak_bytes > 0
    b = m.breakdown
    assert b.weights > 0 and b.gradients > 0 and b.optimizer_states > 0 and b.activations > 0 and b.logits_loss > 0
    assert m.trainable_params == m.total_params == shape.parameter_count
    lora = generic_measure(BERT, shape, setup.with_(method="lora"))
    # peft's SEQ_CLS task trains a copy of the classifier beside the adapters
    assert lora.trainable_params == 4 * 2 * 16 * (64 + 64) + (64 * 2 + 2)
    assert lora.peak_bytes < m.peak_bytes


def test_choose_task():
    for raw, task in ((T5, "seq2seq"), (BERT, "seq_cls"), (_tiny_llama(), "causal"),
                      ({"model_type": "bart"}, "seq2seq"), ({"model_type": "deberta-v2"}, "seq_cls")):
        assert generic._build_config(raw, None)[3] == task, raw["model_type"]


# ---- the cache -------------------------------------------------------------------------------
def test_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("FITPLAN_HOME", str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / "cache" / "generic")
    monkeypatch.delenv("FITPLAN_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == str(tmp_path / "xdg" / "fitplan" / "generic")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == str(tmp_path / "user" / ".cache" / "fitplan" / "generic")


def test_cache_key_follows_the_config_and_the_setup():
    setup = TrainingSetup(method="lora", seq_len=32, device="cpu")
    key = generic.cache_key(BERT, setup)
    assert key == generic.cache_key(dict(reversed(list(BERT.items()))), setup)       # canonical JSON
    assert key == generic.cache_key({**BERT, "_name_or_path": "somewhere"}, setup)  # not the model's
    assert key != generic.cache_key({**BERT, "vocab_size": 257}, setup)
    assert key != generic.cache_key(BERT, setup.with_(seq_len=64))
    assert key != generic.cache_key(BERT, setup.with_(lora_rank=8))
    assert key != generic.cache_key(BERT, setup.with_(optimizer="sgd"))


def test_second_call_is_a_cache_hit_and_a_corrupt_file_is_rewritten(monkeypatch, tmp_path):
    monkeypatch.setenv("FITPLAN_HOME", str(tmp_path))
    setup = TrainingSetup(method="lora", seq_len=32, batch_size=2, precision="fp32", device="cpu")
    shape, result, cached = generic_plan(BERT, "tiny-bert", setup)
    assert not cached and isinstance(result, GenericMeasurement)
    path = Path(cache_path(BERT, setup))
    assert path.parent == tmp_path / "cache" / "generic" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]     # no temporary file left behind

    start = time.perf_counter()
    shape2, result2, cached2 = generic_plan(BERT, "another-name", setup)
    assert cached2 and time.perf_counter() - start < 0.5
    assert result2 == result
    assert shape2 == replace(shape, name="another-name")
    assert shape2.parameter_count == shape.parameter_count and shape2.name == "another-name"

    for garbage in (b"{not json", b'{"schema": 1, "shape": {}, "result": {}}', b"\xff\xfe"):
        path.write_bytes(garbage)
        _, result3, cached3 = generic_plan(BERT, "tiny-bert", setup)
        assert not cached3 and result3 == result
        assert json.loads(path.read_text())["result"]["peak_bytes"] == result.peak_bytes
    assert generic_plan(BERT, "tiny-bert", setup)[2]


def test_an_unwritable_cache_is_no_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FITPLAN_HOME", str(blocker))
    setup = TrainingSetup(method="full", seq_len=16, batch_size=1, precision="fp32", device="cpu")
    _, result, cached = generic_plan(BERT, "tiny-bert", setup)
    assert not cached and result.peak_bytes > 0


# ---- errors ------------------------------------------------------------------------------------
def test_a_config_transformers_cannot_build_is_one_clear_line():
    with pytest.raises(PlanError) as err:
        generic_shape({"model_type": "reformer"}, "r", task="causal")
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith("transformers ") and "'reformer'" in message and "is_decoder=True" in message
    with pytest.raises(PlanError, match="'no-such-model'"):
        generic_shape({"model_type": "no-such-model"}, "x")
    with pytest.raises(PlanError, match="no model_type"):
        generic_shape({"hidden_size": 64}, "x")


def test_missing_torch_names_the_validate_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    for call in (lambda: generic_shape(BERT, "x"),
                 lambda: generic_plan(BERT, "x", TrainingSetup(device="cpu")),
                 lambda: generic_measure(BERT, None, TrainingSetup(device="cpu"))):
        with pytest.raises(PlanError) as err:
            call()
        assert str(err.value) == "the generic path needs the validate extra: pip install 'fitplan[validate]'"


def test_a_quantized_base_is_refused_on_fake_tensors():
    shape = generic_shape(BERT, "tiny-bert")
    with pytest.raises(PlanError, match="fake tensors"):
        generic_measure(BERT, shape, TrainingSetup(method="qlora", device="cpu"))


# ---- the planner's generic path: a model type without a family reader, planned -----------------------
def _tiny(model_type: str, **extra) -> dict:
    fields = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)
    cfg = AutoConfig.for_model(model_type, **fields).to_dict()
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _write(tmp_path, raw) -> str:
    path = tmp_path / f"{raw['model_type']}.json"
    path.write_text(json.dumps(raw, default=str))
    return str(path)


def test_the_planner_plans_an_architecture_without_a_family_reader(monkeypatch, tmp_path):
    import subprocess

    import fitplan

    monkeypatch.setenv("FITPLAN_HOME", str(tmp_path / "home"))
    raw = _tiny("starcoder2")
    path = _write(tmp_path, raw)
    p = fitplan.plan(model=path, method="lora", seq_len=64)
    assert p.model.shape.parameter_count == _meta_causal(raw).num_parameters()
    note = p.model.shape.note
    assert note.startswith("generic path:") and "Starcoder2ForCausalLM" in note
    assert "the trace against a fake-tensor measurement" in note and "full " in note and "lora " in note
    assert p.methods["lora"].estimate.peak_bytes > 0
    assert any(n.startswith("generic path:") for n in p.notes)
    # the second plan reads the cached shape and imports no torch
    code = f"import sys, fitplan; fitplan.plan(model={path!r}); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "FITPLAN_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("model_type, extra, why", [
    ("t5", {}, "it is not a decoder-only causal LM"),
    ("olmoe", {"num_experts": 4, "num_experts_per_tok": 2}, "it is a mixture of experts without a family reader"),
])
def test_the_planner_refuses_what_its_trace_cannot_follow(monkeypatch, tmp_path, model_type, extra, why):
    import fitplan

    monkeypatch.setenv("FITPLAN_HOME", str(tmp_path / "home"))
    raw = {k: v for k, v in AutoConfig.for_model(model_type).to_dict().items() if not k.startswith("_")} \
        if model_type == "t5" else _tiny(model_type, **extra)
    with pytest.raises(PlanError, match=why) as info:
        fitplan.plan(model=_write(tmp_path, raw))
    assert "generic_plan" in str(info.value)


def test_without_torch_the_message_names_the_validate_extra(monkeypatch, tmp_path):
    import importlib.util

    import fitplan

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(PlanError, match=r"architecture 'starcoder2' is not one of the planner's own families.*"
                                        r"pip install 'fitplan\[validate\]'"):
        fitplan.plan(model=_write(tmp_path, _tiny("starcoder2")))
