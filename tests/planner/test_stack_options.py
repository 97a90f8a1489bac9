"""The options the training stacks brought (--loss, --compile, --optimizer-in-backward,
--activation-offload, --adapter-dtype, --lora-alpha, --modules-to-save, --packing), paged optimizers'
states and the peaks beside the step: each modelled from its library's source, checked here by the
planner's own numbers (the CPU measurements are in tests/validate)."""

import subprocess
import sys

import fitplan
import pytest
from fitplan.errors import PlanError

TINY = "data/sweeps/configs/tiny-llama.json"
PLAN = [sys.executable, "-m", "fitplan"]


def run(*args):
    return subprocess.run([*PLAN, *args], capture_output=True, text=True, timeout=60)


def est(**options):
    return fitplan.plan(**options).method.estimate


@pytest.mark.parametrize(("method", "precision", "eager", "compiled"), [
    # bytes per token of a later layer, measured with saved_tensors_hooks on CPU Inductor (torch 2.13),
    # tiny Llama (h 256, i 688, 8 heads, 4 kv heads), LoRA r8 q,v / full, 128 tokens x 2
    ("lora", "bf16", 9864, 6440), ("lora", "fp32", 14504, 11752),
    ("full", "bf16", 11176, 7752), ("full", "fp32", 20264, 15464),
])
def test_compile_saves_what_inductor_saves(method, precision, eager, compiled):
    extra = {"lora_rank": 8} if method == "lora" else {}
    for flag, want in ((False, eager), (True, compiled)):
        e = est(model=TINY, method=method, precision=precision, device="cpu", seq_len=128, batch_size=2,
                compile=flag, **extra)
        assert e.layer_activation_bytes[1] == want * 256


def test_optimizer_in_backward_never_holds_all_gradients():
    a = est(model="llama-3.2-1b", method="full", grad_ckpt=True)
    b = est(model="llama-3.2-1b", method="full", grad_ckpt=True, optimizer_in_backward=True)
    assert max(p.gradients for _, p in b.moments) <= max(g.data_bytes() // g.count for g in b.groups if g.trainable)
    assert b.phases["optimizer"].total < a.phases["optimizer"].total and b.peak_bytes < a.peak_bytes


def test_activation_offload_keeps_a_stash_on_the_gpu_and_the_rest_on_the_host():
    a = est(model="llama-3.1-8b", method="lora", grad_ckpt=True, seq_len=4096)
    b = est(model="llama-3.1-8b", method="lora", grad_ckpt=True, seq_len=4096, activation_offload=True)
    one = 4096 * 4096 * 2                                       # one checkpointed input, bf16
    assert b.host_bytes == 32 * one and a.host_bytes == 0
    assert a.phases["forward"].activations - b.phases["forward"].activations == (32 - 5) * one


def test_activation_offload_needs_checkpointing():
    with pytest.raises(PlanError, match="--activation-offload moves the checkpointed layer inputs"):
        fitplan.plan(model="llama-3.2-1b", method="lora", activation_offload=True, grad_ckpt=False)
    with pytest.raises(PlanError, match="prefix cannot checkpoint"):
        fitplan.plan(model="llama-3.2-1b", method="prefix", activation_offload=True)
    # not chosen, checkpointing comes with it, and the notes say so
    p = fitplan.plan(model="llama-3.2-1b", method="lora", activation_offload=True)
    assert p.method.estimate.setup.checkpointing and p.method.estimate.host_bytes > 0
    assert any(n.startswith("gradient checkpointing on: --activation-offload") for n in p.notes)


def test_adapter_dtype_halves_the_adapters_and_shares_their_input():
    a = est(model="llama-3.1-8b", method="lora", lora_targets="all-linear")
    b = est(model="llama-3.1-8b", method="lora", lora_targets="all-linear", adapter_dtype="bf16")
    lora = lambda e: sum(g.data_bytes() for g in e.groups if g.added)  # noqa: E731
    assert lora(a) == 2 * lora(b)
    assert b.layer_activation_bytes[1] < a.layer_activation_bytes[1]   # no fp32 copy of each adapter's input


def test_lora_alpha_changes_no_memory():
    assert est(model="llama-3.2-1b", method="lora", lora_alpha=64).peak_bytes == \
        est(model="llama-3.2-1b", method="lora").peak_bytes


def test_modules_to_save_train_a_full_copy():
    a = est(model="llama-3.1-8b", method="lora")
    b = est(model="llama-3.1-8b", method="lora", modules_to_save="lm_head")
    assert b.trainable_params - a.trainable_params == 128256 * 4096
    assert b.peak.optimizer_states > a.peak.optimizer_states + 2 * 128256 * 4096


def test_packing():
    a = est(model="llama-3.1-8b", method="lora", batch_size=2)
    packed = est(model="llama-3.1-8b", method="lora", batch_size=2, packing="packed")
    assert packed.peak_bytes > a.peak_bytes              # the block-causal mask SDPA then takes
    free = est(model="llama-3.1-8b", method="lora", batch_size=2, packing="padding-free", attention="flash")
    flash = est(model="llama-3.1-8b", method="lora", batch_size=2, attention="flash")
    assert abs(free.peak_bytes - flash.peak_bytes) < flash.peak_bytes // 1000
    with pytest.raises(PlanError, match="padding-free batches .* need --attention flash"):
        fitplan.plan(model="llama-3.2-1b", method="lora", packing="padding-free")


def test_paged_states_are_not_in_allocated():
    e = est(model="llama-3.2-1b", method="full", optimizer="paged-adamw")
    assert e.paged_state_bytes > 0
    assert e.allocated_bytes == e.overhead.allocated(e.peak.tensors - e.paged_state_bytes)
    assert e.device_used_bytes == e.peak_bytes     # nvidia-smi counts them while resident
    assert est(model="llama-3.2-1b", method="full", optimizer="adamw-8bit").paged_state_bytes == 0


def test_fused_adamw_has_no_step_temporaries():
    a = est(model="llama-3.2-1b", method="full")
    f = est(model="llama-3.2-1b", method="full", optimizer="adamw-fused")
    assert f.phases["optimizer"].temporaries == 0 < a.phases["optimizer"].temporaries


def test_the_peaks_beside_the_step():
    r = fitplan.plan(model="llama-3.1-8b", method="qlora").method
    pk = r.other_peaks
    e = r.estimate
    # each linear quantized on the GPU from its bf16 copy: the largest is 14336 x 4096 bf16
    assert pk.load_bytes == e.overhead.device_used(e.peak.weights + e.peak.quantization_state + 2 * 14336 * 4096 * 2
                                                   ) or "cast" in pk.load_how
    assert pk.highest == "step"
    d = fitplan.plan(model="llama-3.1-8b", method="full", gpus=8).method.to_dict()["other_peaks"]
    assert "gathered unit by unit" in d["checkpoint_save"] and d["checkpoint_save_bytes"] < d["step_bytes"]


@pytest.mark.parametrize(("args", "message"), [
    (("--method", "full", "--adapter-dtype", "bf16"), "--adapter-dtype applies to lora, qlora"),
    (("--method", "full", "--modules-to-save", "lm_head"), "--modules-to-save applies to lora, qlora"),
    (("--method", "lora", "--modules-to-save", "norm"), "unknown module to save 'norm'"),
    (("--method", "lora", "--loss", "chunked:0"), "the chunks must be a whole number from 1"),
    (("--method", "lora", "--loss", "fused"), "unknown loss 'fused'"),
    (("--method", "lora", "--loss", "liger:4"), "only 'chunked' takes a number of chunks"),
    (("--method", "lora", "--adapter-dtype", "int8"), "unknown adapter dtype 'int8'"),
    (("--method", "lora", "--packing", "yes"), "unknown packing 'yes'"),
    (("--method", "lora", "--activation-offload", "--no-grad-ckpt"), "--activation-offload moves the checkpointed layer inputs"),
    (("--method", "full", "--precision", "bf16-master", "--optimizer-in-backward"), "--optimizer-in-backward steps"),
])
def test_conflicting_or_bad_stack_options_are_one_line_exit_2(args, message):
    r = run("--model", "llama-3.2-1b", *args)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_packing_alone_means_packed_as_the_issue_writes_it():
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fitplan", "--model", "qwen2.5-7b", "--method", "lora", "--stack", "trl",
                        "--loss", "chunked", "--packing", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["setup"]["packing"] == "packed"
