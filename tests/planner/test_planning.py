"""The library API: plan() makes every decision the command line shows, and Plan.to_dict() is --json."""

import json
import subprocess
import sys

import fitplan
import pytest
from fitplan.errors import PlanError
from fitplan.request import Request

REQUESTS = [
    ["--model", "llama-70b", "--gpu", "a100-80"],
    ["--model", "llama-3.1-8b", "--gpu", "h100-80", "--method", "lora", "--seq-len", "4096"],
    ["--model", "mistral-7b", "--gpu", "a100-80", "--method", "full", "--gpus", "8", "--sharding", "zero3"],
    ["--model", "gpt2", "--gpu", "t4"],
    ["--model", "qwen2.5-7b", "--gpu", "rtx-4090", "--method", "qlora", "--max-batch", "--max-seq-len"],
    ["--model", "llama-3.1-405b", "--gpu", "h100-80", "--method", "full", "--tokens", "1000000000"],
    ["--model", "gemma-2-2b", "--method", "prompt", "--device", "cpu", "--precision", "fp32"],
]


def _kwargs(args):
    out, i = {}, 0
    while i < len(args):
        key = args[i][2:].replace("-", "_")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            out[key] = int(value) if value.isdigit() else value
            i += 2
        else:
            out[key] = True
            i += 1
    return out


@pytest.mark.parametrize("args", REQUESTS, ids=lambda a: " ".join(a[1:4]))
def test_to_dict_is_exactly_what_json_prints(args):
    printed = subprocess.run([sys.executable, "-m", "fitplan", *args, "--json"], capture_output=True, text=True,
                             timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == json.loads(json.dumps(fitplan.plan(**_kwargs(args)).to_dict()))


def test_the_readme_example():
    p = fitplan.plan(model="llama-70b", gpu="a100-80")
    assert (p.recommendation.method, p.recommendation.lora_rank) == ("qlora", 16)
    assert p.methods["lora"].fits is False and p.methods["lora"].peak_bytes == p.methods["lora"].estimate.peak_bytes
    assert p.methods["qlora"].recommended
    phases = fitplan.plan(model="llama-3.1-8b", gpu="h100-80", method="lora", seq_len=4096).phases
    assert set(phases) == {"forward", "backward", "optimizer"}
    assert max(phases.values(), key=lambda b: b.total) is phases["backward"]


def test_a_request_object_and_keywords_agree():
    assert fitplan.plan(Request(model="gpt2", seq_len=512)).to_dict() == fitplan.plan(model="gpt2", seq_len=512).to_dict()


def test_unknown_keyword_is_bad_input_naming_the_valid_ones():
    with pytest.raises(PlanError, match=r"unknown option\(s\) seqlen\. Valid: .*seq_len"):
        fitplan.plan(model="gpt2", seqlen=512)


def test_adjustments_are_notes_and_assumed_defaults_are_listed():
    p = fitplan.plan(model="gemma-2-2b", gpu="t4")
    assert p.setup.precision == "fp16" and p.setup.attention == "eager"
    assert p.notes == ("t4 has no bf16: planned in fp16", "gemma2 runs eager attention in transformers 5 (no SDPA path)")
    assert p.assumed == ("seq_len", "batch_size", "precision", "optimizer", "attention")
    assert fitplan.plan(model="gpt2", seq_len=64, precision="fp32").assumed == ("batch_size", "optimizer", "attention")


def test_a_chosen_setting_the_hardware_cannot_run_is_refused():
    with pytest.raises(PlanError, match="t4 does not support bf16"):
        fitplan.plan(model="gpt2", gpu="t4", precision="bf16")
    with pytest.raises(PlanError, match="gemma2 has no sdpa attention path"):
        fitplan.plan(model="gemma-2-2b", attention="sdpa")
