"""Answers a practitioner trusts, through the real command line: the recommendation pulls the levers
a practitioner pulls, "needs N" is the true fewest, the per-GPU view is per GPU, and no option is ever
silently ignored."""

import json
import subprocess
import sys

import pytest

PLAN = [sys.executable, "-m", "fitplan"]


def run(*args):
    return subprocess.run([*PLAN, *args], capture_output=True, text=True, timeout=60)


def js(*args):
    r = run(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_8b_on_a_4090_gets_lora_with_checkpointing_not_qlora():
    rec = js("--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--task", "moderate")["recommendation"]
    assert (rec["method"], rec["lora_rank"], rec["lora_targets"]) == ("lora", 16, ["all-linear"])
    assert rec["gradient_checkpointing"] is True and rec["levers"] == ["gradient checkpointing"]
    assert rec["peak_bytes"] <= 0.9 * 23.6 * 2**30
    assert "with gradient checkpointing fits one rtx-4090" in rec["reason"]
    assert {s["id"] for s in rec["sources"]} >= {"qlora"}


def test_70b_on_80gb_for_a_complex_task_rejects_full_and_lora_with_their_numbers():
    rec = js("--model", "llama-3.3-70b", "--gpu", "a100-80", "--task", "complex")["recommendation"]
    assert (rec["method"], rec["lora_rank"]) == ("qlora", 64)
    assert [r["method"] for r in rec["rejected"]] == ["full", "lora"]
    assert all(r["peak_bytes"] > 80 * 2**30 for r in rec["rejected"])
    assert "learns-less" in {s["id"] for s in rec["sources"]}


def test_several_tasks_on_one_base_get_small_adapters():
    rec = js("--model", "mistral-7b", "--gpu", "rtx-4090", "--task", "simple", "--adapters", "5")["recommendation"]
    assert rec["method"] in ("lora", "qlora") and rec["lora_rank"] == 8
    assert "5 tasks on one base" in rec["rules"][0]


def test_too_few_examples_means_no_fine_tuning():
    p = js("--model", "llama-3.1-8b", "--gpu", "h100-80", "--examples", "40")
    assert p["recommendation"]["method"] == "none"
    assert "too few to fine-tune" in p["recommendation"]["reason"]
    assert not any(m.get("recommended") for m in p["methods"])


def test_the_rank_grows_with_the_data():
    small = js("--model", "llama-3.1-8b", "--gpu", "h100-80", "--dataset-tokens", "500000")["recommendation"]
    big = js("--model", "llama-3.1-8b", "--gpu", "h100-80", "--dataset-tokens", "2000000000")["recommendation"]
    assert small["lora_rank"] == 16 and big["lora_rank"] == 256
    assert "without-regret" in {s["id"] for s in big["sources"]}


def test_a_users_own_choices_are_kept_by_the_levers():
    rec = js("--model", "llama-3.1-8b", "--gpu", "h100-80", "--no-grad-ckpt", "--lora-rank", "32")["recommendation"]
    assert rec["gradient_checkpointing"] is False and (rec["method"], rec["lora_rank"]) == ("lora", 32)
    rec = js("--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--no-grad-ckpt")["recommendation"]
    assert rec["gradient_checkpointing"] is False and "gradient checkpointing" not in rec["levers"]


def test_70b_full_needs_the_fewest_count_with_checkpointing():
    full = next(m for m in js("--model", "llama-3.3-70b", "--gpu", "a100-80")["methods"] if m["method"] == "full")
    assert full["gpus_needed_checkpointing"] is True
    # without checkpointing the unsharded activations leave almost nothing for the states: over a
    # thousand GPUs, or none
    without = full["gpus_needed_without_checkpointing"]
    assert without is None or without > 1000
    assert full["gpus_needed"] <= 16
    text = run("--model", "llama-3.3-70b", "--gpu", "a100-80").stdout
    assert f"needs {full['gpus_needed']} (ckpt)" in text


def test_one_method_under_gpus_n_is_per_gpu_everywhere():
    args = ["--model", "mistral-7b", "--gpu", "a100-80", "--method", "full", "--gpus", "8", "--sharding", "zero3",
            "--precision", "bf16-mixed"]
    p = js(*args)
    row = p["methods"][0]
    assert row["peak_bytes_per_gpu"] < row["peak_bytes"] / 2
    assert row["fits"] == (row["peak_bytes_per_gpu"] <= p["gpu"]["usable_memory_bytes"])
    assert row["phases_per_gpu"][row["peak_phase_per_gpu"]]["total"] == row["peak_bytes_per_gpu"]
    text = run(*args).stdout
    assert "Memory per GPU by training phase on 8 GPUs" in text and "fully sharded (ZeRO-3)" in text
    assert f"peak per GPU {row['peak_bytes_per_gpu'] / 2**30:.1f} GiB" in text


def test_single_gpu_offload_is_honoured_with_host_memory():
    p = js("--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--method", "full", "--offload", "optimizer", "--grad-ckpt")
    row = p["methods"][0]
    assert row["offload"] == "optimizer" and row["host_bytes_per_node"] > 8 * 8 * 10**9
    assert row["peak_bytes_per_gpu"] < row["peak_bytes"] and row["fits"]


def test_ddp_is_not_called_sharded():
    text = run("--model", "gpt2", "--gpus", "4", "--sharding", "ddp", "--method", "lora").stdout
    assert "replicated (DDP)" in text and "fully sharded" not in text


@pytest.mark.parametrize("args, message", [
    (["--sharding", "none", "--gpus", "4"], "--sharding none is one GPU, but --gpus is 4"),
    (["--method", "full", "--lora-rank", "8"], "--lora-rank applies to lora, qlora, dora, loha, lokr, hra, miss, shira, delora, gralora; --method full does not use it"),
    (["--method", "lora", "--quant", "fp4"], "--quant applies to qlora; --method lora does not use it"),
    (["--method", "prompt", "--adapter-size", "32"], "--adapter-size applies to adapter"),
    (["--tokens", "1000000"], "--tokens needs --gpu (or --suggest)"),
    (["--mfu", "0.5"], "--mfu sets the utilisation for --tokens"),
    (["--gpu", "t4", "--attention", "flash"], "FlashAttention 2 needs an Ampere or newer GPU"),
    (["--gpu", "v100-32", "--attention", "flash"], "v100-32 is Volta (7.0)"),
    (["--sharding", "ddp", "--gpus", "2", "--offload", "optimizer"], "DDP keeps everything on the GPU"),
    (["--suggest", "--device", "cpu"], "--suggest ranks the GPU catalog"),
    (["--device", "cpu", "--calibration", "none"], "--calibration applies to CUDA figures"),
    (["--task", "hard"], "unknown task 'hard'"),
    (["--examples", "0"], "--examples must be positive"),
])
def test_conflicting_options_are_refused(args, message):
    r = run("--model", "llama-3.1-8b", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_gpt2_refuses_more_tokens_than_positions_and_caps_the_default():
    r = run("--model", "gpt2", "--seq-len", "100000")
    assert r.returncode == 2 and "gpt2 has 1,024 learned positions" in r.stderr
    p = js("--model", "gpt2")
    assert p["setup"]["seq_len"] == 1024 and "the default 2,048 is beyond gpt2's 1,024 positions" in p["notes"][0]


def test_rope_models_beyond_their_positions_are_planned_with_a_note():
    p = js("--model", "llama-3.1-8b", "--seq-len", "200000", "--method", "lora")
    assert "beyond llama-3.1-8b's 131,072 positions" in p["notes"][0]


def test_gemma2_runs_flash_attention_but_not_sdpa():
    assert js("--model", "gemma-2-9b", "--gpu", "a100-80", "--method", "lora", "--attention", "flash")["setup"]["attention"] == "flash"
    r = run("--model", "gemma-2-9b", "--attention", "sdpa")
    assert r.returncode == 2 and "use --attention eager or flash" in r.stderr


def test_checkpointing_with_every_method_plans_all_but_prefix():
    p = js("--model", "llama-3.2-1b", "--grad-ckpt")
    rows = {m["method"]: m for m in p["methods"]}
    assert "PREFIX_TUNING does not work with gradient checkpointing" in rows["prefix"]["error"]
    assert all("peak_bytes" in rows[m] for m in rows if m != "prefix")


def test_suggest_honours_gpu_count_and_sharding():
    one = js("--model", "llama-3.1-8b", "--method", "full", "--suggest", "--gpu", "h100-80")["suggestions"]
    assert [s["gpu"] for s in one] == ["h100-80"]
    fixed = js("--model", "llama-3.1-8b", "--method", "full", "--suggest", "--gpus", "4", "--sharding", "zero2")
    assert fixed["suggestions"] and all((s["gpus"], s["sharding"]) == (4, "zero2") for s in fixed["suggestions"])


def test_suggest_puts_consumer_gpus_across_nodes_last_and_says_uncalibrated():
    s = js("--model", "llama-3.1-70b", "--method", "lora", "--suggest", "--tokens", "1000000000")["suggestions"]
    flags = [x["practical"] for x in s]
    assert flags == sorted(flags, reverse=True)
    assert any(x["gpu"] == "rtx-4090" and not x["practical"] for x in s)
    assert all(x["calibrated"] is (x["gpu"] == "a100-80") for x in s)
    text = run("--model", "llama-3.1-70b", "--method", "lora", "--suggest").stdout
    assert "(uncalibrated)" in text and "! listed last" in text


def test_tokens_with_the_main_table_gives_time_for_the_recommendation():
    p = js("--model", "llama-3.1-8b", "--gpu", "h100-80", "--tokens", "100000000")
    assert p["training"]["tokens"] == 100_000_000 and p["training"]["hours"] > 0


def test_tables_to_paste():
    r = run("--model", "gpt2", "--gpu", "t4", "--format", "github")
    assert r.returncode == 0 and "| method " in r.stdout and "|--" in r.stdout
    r = run("--model", "gpt2", "--gpu", "t4", "--format", "csv")
    assert r.stdout.splitlines()[0].startswith("method,trainable,weights")
    r = run("--model", "gpt2", "--format", "csv", "--json")
    assert r.returncode == 2 and "two views" in r.stderr
