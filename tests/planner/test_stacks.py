"""Training stacks (planner/stacks.py, data/stacks/*.json): each file names its version and cites a
source for every default; --stack applies them under the user's own options, and the output says so."""

import json
import re
import subprocess
import sys

import fitplan
import pytest
from fitplan import stacks
from fitplan.errors import PlanError
from fitplan.request import DEFAULTS

PLAN = [sys.executable, "-m", "fitplan"]


def run(*args):
    return subprocess.run([*PLAN, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", stacks.NAMES)
def test_every_stack_names_its_version_and_a_source_for_each_default(name):
    st = stacks.load(name)
    assert st.name == name and st.version and st.read
    assert st.defaults, name
    for d in st.defaults:
        assert d.option in stacks.SETTABLE
        assert re.search(r"\.(py|yaml|json):\d+", d.source), (name, d.option, d.source)   # a file and its line


@pytest.mark.parametrize("name", stacks.NAMES)
def test_every_stack_plans_every_seed_method(name):
    p = fitplan.plan(model="llama-3.2-1b", stack=name)
    assert all(r.estimate is not None or "checkpointing" in (r.error or "") for r in p.methods.values()), \
        {k: r.error for k, r in p.methods.items()}


def test_hf_is_what_the_planner_modelled_without_a_stack():
    for k, v in ((d.option, d.value) for d in stacks.load("hf").defaults):
        assert DEFAULTS[k] == v or (k == "modules_to_save" and not v), k
    a = fitplan.plan(model="llama-3.1-8b", gpu="h100-80").to_dict()
    b = fitplan.plan(model="llama-3.1-8b", gpu="h100-80", stack="hf").to_dict()
    assert [m["peak_bytes"] for m in a["methods"]] == [m["peak_bytes"] for m in b["methods"]]
    assert a["stack"]["name"] == "hf" and a["stack"]["given"] is False and b["stack"]["given"] is True
    assert not any(n.startswith("stack ") for n in a["notes"])     # nothing said where no stack was asked for


def test_the_output_names_the_stack_what_it_set_and_where_from():
    p = fitplan.plan(model="llama-3.1-8b", method="lora", stack="torchtune")
    note = next(n for n in p.notes if n.startswith("stack torchtune"))
    assert "torchtune 0.6.1" in note and "--loss chunked:8" in note and "ce_chunked_output_loss.py:30" in note
    assert "--adapter-dtype bf16" in note and "--lora-rank 8" in note
    st = p.to_dict()["stack"]
    assert st["version"] == "0.6.1" and st["applied"]["loss"] == "chunked:8"
    assert st["defaults"]["loss"]["source"].startswith("recipes/configs/llama3_1/8B_lora_single_device.yaml:71")
    s = p.setup
    assert (s.loss, s.adapter_dtype, s.lora_rank, s.lora_alpha, s.precision, s.checkpointing) == \
        ("chunked:8", "bf16", 8, 16, "bf16", True)
    assert "precision" not in p.assumed                       # the stack chose it


def test_the_users_options_win_over_the_stacks_and_are_said_to():
    p = fitplan.plan(model="llama-3.1-8b", method="lora", stack="torchtune", loss="standard", lora_rank=32)
    assert p.setup.loss == "standard" and p.setup.lora_rank == 32
    assert "kept as given: --loss, --lora-rank" in next(n for n in p.notes if n.startswith("stack "))


def test_per_method_defaults_apply_to_their_method_only():
    p = fitplan.plan(model="llama-3.2-1b", stack="trl")
    assert p.methods["qlora"].estimate.setup.adapter_dtype == "bf16"        # sft_trainer.py:908-911
    assert p.methods["lora"].estimate.setup.adapter_dtype == "fp32"
    assert p.methods["full"].estimate.setup.adapter_dtype == "fp32"          # not a LoRA option: reset
    t = fitplan.plan(model="llama-3.2-1b", stack="torchtune", method="full").method.estimate.setup
    assert (t.optimizer, t.optimizer_in_backward) == ("paged-adamw-8bit", True)


def test_a_stack_never_forces_a_refusal_the_user_did_not_ask_for():
    # unsloth checkpoints and offloads; prefix tuning refuses checkpointing: its row is planned without both
    p = fitplan.plan(model="llama-3.2-1b", stack="unsloth", method="prefix").method.estimate.setup
    assert not p.checkpointing and not p.activation_offload
    # without checkpointing there is nothing to offload
    q = fitplan.plan(model="llama-3.2-1b", stack="unsloth", method="lora", grad_ckpt=False).method.estimate.setup
    assert not q.activation_offload


def test_stack_files_are_checked_on_load():
    ok = {"name": "x", "title": "x", "version": "1", "read": "r", "defaults": {"loss": {"value": "liger", "source": "a.py:1"}}}
    assert stacks.parse(ok, "x.json").default("loss").value == "liger"
    with pytest.raises(PlanError, match=r"x.json: unknown key\(s\) extra"):
        stacks.parse({**ok, "extra": 1}, "x.json")
    with pytest.raises(PlanError, match="defaults.seq_len: not an option a stack sets"):
        stacks.parse({**ok, "defaults": {"seq_len": {"value": 1, "source": "a:1"}}}, "x.json")
    with pytest.raises(PlanError, match="defaults.compile.value: must be true or false, got 'yes'"):
        stacks.parse({**ok, "defaults": {"compile": {"value": "yes", "source": "a:1"}}}, "x.json")
    with pytest.raises(PlanError, match="must be an object with 'value' and a non-empty 'source'"):
        stacks.parse({**ok, "defaults": {"loss": {"value": "cce"}}}, "x.json")


def test_cli_stack_json_and_text():
    r = run("--model", "llama-3.1-8b", "--method", "qlora", "--stack", "unsloth", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["stack"]["name"] == "unsloth" and d["stack"]["applied"]["loss"] == "unsloth"
    m = d["methods"][0]
    assert m["other_peaks"]["highest"] in ("step", "model_load", "checkpoint_save")
    assert m["activation_host_bytes"] > 0 and isinstance(m["activation_host_bytes"], int)
    t = run("--model", "llama-3.1-8b", "--method", "qlora", "--stack", "unsloth")
    assert "Note: stack unsloth (unsloth 2026.10.9" in t.stdout
    assert "Host memory:" in t.stdout and "Beside the step (" in t.stdout


def test_cli_unknown_stack():
    r = run("--model", "llama-3.1-8b", "--stack", "megatron")
    assert r.returncode == 2
    assert "unknown stack 'megatron'" in r.stderr and "torchtune" in r.stderr
