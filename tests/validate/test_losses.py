"""The stacks' training steps measured on this CPU by the validator's tracker (validate/tracker.py,
validate/measure.py) beside the planner: torchtune's chunked cross-entropy reproduced with plain
torch, LitGPT's 128-token chunks, TRL's own fused LM head (SFTTrainer's loss path; needs trl),
optimizer in backward, bf16 adapters and a trained head copy. A model whose vocabulary dwarfs its
hidden size (32,000 x 64) makes the loss most of the step, so each loss's mechanism decides the peak.
Liger, unsloth and Cut Cross-Entropy run Triton kernels only: the validator refuses them, saying so."""

import json

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("peft")

from fitplan.validate.run import validate_one  # noqa: E402

CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000, "rms_norm_eps": 1e-05,
          "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("losses") / "big-vocab-llama.json"
    path.write_text(json.dumps(CONFIG))
    return str(path)


_SEEN: dict = {}


def _run(model, **settings):
    key = tuple(sorted(settings.items()))
    if key not in _SEEN:
        base = dict(model=model, method="lora", seq_len=256, batch_size=2, precision="fp32", mode="cpu", steps=2)
        record = validate_one({**base, **settings})
        assert record["outcome"] == "ok", record.get("error")
        _SEEN[key] = record["estimate"]["tensor_peak_bytes"], record["measurement"]["peak_bytes"]
    return _SEEN[key]


@pytest.mark.parametrize("settings", [
    dict(loss="standard"),
    dict(loss="chunked:8"),                 # torchtune's CEWithChunkedOutputLoss, plain torch
    dict(loss="chunked:4", method="full"),
    dict(loss="litgpt"),
    dict(method="full", optimizer_in_backward=True),
    dict(adapter_dtype="bf16"),
    dict(modules_to_save="lm_head"),
], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_planner_within_3_percent_of_the_measured_step(model, settings):
    planned, measured = _run(model, **settings)
    assert abs(planned - measured) <= 0.03 * measured, (planned, measured)


def test_chunked_loss_removes_what_the_planner_says(model):
    standard_p, standard_m = _run(model, loss="standard")
    chunked_p, chunked_m = _run(model, loss="chunked:8")
    assert chunked_m < 0.75 * standard_m
    # the saving itself, planned against measured
    assert abs((standard_p - chunked_p) - (standard_m - chunked_m)) <= 0.03 * (standard_m - chunked_m)


def test_trl_sft_fused_lm_head(model):
    pytest.importorskip("trl")
    planned, measured = _run(model, loss="trl")
    assert abs(planned - measured) <= 0.03 * measured, (planned, measured)


def test_triton_only_losses_are_refused_with_the_reason(model):
    record = validate_one(dict(model=model, method="lora", seq_len=64, batch_size=1, precision="fp32", mode="cpu",
                               steps=2, loss="liger"))
    assert record["outcome"] != "ok"
    assert "runs Triton kernels that need a CUDA device" in record["error"]
