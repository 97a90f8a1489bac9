"""The real command line, in a subprocess: the main job, JSON, and one clean line for bad input."""

import json
import os
import subprocess
import sys

import pytest

PLAN = [sys.executable, "-m", "fitplan"]


def run(*args, cwd=None):
    return subprocess.run([*PLAN, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_main_job():
    r = run("--model", "llama-70b", "--gpu", "a100-80")
    assert r.returncode == 0, r.stderr
    assert "llama-3.3-70b" in r.stdout and "70,553,706,496 parameters" in r.stdout
    for method in ("full", "lora", "qlora", "adapter", "prefix", "ptuning", "prompt"):
        assert f"\n{method} " in r.stdout or f"* {method} " in r.stdout
    assert "Recommended: qlora" in r.stdout
    assert "Assumed, not chosen (change with the option named):" in r.stdout
    assert "[1] sequence length 2048 (--seq-len)" in r.stdout
    assert "qlora" in r.stdout and "✓" in r.stdout


def test_json_is_integer_bytes():
    r = run("--model", "llama-3.1-8b", "--gpu", "h100-80", "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["model"]["parameters"] == 8_030_261_248
    for row in payload["methods"]:
        assert isinstance(row["peak_bytes"], int)
        assert sum(row["peak_breakdown"].values()) == row["peak_bytes"]
        assert row["phases"][row["peak_phase"]]["total"] == row["peak_bytes"]
    assert payload["recommendation"]["method"] in {"full", "lora", "qlora"}


def test_one_method_prints_phases():
    r = run("--model", "llama-3.1-8b", "--gpu", "h100-80", "--method", "lora")
    assert r.returncode == 0, r.stderr
    assert "6,815,744 trainable parameters" in r.stdout
    assert "backward (peak)" in r.stdout


def test_config_path_and_folder(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for target in (str(tmp_path), str(tmp_path / "config.json")):
        r = run("--model", target, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["model"]["parameters"] > 0


def test_models_and_gpus_listings():
    assert "llama-3.1-405b" in run("models").stdout
    assert "h100-80" in run("gpus").stdout


BAD = [
    (["--model", "llama-8bb"], "unknown model 'llama-8bb'. Did you mean llama-8b"),
    (["--model", "llama-3.1-8b", "--gpu", "a100-8"], "unknown GPU 'a100-8'. Did you mean a100-80"),
    (["--model", "llama-3.1-8b", "--method", "loraa"], "unknown method 'loraa'. Did you mean lora"),
    (["--model", "llama-3.1-8b", "--optimizer", "adam"], "unknown optimizer 'adam'. Did you mean adamw"),
    (["--model", "llama-3.1-8b", "--precision", "bf17"], "unknown precision 'bf17'"),
    (["--model", "llama-3.1-8b", "--attention", "flash3"], "unknown attention implementation 'flash3'"),
    (["--model", "llama-3.1-8b", "--seq-len", "0"], "seq-len must be positive, got 0"),
    (["--model", "llama-3.1-8b", "--batch-size", "-3"], "batch-size must be positive, got -3"),
    (["--model", "llama-3.1-8b", "--lora-rank", "0"], "lora-rank must be positive"),
    (["--model", "llama-3.1-8b", "--seq-len", "abc"], "'abc' is not a valid integer"),
    (["--model", "llama-3.1-8b", "--gpu", "t4", "--precision", "bf16"], "t4 does not support bf16"),
    (["--model", "llama-3.1-8b", "--method", "prefix", "--grad-ckpt"], "prefix tuning does not work with gradient checkpointing"),
    (["--model", "gpt2", "--lora-targets", "q_proj"], "LoRA target 'q_proj' matches no linear module"),
    (["--model", "llama-3.1-8b", "--gpu", "h100-80", "--device", "cpu"], "plans for a CUDA device"),
    ([], "missing --model"),
    (["--model", "llama-3.1-8b", "--no-such-option"], "No such option"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_exit_2(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


BAD_CONFIGS = [
    ("not json {", "not valid JSON"),
    ("", "the file is empty"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"model_type": "llama"}', "missing required field 'hidden_size'"),
    # torch installed: the generic path's reason (not a decoder-only causal LM); without: the validate extra
    ('{"model_type": "t5", "d_model": 512}', "architecture 't5'"),
    ('{"model_type": "llama", "hidden_size": "big", "intermediate_size": 8}', "must be a positive integer"),
    ('{"model_type": "llama", "hidden_size": NaN, "intermediate_size": 8}', "not valid JSON"),
    ('{"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, '
     '"num_hidden_layers": 1000000000000000, "vocab_size": 100}', "absurdly large"),
    ('{"model_type": "llama", "hidden_size": 0, "intermediate_size": 8}', "must be a positive integer, got 0"),
]


@pytest.mark.parametrize("text, message", BAD_CONFIGS)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    r = run("--model", str(path))
    assert r.returncode == 2, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr


def test_folder_without_config(tmp_path):
    r = run("--model", str(tmp_path))
    assert r.returncode == 2
    assert "holds no config.json" in r.stderr


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_symlink_loop(tmp_path):
    loop = tmp_path / "config.json"
    os.symlink(loop, loop)
    r = run("--model", str(loop))
    assert r.returncode == 2
    assert "symbolic link loop" in r.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0)
    r = run("--model", str(path))
    assert r.returncode == 2
    assert "cannot be read" in r.stderr


def test_no_color_and_pipes_get_plain_text():
    r = subprocess.run([*PLAN, "--model", "gpt2", "--gpu", "t4"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0 and "\x1b[" not in r.stdout


@pytest.mark.parametrize("args, message", [
    (["validate", "--model", "gpt2", "--seq-len", "0"], "--seq-len must be positive, got 0"),
    (["validate", "--model", "gpt2", "--batch-size", "-1"], "--batch-size must be positive, got -1"),
    (["validate", "--model", "gpt2", "--steps", "1"], "--steps must be at least 2"),
    (["validate", "--model", "gpt2", "--mode", "tpu"], "unknown mode 'tpu'"),
])
def test_validate_refuses_bad_sizes_before_importing_anything_heavy(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_validate_help_states_its_true_defaults():
    text = run("validate", "--help").stdout
    assert "Tokens per sequence [default: 512]." in text and "[default: 2048]" not in text
