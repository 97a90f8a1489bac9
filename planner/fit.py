"""Does an estimate fit on a GPU, and if not, on how many (FSDP full shard / ZeRO-3)?

Per GPU under full sharding across N GPUs: weights, quantization state, gradients and optimizer
states divide by N; activations, the loss and temporaries do not; each GPU also holds the
gathered parameters of two layers (the one computing and the one prefetched) in the weights'
storage. A fuller model of sharding, offload and multi-node placement belongs to the sharding
planner; this is the first answer the plan table needs.
"""

from __future__ import annotations

from planner.breakdown import MemoryBreakdown
from planner.catalog import GPU
from planner.estimate import Estimate
from planner.memory.overhead import framework_overhead
from planner.methods import TensorGroup

MAX_GPUS_SEARCHED = 4096


def fits(est: Estimate, gpu: GPU, fraction: float = 1.0) -> bool:
    """Whether the peak per GPU is within ``fraction`` of the GPU's usable memory."""
    return est.peak_bytes <= int(gpu.usable_memory_bytes * fraction)


def _gathered_layer_bytes(est: Estimate) -> int:
    groups: list[TensorGroup] = est.method.tensors(est.model.shape, est.setup)
    L = est.model.shape.num_layers
    per_layer = sum(g.data_bytes() + g.quant_state_bytes(est.setup.double_quant) for g in groups if g.count % L == 0 and g.count >= L) // L
    return 2 * per_layer


def sharded_tensor_peak(est: Estimate, n: int) -> int:
    """Peak tensor bytes per GPU with the model states fully sharded over ``n`` GPUs."""
    if n == 1:
        return est.peak.tensors
    gathered = _gathered_layer_bytes(est)
    worst = 0
    for phase, b in est.phases.items():
        states = b.weights + b.quantization_state + b.gradients + b.optimizer_states
        if phase == "optimizer":
            states += b.temporaries  # each rank steps only its own shard
        worst = max(worst, -(-states // n) + (b.tensors - states) + gathered)
    return worst


def sharded_peak(est: Estimate, n: int) -> int:
    """Peak bytes per GPU (device used on CUDA) with the model states fully sharded over ``n`` GPUs."""
    if n == 1:
        return est.peak_bytes
    tensors = sharded_tensor_peak(est, n)
    return tensors + framework_overhead(tensors, est.setup, est.overhead)


def gpus_needed(est: Estimate, gpu: GPU, fraction: float = 1.0) -> int | None:
    """The fewest GPUs of this kind that hold the step under full sharding, or None if no count does."""
    budget = int(gpu.usable_memory_bytes * fraction)
    if est.peak_bytes <= budget:
        return 1
    # the unsharded part sets a floor; search by doubling, then bisect
    hi = 2
    while sharded_peak(est, hi) > budget:
        hi *= 2
        if hi > MAX_GPUS_SEARCHED:
            return None
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sharded_peak(est, mid) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


def peak_breakdown(est: Estimate) -> MemoryBreakdown:
    return est.peak
