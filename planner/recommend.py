"""Recommend a method and a LoRA rank for a GPU.

The strongest method that fits one GPU with headroom (peak at most 90% of usable memory), in the
order full fine-tuning, LoRA, QLoRA, bottleneck adapters, prefix tuning, P-tuning, prompt tuning.
For LoRA and QLoRA the rank starts at 16, rises to 32 or 64 where memory allows and falls to 8
or 4 where it must. When no method fits one GPU, the method that needs the fewest GPUs under full
sharding, the stronger one on a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fitplan.catalog import GPU, ModelEntry
from fitplan.errors import PlanError
from fitplan.estimate import Estimate, estimate
from fitplan.fit import fits, gpus_needed
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup
from fitplan.units import GIB

HEADROOM = 0.90
RANKS_UP = (64, 32, 16)
RANKS_DOWN = (8, 4)


@dataclass(frozen=True)
class Recommendation:
    method: str
    lora_rank: int | None
    gpus: int | None
    reason: str
    estimate: Estimate | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "lora_rank": self.lora_rank, "gpus": self.gpus, "reason": self.reason,
                "peak_bytes": self.estimate.peak_bytes if self.estimate else None}


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
        if "lora_rank" in m.options:
            est = _best_rank(model, setup, gpu, overhead)
        else:
            est = _try(model, setup, overhead)
            est = est if est is not None and fits(est, gpu, HEADROOM) else None
        if est is None:
            continue
        spare = (budget - est.peak_bytes) / GIB
        rank = est.setup.lora_rank if "lora_rank" in m.options else None
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
            base.method.name, None, None,
            f"no method fits on {gpu.name} at any GPU count: shorten the sequence, lower the batch "
            "or enable gradient checkpointing", None,
        )
    n, _, est = best
    rank = est.setup.lora_rank if "lora_rank" in est.setup.method.options else None
    return Recommendation(
        est.setup.method.name, rank, n,
        f"nothing fits on one {gpu.name}; {est.method.title} needs {n} GPUs with fully sharded states (FSDP / ZeRO-3)",
        est,
    )
