"""Tensor, pipeline, expert and context parallelism: per-GPU memory moves where it should."""

import json
import subprocess
import sys

import pytest
from fitplan.catalog import load_preset
from fitplan.errors import PlanError
from fitplan.estimate import estimate
from fitplan.parallel import Layout, layouts, per_rank, search
from fitplan.setup import TrainingSetup

LLAMA_70B = load_preset("llama-3.1-70b")
FULL = estimate(LLAMA_70B, TrainingSetup(method="full", seq_len=4096, grad_ckpt=True))


def run(*args):
    return subprocess.run([sys.executable, "-m", "fitplan", *args], capture_output=True, text=True, timeout=120)


def test_one_gpu_layout_is_the_single_gpu_estimate():
    r = per_rank(FULL, Layout())
    assert r.per_gpu.tensors == FULL.peak.tensors


@pytest.mark.parametrize("engine", ["megatron", "torch"])
@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tensor_parallelism_divides_weights_and_activations(tp, engine):
    one = per_rank(FULL, Layout(engine="torch")).phases["forward"]
    split = per_rank(FULL, Layout(tp=tp, engine=engine)).phases["forward"]
    assert split.weights < one.weights / tp * 1.01          # norms stay whole: a hair above W / t
    assert split.weights > one.weights / tp
    # checkpointed layers save their sequence-sharded inputs; with DTensor the head saves its all-gathered input,
    # Megatron gathers it again in backward
    u = 2 * 4096 * LLAMA_70B.shape.hidden_size
    gathered = u * (1 - 1 / tp) if engine == "torch" else 0
    assert split.activations == pytest.approx(one.activations / tp + gathered, rel=0.01)
    if engine == "torch":
        assert split.logits_loss == pytest.approx(one.logits_loss / tp, rel=0.01)   # vocab-parallel loss


def test_without_sequence_parallelism_the_activations_stay_whole():
    sp = per_rank(FULL, Layout(tp=4)).phases["forward"]
    no_sp = per_rank(FULL, Layout(tp=4, sequence_parallel=False)).phases["forward"]
    assert no_sp.activations > sp.activations


def test_tensor_parallelism_does_not_shard_what_fsdp_already_shards():
    """On the same GPUs, TP x FSDP holds the same weight shards as FSDP over all of them: each weight
    is split tp x dp ways either way."""
    fsdp = per_rank(FULL, Layout(dp=16, strategy="fsdp"))
    both = per_rank(FULL, Layout(tp=4, dp=4, strategy="fsdp"))
    assert both.phases["optimizer"].optimizer_states == pytest.approx(fsdp.phases["optimizer"].optimizer_states,
                                                                      rel=0.02)
    assert both.phases["forward"].weights == pytest.approx(fsdp.phases["forward"].weights, rel=0.02)


def test_pipeline_first_stage_holds_the_most_activations_under_1f1b():
    r = per_rank(FULL, Layout(pp=4, microbatches=8))
    first = r.phases if r.stage == "first" else None
    lay = r.layout
    assert lay.in_flight(0) == 4 and lay.in_flight(3) == 1
    # the first stage's layers keep four microbatches; the last one, with the loss, one
    assert r.stages["first"] != r.stages["last"]
    assert first is None or first["forward"].activations > 0


def test_gpipe_holds_every_microbatch_and_1f1b_no_more_than_the_stages():
    gpipe = Layout(pp=4, schedule="gpipe", microbatches=16)
    one_f = Layout(pp=4, schedule="1f1b", microbatches=16)
    assert gpipe.in_flight(0) == 16 and one_f.in_flight(0) == 4
    g, o = per_rank(FULL, gpipe), per_rank(FULL, one_f)
    assert g.stages["first"] >= o.stages["first"]
    assert g.phases["forward"].activations >= o.phases["forward"].activations


def test_interleaving_holds_a_little_more_than_1f1b():
    lay = Layout(pp=4, schedule="interleaved", virtual_stages=2, microbatches=16)
    assert lay.in_flight(0) == pytest.approx(4 * (1 + 3 / 8))


def test_pipeline_divides_weights_by_the_stages():
    one = per_rank(FULL, Layout()).phases["optimizer"]
    pp = per_rank(FULL, Layout(pp=4)).phases["optimizer"]
    assert pp.weights < one.weights / 3.5


def test_expert_parallelism_divides_only_the_experts():
    moe = load_preset("qwen3-30b-a3b")
    est = estimate(moe, TrainingSetup(method="full", seq_len=2048, grad_ckpt=True))
    base = per_rank(est, Layout(dp=8))
    ep = per_rank(est, Layout(dp=8, ep=8))
    w0, w8 = base.phases["optimizer"].weights, ep.phases["optimizer"].weights
    assert w8 < w0 / 4                      # the experts are most of Qwen3-30B-A3B
    assert w8 > w0 / 8                      # attention, embeddings and routers stay whole
    assert ep.phases["forward"].activations == base.phases["forward"].activations


def test_context_parallelism_divides_activations_not_weights():
    est = estimate(load_preset("llama-3.1-8b"), TrainingSetup(method="lora", seq_len=131072, grad_ckpt=True))
    one = per_rank(est, Layout()).phases["forward"]
    cp = per_rank(est, Layout(cp=4)).phases["forward"]
    assert cp.weights == one.weights
    assert cp.activations == pytest.approx(one.activations / 4, rel=0.01)


@pytest.mark.parametrize("lay, message", [
    (dict(pp=200), "pipeline stages need at least as many layers"),
    (dict(ep=2, dp=2), "needs a mixture-of-experts model"),
    (dict(tp=3), "must divide"),
])
def test_degrees_the_model_cannot_take_are_refused(lay, message):
    with pytest.raises(PlanError, match=message):
        per_rank(FULL, Layout(**lay))


def test_search_finds_layouts_that_fit_and_puts_less_model_parallelism_first():
    budget = 79 * 2**30
    found = search(FULL, budget, 16)
    assert found and all(r.peak_bytes <= budget for r in found)
    degrees = [r.layout.tp * r.layout.pp for r in found]
    assert degrees == sorted(degrees)
    assert all(lay.gpus == 16 for lay in layouts(FULL, 16))


def test_cli_layout_and_json():
    r = run("--model", "llama-3.1-70b", "--gpu", "h100-80", "--method", "full", "--tensor-parallel", "8",
            "--pipeline-parallel", "2", "--gpus", "32", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    lay = out["methods"][0]["parallel"]
    assert (lay["tensor_parallel"], lay["pipeline_parallel"], lay["data_parallel"]) == (8, 2, 2)
    assert out["methods"][0]["peak_bytes_per_gpu"] == lay["peak_bytes_per_gpu"] < out["methods"][0]["peak_bytes"]


@pytest.mark.parametrize("args, message", [
    (["--tensor-parallel", "8", "--gpus", "12"], "is not a multiple of tensor x pipeline x context parallel"),
    (["--pipeline-schedule", "gpipe"], "--pipeline-schedule shapes a pipeline"),
    (["--tensor-parallel", "2", "--gpus", "2", "--pipeline-schedule", "zz", "--pipeline-parallel", "2"],
     "is not a multiple"),
    (["--tensor-parallel", "0"], "must be a positive number"),
    (["--sequence-parallel"], "--sequence-parallel splits what tensor parallelism leaves whole"),
    (["--tensor-parallel", "2", "--gpus", "2", "--offload", "optimizer"], "--offload is not modelled"),
])
def test_bad_layouts_are_one_line(args, message):
    r = run("--model", "llama-3.1-8b", "--method", "full", *args)
    assert r.returncode == 2, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1
    assert message in r.stderr


def test_the_engine_is_megatron_with_its_distributed_optimizer_and_torch_otherwise():
    assert Layout(tp=2).megatron and Layout(tp=2, dp=2, strategy="zero1").megatron
    assert not Layout(tp=2, dp=2, strategy="fsdp").megatron
    assert not Layout(tp=2, engine="torch").megatron and Layout(tp=2, dp=2, strategy="fsdp", engine="megatron").megatron
    with pytest.raises(PlanError, match="unknown parallel engine 'deepspeed'"):
        Layout(tp=2, engine="deepspeed")


def test_megatron_keeps_a_whole_gradient_buffer_and_a_fused_loss():
    """Megatron's DDP allocates the stage's gradient buffer when it wraps the model (present in the forward);
    its vocab-parallel cross-entropy holds the logits and one fp32 copy (6 bytes a logit in bf16), no more."""
    mega = per_rank(FULL, Layout(tp=8, engine="megatron")).phases
    torch = per_rank(FULL, Layout(tp=8, engine="torch")).phases
    assert mega["forward"].gradients > 0
    assert mega["forward"].gradients == pytest.approx(mega["optimizer"].gradients, rel=0.001)
    assert torch["forward"].gradients == 0
    tokens, vocab = 4096, LLAMA_70B.shape.vocab_size
    assert mega["backward"].logits_loss == pytest.approx(tokens * vocab * 6 / 8, rel=0.001)


def test_a_layout_that_does_not_fit_says_the_count_beside_is_data_parallelisms():
    r = run("--model", "llama-3.1-405b", "--gpu", "h100-80", "--method", "full", "--tensor-parallel", "8",
            "--pipeline-parallel", "4", "--gpus", "128")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("On h100-80:"))
    assert "this layout does not fit; without model parallelism it needs" in line
