"""Does an estimate fit on a GPU, and if not, on how many (FSDP full shard; fitplan.sharding)?"""

from __future__ import annotations

from fitplan.catalog import GPU
from fitplan.estimate import Estimate


def fits(est: Estimate, gpu: GPU, fraction: float = 1.0) -> bool:
    """Whether the peak per GPU is within ``fraction`` of the GPU's usable memory."""
    return est.peak_bytes <= int(gpu.usable_memory_bytes * fraction)


def gpus_needed(est: Estimate, gpu: GPU, fraction: float = 1.0) -> int | None:
    """The fewest GPUs of this kind (1, 2, 4, 8, then whole nodes of 8) that hold the step with
    fully sharded states (FSDP full shard, no offload), or None if no count up to 4096 does."""
    from fitplan.sharding import fewest_gpus

    budget = int(gpu.usable_memory_bytes * fraction)
    if est.peak_bytes <= budget:
        return 1
    found = fewest_gpus(est, "fsdp", "none", budget)
    return found.placement.gpus if found else None
