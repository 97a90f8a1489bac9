"""Fuzzing: any config dictionary and any option combination either gives a valid result whose
parts add up, or one clean error line (exit code 2) — never a traceback, never a wrong number."""

import json
import math
import subprocess
import sys

from fitplan.architecture import shape_from_config
from fitplan.catalog import ModelEntry
from fitplan.errors import PlanError
from fitplan.estimate import estimate
from fitplan.families import FAMILIES
from fitplan.setup import TrainingSetup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASE = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "n_embd": 64, "n_layer": 2,
        "n_head": 4, "n_positions": 128, "num_local_experts": 4, "num_experts_per_tok": 2}
WEIRD = st.one_of(
    st.integers(-10, 10**16), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.booleans(),
    st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def configs(draw):
    cfg = dict(BASE)
    cfg["model_type"] = draw(st.sampled_from(sorted(FAMILIES) + ["t5", "", "LLAMA"]))
    for key in draw(st.lists(st.sampled_from(sorted(BASE)), max_size=4, unique=True)):
        action = draw(st.sampled_from(["drop", "weird", "scale"]))
        if action == "drop":
            cfg.pop(key, None)
        elif action == "weird":
            cfg[key] = draw(WEIRD)
        elif isinstance(cfg.get(key), int):
            cfg[key] = cfg[key] * draw(st.sampled_from([0, 2, 3, 64, 10**6]))
    return cfg


@settings(max_examples=300, deadline=None)
@given(cfg=configs(), method=st.sampled_from(["full", "lora", "qlora", "adapter", "prefix", "prompt", "ptuning"]),
       seq=st.integers(1, 4096), batch=st.integers(1, 16))
def test_any_config_gives_a_consistent_result_or_a_plan_error(cfg, method, seq, batch):
    try:
        shape = shape_from_config(cfg, "fuzz")
        est = estimate(ModelEntry("fuzz", "x", None, shape), TrainingSetup(method=method, seq_len=seq, batch_size=batch))
    except PlanError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert shape.parameter_count > 0
    for phase in est.phases.values():
        parts = phase.parts()
        assert all(isinstance(v, int) and v >= 0 for v in parts.values())
        assert sum(parts.values()) == phase.total
    assert est.peak_bytes == max(p.total for p in est.phases.values())
    assert math.isfinite(est.trainable_percent)


OPTIONS = st.lists(
    st.sampled_from([
        ["--method", "lora"], ["--method", "qlora"], ["--method", "prefix"], ["--method", "nope"], ["--gpu", "h100-80"],
        ["--gpu", "t4"], ["--gpu", "zz"], ["--seq-len", "4096"], ["--seq-len", "-1"], ["--batch-size", "0"],
        ["--precision", "fp16"], ["--precision", "int3"], ["--optimizer", "adamw-8bit"], ["--grad-ckpt"],
        ["--attention", "eager"], ["--attention", "flash"], ["--device", "cpu"], ["--gpus", "4"],
        ["--sharding", "zero2"], ["--offload", "params"], ["--lora-targets", "all-linear"], ["--lora-targets", "zz"],
        ["--lora-rank", "100000"], ["--max-batch"], ["--tokens", "1000"], ["--json"], ["--transformers", "4"],
        ["--no-kbit-upcast"], ["--quant", "fp4"], ["--num-virtual-tokens", "0"], ["--calibration", "none"],
    ]),
    max_size=5,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=OPTIONS, model=st.sampled_from(["gpt2", "llama-3.1-8b", "mixtral-8x7b", "gemma-2-2b", "nope"]))
def test_any_option_combination_is_a_result_or_one_clean_line(options, model):
    args = [sys.executable, "-m", "fitplan", "--model", model] + [a for opt in options for a in opt]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr
    if r.returncode == 0:
        assert r.stdout.strip()
        if "--json" in args:
            json.loads(r.stdout)
    else:
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("plan: error: ")
