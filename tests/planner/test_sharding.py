"""Sharding, offload and the searches over GPUs, batch and sequence."""

import subprocess
import sys

from fitplan.calibration import overhead_for
from fitplan.catalog import gpu_catalog, load_preset, model_names, resolve_gpu
from fitplan.estimate import estimate, template
from fitplan.setup import TrainingSetup
from fitplan.sharding import Placement, per_gpu
from fitplan.suggest import largest, suggest
from hypothesis import given, settings
from hypothesis import strategies as st

GIB = 2**30
LLAMA_8B = load_preset("llama-3.1-8b")
P = LLAMA_8B.shape.parameter_count
EMBEDDING = LLAMA_8B.shape.embedding_params


def _model_states(result):
    b = result.per_gpu
    return b.weights + b.gradients + b.optimizer_states


def _full(**kw):
    return estimate(LLAMA_8B, TrainingSetup(method="full", precision="bf16-master", grad_ckpt=True, seq_len=1,
                                            batch_size=1, **kw))


def test_zero3_on_8_gpus_agrees_with_deepspeeds_cold_estimator():
    """DeepSpeed's estimate_zero3_model_states_mem_needs_all_cold(8B, largest layer = the embedding,
    8 GPUs) prints "18.78GB": 18 x params / 8 + 4 x largest layer, in GiB. The planner shards the
    same 18 bytes per parameter (bf16 weight, fp32 gradient, fp32 master, fp32 moments) and gathers
    the root unit (embedding and head, bf16: 4 bytes per embedding parameter) unsharded."""
    deepspeed = 18 * P // 8 + 4 * EMBEDDING
    assert abs(deepspeed / GIB - 18.78) < 0.005
    result = per_gpu(_full(), Placement("zero3", 8))
    assert abs(_model_states(result) - 18 * P // 8) <= 8
    root = 2 * 2 * EMBEDDING + 2 * LLAMA_8B.shape.final_norm.params
    assert abs(_model_states(result) + root - deepspeed) / deepspeed < 0.001


def test_zero2_differs_from_deepspeeds_cold_estimator_by_a_full_gradient_copy():
    """DeepSpeed's ZeRO-2 cold estimate is 4 x params + 16 x params / GPUs: it keeps a full bf16
    gradient beside the bf16 weights. Stage 2 reduce-scatters gradients bucket by bucket as backward
    makes them, so no full copy lives; the planner counts one layer's bucket instead: 2 bytes per
    parameter fewer."""
    deepspeed = 4 * P + 16 * P // 8
    result = per_gpu(_full(), Placement("zero2", 8))
    ours = _model_states(result)
    assert abs(ours - (2 * P + 16 * P // 8)) <= 8
    assert abs((deepspeed - ours) - 2 * P) <= 8


def test_peft_under_zero3_is_far_below_deepspeeds_estimate():
    """DeepSpeed's estimators count 18 bytes for every parameter, frozen ones included; under LoRA the
    frozen base has no gradients and no optimizer state: 2 bytes of bf16 weight, sharded."""
    lora = estimate(LLAMA_8B, TrainingSetup(method="lora", precision="bf16-master", grad_ckpt=True, seq_len=1, batch_size=1))
    result = per_gpu(lora, Placement("zero3", 8))
    assert _model_states(result) < 0.15 * (18 * P // 8)
    assert result.per_gpu.weights == -(-lora.peak.weights // 8)


def test_more_gpus_never_need_more_memory_per_gpu_and_offload_moves_it_to_the_host():
    est = estimate(load_preset("llama-3.1-70b"), TrainingSetup(method="full", grad_ckpt=True))
    peaks = [per_gpu(est, Placement("fsdp", n)).peak_bytes for n in (2, 4, 8, 16, 32, 64)]
    assert peaks == sorted(peaks, reverse=True)
    plain = per_gpu(est, Placement("zero3", 16))
    offloaded = per_gpu(est, Placement("zero3", 16, offload="optimizer"))
    assert offloaded.peak_bytes < plain.peak_bytes and offloaded.host_bytes_per_node > 0 == plain.host_bytes_per_node
    ddp = per_gpu(est, Placement("ddp", 16))
    assert ddp.per_gpu.gradients == 2 * est.peak.gradients  # DDP's buckets: a second copy


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from([n for n in model_names() if load_preset(n).shape.parameter_count < 15 * 10**9]),
       gpu=st.sampled_from(sorted(gpu_catalog())), method=st.sampled_from(["full", "lora", "qlora", "prompt"]),
       field=st.sampled_from(["batch_size", "seq_len"]))
def test_the_largest_value_found_fits_and_one_more_does_not(name, gpu, method, field):
    model, g = load_preset(name), resolve_gpu(gpu)
    overhead, _ = overhead_for(g)
    setup = TrainingSetup(method=method, seq_len=512, batch_size=1, grad_ckpt=True)
    value = largest(model, setup, g.usable_memory_bytes, field, overhead)
    t = template(model.shape, setup)

    def peak(v):
        return t.peak(setup.seq_len, v, overhead) if field == "batch_size" else t.peak(v, setup.batch_size, overhead)

    if value is None:
        assert peak(1) > g.usable_memory_bytes
    else:
        assert peak(value) <= g.usable_memory_bytes
        assert value >= 10**6 or peak(value + 1) > g.usable_memory_bytes


def test_suggest_ranks_configurations_that_fit_by_cost():
    model = load_preset("llama-3.1-70b")
    found = suggest(model, TrainingSetup(method="lora"), gpu_catalog().values(), tokens=10**9)
    assert len(found) >= 10
    practical = [s for s in found if s.practical]
    assert found[: len(practical)] == practical            # what a person would not build comes last
    priced = [s.cost for s in practical if s.cost is not None]
    assert priced == sorted(priced)
    for s in found:
        assert s.result.peak_bytes <= s.gpu.usable_memory_bytes * (1 - s.band_fraction)


def run(*args):
    return subprocess.run([sys.executable, "-m", "fitplan", *args], capture_output=True, text=True, timeout=60)


def test_cli_suggest_and_max_batch():
    r = run("--model", "llama-3.1-70b", "--method", "lora", "--suggest", "--tokens", "1000000000")
    assert r.returncode == 0, r.stderr
    assert "GPU configurations that hold the step, cheapest cost to finish first" in r.stdout
    r = run("--model", "qwen2.5-7b", "--gpu", "rtx-4090", "--method", "qlora", "--max-batch", "--max-seq-len")
    assert r.returncode == 0, r.stderr
    assert "Largest micro batch that fits one rtx-4090:" in r.stdout
    assert "Largest sequence length that fits one rtx-4090:" in r.stdout


def test_cli_405b_full_needs_sharding_across_nodes():
    r = run("--model", "llama-3.1-405b", "--gpu", "h100-80", "--method", "full", "--json")
    assert r.returncode == 0, r.stderr
    import json

    payload = json.loads(r.stdout)
    opts = payload["sharding_options"]
    unsharded = [o for o in opts if o["offload"] == "none"]
    assert unsharded and all(o["gpus"] > 8 for o in unsharded)
    assert {o["sharding"] for o in opts} >= {"zero3", "fsdp"}
    # ZeRO-Infinity holds it on one GPU, at the cost of terabytes of host memory
    assert any(o["gpus"] == 1 and o["offload"] == "params" and o["host_bytes_per_node"] > 2**40 for o in opts)


def test_cli_bad_sharding_inputs():
    r = run("--model", "gpt2", "--sharding", "zero4")
    assert r.returncode == 2 and "unknown sharding 'zero4'" in r.stderr
    r = run("--model", "gpt2", "--offload", "params", "--sharding", "zero1", "--gpus", "2")
    assert r.returncode == 2 and "--offload params needs sharded parameters" in r.stderr
    r = run("--model", "gpt2", "--max-batch")
    assert r.returncode == 2 and "need --gpu and --method" in r.stderr


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["llama-3.1-8b", "qwen2.5-0.5b", "mixtral-8x7b", "gpt2"]),
       method=st.sampled_from(["full", "lora", "qlora"]), ckpt=st.booleans(),
       strategy=st.sampled_from(["ddp", "zero1", "zero2", "zero3", "fsdp", "hybrid"]),
       offload=st.sampled_from(["none", "optimizer", "params"]), n=st.integers(1, 5000))
def test_the_fast_per_gpu_peak_equals_the_full_breakdown(name, method, ckpt, strategy, offload, n):
    from fitplan.estimate import estimate
    from fitplan.sharding import Spread

    if offload == "params" and strategy in ("ddp", "zero1", "zero2") or strategy == "ddp" and offload != "none":
        return
    est = estimate(load_preset(name), TrainingSetup(method=method, grad_ckpt=ckpt))
    spread = Spread(est, strategy, offload)
    assert spread.peak(n) == spread.at(n).peak_bytes
    if n >= 2:   # (from one GPU to two, sharding adds gathered layers and buckets)
        assert spread.peak(n + 1) <= spread.peak(n)      # more GPUs never hold more per GPU


# ---- FSDP1's flat parameters and gradient accumulation under no_sync ---------------------------------
def _lora(**kw):
    return estimate(LLAMA_8B, TrainingSetup(method="lora", lora_targets=("q_proj", "v_proj"), grad_ckpt=True,
                                            adapter_dtype="bf16", **kw))


def test_fsdp1_full_fine_tuning_is_fsdp():
    est = _full()
    for n in (2, 8):
        assert per_gpu(est, Placement("fsdp1", n)).peak_bytes == per_gpu(est, Placement("fsdp", n)).peak_bytes


def test_fsdp1_lora_has_a_gradient_for_every_wrapped_layer_whole():
    """A decoder layer's flat parameter holds its frozen weights and its LoRA weights: its gradient is the
    layer's size (bf16), where FSDP2 (per parameter) has only the adapters'."""
    est = _lora()
    one = per_gpu(est, Placement("fsdp1", 4)).phases["optimizer"].gradients
    two = per_gpu(est, Placement("fsdp", 4)).phases["optimizer"].gradients
    layers = sum(g.elements for g in est.groups if g.per_layer(LLAMA_8B.shape.num_layers))
    assert one == -(-(2 * layers) // 4) and two < one / 100


def test_gradient_accumulation_under_fsdp_keeps_the_gradients_unsharded():
    est, acc = _full(), _full(grad_accum=8)
    for strategy in ("fsdp", "fsdp1", "hybrid"):
        g = per_gpu(acc, Placement(strategy, 8)).phases["optimizer"].gradients
        assert g == est.peak.gradients == per_gpu(est, Placement(strategy, 1 if strategy == "none" else 8)).phases[
            "optimizer"].gradients * 8
    # DeepSpeed's ZeRO accumulates partitioned gradients
    assert per_gpu(acc, Placement("zero2", 8)).peak_bytes == per_gpu(est, Placement("zero2", 8)).peak_bytes


def test_grad_accum_without_fsdp_is_said_to_change_nothing():
    import fitplan

    p = fitplan.plan(model="llama-3.1-8b", method="lora", grad_accum=4)
    assert any(n.startswith("--grad-accum 4: the peak is one micro batch's") for n in p.notes)
    q = fitplan.plan(model="llama-3.1-8b", method="lora")
    assert p.method.estimate.peak_bytes == q.method.estimate.peak_bytes
