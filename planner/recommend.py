"""Recommend a method and a LoRA rank for a GPU.

The strongest method that fits one GPU with headroom (peak at most 90% of usable memory), in the
order full fine-tuning, LoRA, QLoRA, bottleneck adapters, prefix tuning, P-tuning, prompt tuning.
For LoRA and QLoRA the rank starts at 16, rises to 32 or 64 where memory allows and falls to 8
or 4 where it must. When no method fits one GPU, the method that needs the fewest GPUs under full
sharding, the stronger one on a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import GPU, ModelEntry
from planner.errors import PlanError
from planner.estimate import Estimate, estimate
from planner.fit import fits, gpus_needed
from planner.memory.overhead import DEFAULT_OVERHEAD, Overhead
from planner.methods import REGISTRY
from planner.setup import TrainingSetup

HEADROOM = 0.90
RANKS_UP = (64, 32, 16)
RANKS_DOWN = (8, 4)
GIB = 2**30


@dataclass(frozen=True)
class Recommendation:
    method: str
    lora_rank: int | None
    gpus: int | None
    reason: str
    estimate: Estimate | None


def _try(model: ModelEntry, setup: TrainingSetup, overhead: Overhead) -> Estimate | None:
    try:
        return estimate(model, setup, overhead)
    except PlanError:
        return None


def _best_rank(model: ModelEntry, setup: TrainingSetup, gpu: GPU, overhead: Overhead) -> Estimate | None:
    for rank in RANKS_UP + RANKS_DOWN:
        est = _try(model, setup.with_(lora_rank=rank), overhead)
        if est is not None and fits(est, gpu, HEADROOM):
            return est
    return None


def recommend(model: ModelEntry, base: TrainingSetup, gpu: GPU, overhead: Overhead = DEFAULT_OVERHEAD) -> Recommendation:
    ordered = sorted(REGISTRY.values(), key=lambda m: -m.strength)
    budget = gpu.usable_memory_bytes
    for m in ordered:
        setup = base.with_(method=m.name)
        if m.name in ("lora", "qlora"):
            est = _best_rank(model, setup, gpu, overhead)
        else:
            est = _try(model, setup, overhead)
            est = est if est is not None and fits(est, gpu, HEADROOM) else None
        if est is None:
            continue
        spare = (budget - est.peak_bytes) / GIB
        rank = est.setup.lora_rank if m.name in ("lora", "qlora") else None
        what = f"{m.title} r={rank}" if rank else m.title
        stronger = [o.title for o in ordered if o.strength > m.strength]
        why = f"{what} fits on one {gpu.name} with {spare:.1f} GiB to spare"
        if stronger:
            why += f"; {stronger[-1]} does not fit with 10% headroom"
        return Recommendation(m.name, rank, 1, why, est)
    best: tuple[int, int, Estimate] | None = None
    for m in ordered:
        est = _try(model, base.with_(method=m.name), overhead)
        if est is None:
            continue
        n = gpus_needed(est, gpu, HEADROOM)
        if n is not None and (best is None or n < best[0]):
            best = (n, m.strength, est)
    if best is None:
        return Recommendation(
            base.method, None, None,
            f"no method fits on {gpu.name} at any GPU count: shorten the sequence, lower the batch "
            "or enable gradient checkpointing", None,
        )
    n, _, est = best
    rank = est.setup.lora_rank if est.setup.method in ("lora", "qlora") else None
    return Recommendation(
        est.setup.method, rank, n,
        f"nothing fits on one {gpu.name}; {est.method.title} needs {n} GPUs with fully sharded states (FSDP / ZeRO-3)",
        est,
    )
