"""Search: the cheapest GPU configuration, the largest batch or sequence that fits, time and cost.

- ``suggest``: every GPU of the catalog, the fewest GPUs of it (and the sharding and offload that
  achieve it) that hold the step with the calibration's uncertainty band to spare, ranked by the
  indicative price per hour, or by the cost to finish when a token count is given; where the user
  did not choose, gradient checkpointing is tried too.
- ``largest``: the largest micro batch (or sequence length) that fits, by bisection over the
  cached estimate template: the value found fits and one more does not.
- ``training_time``: tokens x FLOPs per token / (GPUs x bf16 peak x utilisation). FLOPs per token
  (Kaplan et al. 2020, section 2.1; Chinchilla appendix F): 6 x parameters for full fine-tuning
  (2 forward, 4 backward); 4 x for methods with a frozen base (the backward skips the weights'
  gradients); checkpointing adds a forward (2 x). Attention's own FLOPs are left out.

Prices are indicative on-demand prices of one GPU, with the month they were seen (data/gpus).
"""

from __future__ import annotations

from dataclasses import dataclass

from fitplan.catalog import GPU, ModelEntry, gpu_catalog
from fitplan.errors import PlanError
from fitplan.estimate import estimate, template
from fitplan.memory.overhead import Overhead
from fitplan.setup import MAX_BATCH, MAX_SEQ_LEN, TrainingSetup
from fitplan.sharding import DEFAULT_GPUS_PER_NODE, ShardedPeak, options

DEFAULT_MFU = 0.40


@dataclass(frozen=True)
class Suggestion:
    gpu: GPU
    setup: TrainingSetup
    result: ShardedPeak
    headroom_fraction: float
    price_per_hour: float | None     # all GPUs together
    hours: float | None
    cost: float | None


def flops_per_token(model: ModelEntry, setup: TrainingSetup) -> int:
    """The method's FLOPs per token (6P with the base trained, 4P frozen), +2P with checkpointing."""
    p = model.shape.parameter_count
    per = setup.method.flops_per_token(p)
    if setup.checkpointing:
        per += 2 * p
    return per


def training_time_hours(model: ModelEntry, setup: TrainingSetup, gpu: GPU, gpus: int, tokens: int,
                        mfu: float = DEFAULT_MFU) -> float | None:
    if gpu.bf16_tflops is None and gpu.fp16_tflops is None:
        return None
    peak = (gpu.bf16_tflops or gpu.fp16_tflops) * 1e12
    return tokens * flops_per_token(model, setup) / (gpus * peak * mfu) / 3600


def suggest(model: ModelEntry, setup: TrainingSetup, overheads: dict[str, Overhead], tokens: int | None = None,
            mfu: float = DEFAULT_MFU, gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> list[Suggestion]:
    """The best configuration of every catalog GPU that can hold the step, best first."""
    out = []
    for gpu in gpu_catalog().values():
        st = setup
        if setup.precision.startswith("bf16") and not gpu.supports_bf16:
            st = setup.with_(precision=setup.precision.replace("bf16", "fp16"))
        variants = [st]
        if st.grad_ckpt is None and not st.checkpointing and st.method.checkpointing_refused is None:
            variants.append(st.with_(grad_ckpt=True))      # not chosen by the user: try it
        best = None
        for variant in variants:
            est = estimate(model, variant, overheads[gpu.name])
            # keep the calibration's uncertainty band free: a configuration must fit its upper end
            budget = int(gpu.usable_memory_bytes * (1 - overheads[gpu.name].band_fraction))
            found = options(est, budget, gpus_per_node)
            rank = {"none": 0, "optimizer": 1, "params": 2}
            if found and (best is None or (rank[found[0].placement.offload], found[0].placement.gpus)
                          < (rank[best[1].placement.offload], best[1].placement.gpus)):
                best, st = (variant, found[0]), variant
        if best is None:
            continue
        st, best = best
        n = best.placement.gpus
        price = gpu.price_usd_per_hour * n if gpu.price_usd_per_hour else None
        hours = training_time_hours(model, st, gpu, n, tokens, mfu) if tokens else None
        cost = price * hours if (price is not None and hours is not None) else None
        out.append(Suggestion(gpu, st, best, 1 - best.peak_bytes / gpu.usable_memory_bytes, price, hours, cost))

    def key(s: Suggestion):
        if tokens:
            return (s.cost is None, s.cost or 0.0, s.result.placement.gpus)
        return (s.price_per_hour is None, s.price_per_hour or 0.0, s.result.placement.gpus)

    return sorted(out, key=key)


def largest(model: ModelEntry, setup: TrainingSetup, budget: int, field: str, overhead: Overhead) -> int | None:
    """The largest ``batch_size`` or ``seq_len`` whose single-GPU peak fits ``budget`` bytes."""
    if field not in ("batch_size", "seq_len"):
        raise PlanError(f"cannot search {field}")
    t = template(model.shape, setup, overhead)

    def fits(value: int) -> bool:
        seq, batch = (setup.seq_len, value) if field == "batch_size" else (value, setup.batch_size)
        return t.peak(seq, batch) <= budget

    if not fits(1):
        return None
    hi = 1
    limit = MAX_BATCH if field == "batch_size" else MAX_SEQ_LEN
    while hi < limit and fits(min(2 * hi, limit)):
        hi = min(2 * hi, limit)
    if hi == limit:
        return limit
    lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
