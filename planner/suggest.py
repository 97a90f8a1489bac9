"""Search: the cheapest GPU configuration, the largest batch or sequence that fits, time and cost.

- ``suggest``: every GPU of the catalog (or the one asked for), the fewest GPUs of it and the
  sharding and offload that achieve it (or the placement the user fixed) that hold the step with the
  calibration's uncertainty band to spare; where the user did not choose, gradient checkpointing is
  tried too. Each GPU is planned with its own calibration only (another card's CUDA context and
  allocator are not its own); an uncalibrated GPU gets the documented defaults and their wider band,
  and says so. Ranked by the cost to finish where a token count is given, else by the price per hour;
  configurations a person would not build come last and say why (consumer GPUs without NVLink spread
  over several nodes).
- ``largest``: the largest micro batch (or sequence length) that fits, by bisection over the
  cached estimate template: the value found fits and one more does not.
- ``training_time``: tokens x FLOPs per token / (GPUs x bf16 peak x utilisation). FLOPs per token
  (Kaplan et al. 2020, section 2.1; Chinchilla appendix F): 6 x parameters for full fine-tuning
  (2 forward, 4 backward); 4 x for methods with a frozen base (the backward skips the weights'
  gradients); checkpointing adds a forward (2 x). Attention's own FLOPs are left out.

Prices are indicative on-demand prices of one GPU, with the month they were seen (data/gpus).
"""

from __future__ import annotations

from collections.abc import Iterable

from fitplan.calibration import load_file, overhead_for
from fitplan.catalog import GPU, ModelEntry
from fitplan.errors import PlanError
from fitplan.estimate import estimate, template
from fitplan.frozen import frozen
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead
from fitplan.setup import MAX_BATCH, MAX_SEQ_LEN, TrainingSetup
from fitplan.sharding import (
    DEFAULT_GPUS_PER_NODE,
    OFFLOADS,
    SEARCHED,
    Placement,
    ShardedPeak,
    Spread,
)

DEFAULT_MFU = 0.40
_OFFLOAD_RANK = {"none": 0, "optimizer": 1, "params": 2}


@frozen
class Suggestion:
    gpu: GPU
    setup: TrainingSetup
    result: ShardedPeak
    headroom_fraction: float
    price_per_hour: float | None     # all GPUs together
    hours: float | None
    cost: float | None
    calibrated: bool = True          # planned with a calibration measured on this GPU
    band_fraction: float = 0.10
    practical: bool = True
    why_not: str = ""                # why a person would not build it

    @property
    def nodes(self) -> int:
        return self.result.placement.nodes


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


MAX_PRACTICAL_NODES = 8


def _datacenter_fabric(gpu: GPU) -> bool:
    """NVLink / Infinity Fabric across all GPUs of a node (SXM, OAM), not PCIe or a 2-way bridge."""
    ic = gpu.interconnect.lower()
    return ("nvlink" in ic and "bridge" not in ic and not ic.startswith("pcie")) or "infinity fabric" in ic


def _practical(gpu: GPU, p: Placement) -> tuple[bool, str]:
    if p.nodes > 1 and not _datacenter_fabric(gpu):
        return False, (f"{p.gpus} {gpu.name} over {p.nodes} nodes: GPUs without a node-wide NVLink fabric, "
                       "sharded across nodes")
    if p.nodes > MAX_PRACTICAL_NODES:
        return False, f"{p.gpus} {gpu.name} over {p.nodes} nodes: more than {MAX_PRACTICAL_NODES} nodes for one step"
    return True, ""


def _best_for_gpu(model: ModelEntry, variants: list[TrainingSetup], gpu: GPU, overhead: Overhead,
                  gpus_per_node: int, fixed: Placement | None) -> tuple[TrainingSetup, ShardedPeak] | None:
    budget = int(gpu.usable_memory_bytes * (1 - overhead.band_fraction))
    best = None
    for variant in variants:
        est = estimate(model, variant, overhead)
        if fixed is not None:
            spreads = [Spread(est, fixed.strategy, fixed.offload, gpus_per_node)]
            found = [s.at(fixed.gpus) for s in spreads]
            found = [f for f in found if f.peak_bytes <= budget]
        else:
            found = []
            for strategy in SEARCHED:
                for offload in OFFLOADS:
                    if offload == "params" and strategy in ("ddp", "zero1", "zero2"):
                        continue
                    if strategy == "ddp" and offload != "none":
                        continue
                    hit = Spread(est, strategy, offload, gpus_per_node).fewest(budget)
                    if hit is not None:
                        found.append(hit)
        for hit in found:
            key = (_OFFLOAD_RANK[hit.placement.offload], hit.placement.gpus, variant.checkpointing, hit.peak_bytes)
            if best is None or key < best[0]:
                best = (key, variant, hit)
        if fixed is None and _datacenter_fabric(gpu):
            # beyond a node, tensor and pipeline parallelism may hold the step on fewer GPUs (on an
            # NVLink fabric: every layer's tensor-parallel all-reduce over PCIe is not worth building)
            most = min(x.placement.gpus for x in found if x.placement.offload == "none") if any(
                x.placement.offload == "none" for x in found) else None
            hit = _layout_hit(est, budget, gpus_per_node, most)
            if hit is not None:
                key = (0, hit.placement.gpus, variant.checkpointing, hit.peak_bytes)
                if best is None or key < best[0]:
                    best = (key, variant, hit)
    return None if best is None else (best[1], best[2])


def _layout_hit(est, budget: int, gpus_per_node: int, data_parallel_gpus: int | None) -> ShardedPeak | None:
    """The fewest whole nodes (fewer than data parallelism alone needs) on which a model-parallel layout
    holds the step, as a ShardedPeak carrying its layout."""
    from fitplan.parallel import Ranks, search

    if data_parallel_gpus is not None and data_parallel_gpus <= gpus_per_node:
        return None
    ranks = Ranks(est)
    for nodes in (1, 2, 4, 8, 16, 32, 64, 128):
        n = nodes * gpus_per_node
        if data_parallel_gpus is not None and n >= data_parallel_gpus:
            return None
        found = search(est, budget, n, gpus_per_node, limit=1, ranks=ranks)
        if found:
            r = found[0]
            placement = Placement(r.layout.strategy, n, gpus_per_node)
            return ShardedPeak(placement, r.phase, r.per_gpu, 0, r.phases, layout=r.layout)
    return None


def suggest(model: ModelEntry, setup: TrainingSetup, pool: Iterable[GPU], tokens: int | None = None,
            mfu: float = DEFAULT_MFU, gpus_per_node: int = DEFAULT_GPUS_PER_NODE, fixed: Placement | None = None,
            calibration: str | None = None) -> list[Suggestion]:
    """The best configuration of every GPU of ``pool`` that can hold the step, best first.

    ``fixed``: a placement the user chose (its count, sharding and offload are kept).
    ``calibration``: a file applied to every GPU, or ``"none"`` for the documented defaults.
    """
    out = []
    chosen = None if calibration is None or calibration.lower() == "none" else load_file(calibration)
    for gpu in pool:
        st = setup
        if setup.precision.startswith("bf16") and not gpu.supports_bf16:
            st = setup.with_(precision=setup.precision.replace("bf16", "fp16"))
        if st.attention == "flash" and gpu.vendor == "nvidia" and gpu.compute_capability \
                and float(gpu.compute_capability) < 8.0:
            continue                                         # FlashAttention 2 needs Ampere or newer
        if chosen is not None:
            overhead, calibrated = chosen.overhead, True
        elif calibration is not None:
            overhead, calibrated = DEFAULT_OVERHEAD, False
        else:
            overhead, cal = overhead_for(gpu)
            calibrated = cal is not None
        variants = [st]
        if st.grad_ckpt is None and not st.checkpointing and st.method.checkpointing_refused is None:
            variants.append(st.with_(grad_ckpt=True))      # not chosen by the user: try it
        found = _best_for_gpu(model, variants, gpu, overhead, gpus_per_node, fixed)
        if found is None:
            continue
        st, best = found
        n = best.placement.gpus
        price = gpu.price_usd_per_hour * n if gpu.price_usd_per_hour else None
        hours = training_time_hours(model, st, gpu, n, tokens, mfu) if tokens else None
        cost = price * hours if (price is not None and hours is not None) else None
        practical, why = _practical(gpu, best.placement)
        out.append(Suggestion(gpu, st, best, 1 - best.peak_bytes / gpu.usable_memory_bytes, price, hours, cost,
                              calibrated, overhead.band_fraction, practical, why))

    def key(s: Suggestion):
        money = s.cost if tokens else s.price_per_hour
        return (not s.practical, money is None, money or 0.0, s.result.placement.gpus)

    return sorted(out, key=key)


def largest(model: ModelEntry, setup: TrainingSetup, budget: int, field: str, overhead: Overhead,
            placement: Placement | None = None) -> int | None:
    """The largest ``batch_size`` or ``seq_len`` whose peak per GPU fits ``budget`` bytes (under
    ``placement`` where the step is spread over GPUs)."""
    if field not in ("batch_size", "seq_len"):
        raise PlanError(f"cannot search {field}")
    t = template(model.shape, setup)

    def fits(value: int) -> bool:
        seq, batch = (setup.seq_len, value) if field == "batch_size" else (value, setup.batch_size)
        if placement is None or (placement.gpus == 1 and placement.offload == "none"):
            return t.peak(seq, batch, overhead) <= budget
        est = estimate(model, setup.with_(seq_len=seq, batch_size=batch), overhead)
        return Spread(est, placement.strategy, placement.offload, placement.gpus_per_node).peak(placement.gpus) <= budget

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
