"""Beyond one GPU: memory per GPU under DDP, ZeRO-1/2/3, FSDP and hybrid sharding, with offload.

Starting from the single-GPU estimate's phases, each strategy divides what it shards over the GPUs
that share it (ZeRO semantics, DeepSpeed docs "ZeRO" and PyTorch FSDP):

- ``ddp``: nothing sharded; DDP's gradient buckets are a second copy of the gradients
  (``gradient_as_bucket_view=False``, PyTorch's default).
- ``zero1``: optimizer states (and the optimizer step's temporaries) sharded.
- ``zero2``: and gradients, plus one reduction bucket of a layer's gradients.
- ``zero3`` / ``fsdp`` (full shard): and the weights (4-bit ones and their quantization state
  too); each GPU holds two gathered layers (the one computing and the one prefetched) in the
  weights' storage, and the root unit (embeddings, final norm, head), which FSDP does not reshard
  between forward and backward, plus one layer's unsharded gradients before the reduce-scatter.
- ``hybrid`` (FSDP hybrid shard / ZeRO++ hpZ): full sharding within a node, replication across.

Offload (DeepSpeed ZeRO-Offload / ZeRO-Infinity, FSDP CPUOffload): ``optimizer`` moves the
optimizer states and step to host memory, with an fp32 copy of the gradients there;
``params`` (ZeRO-3 / FSDP only) also moves the weights' shards, the GPU keeping only what it
gathers. Host memory is reported per node.

Activations are not sharded: every GPU runs its own micro batch.

Known limitations: tensor and pipeline parallelism are not modelled; NCCL's own buffers and
DeepSpeed's configurable bucket sizes are approximated by one layer's worth.
"""

from __future__ import annotations

from dataclasses import dataclass

from fitplan.breakdown import MemoryBreakdown
from fitplan.errors import PlanError, unknown_choice
from fitplan.estimate import Estimate
from fitplan.memory.overhead import framework_overhead
from fitplan.methods import TensorGroup

STRATEGIES = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp", "hybrid")
OFFLOADS = ("none", "optimizer", "params")
DEFAULT_GPUS_PER_NODE = 8


@dataclass(frozen=True)
class Placement:
    strategy: str
    gpus: int
    gpus_per_node: int = DEFAULT_GPUS_PER_NODE
    offload: str = "none"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise unknown_choice("sharding", self.strategy, STRATEGIES)
        if self.offload not in OFFLOADS:
            raise unknown_choice("offload", self.offload, OFFLOADS)
        if self.gpus < 1 or self.gpus_per_node < 1:
            raise PlanError("GPU counts must be positive")
        if self.offload == "params" and self.strategy not in ("zero3", "fsdp", "hybrid"):
            raise PlanError("offloading parameters needs sharded parameters: use --sharding zero3, fsdp or hybrid")
        if self.strategy == "none" and self.gpus != 1:
            raise PlanError("--sharding none is one GPU; choose ddp, zero1, zero2, zero3, fsdp or hybrid for more")

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    @property
    def shard(self) -> int:
        """How many GPUs share one copy of what is sharded."""
        if self.strategy == "hybrid":
            return min(self.gpus, self.gpus_per_node)
        return self.gpus


@dataclass(frozen=True)
class ShardedPeak:
    placement: Placement
    phase: str
    per_gpu: MemoryBreakdown          # tensors by category, and the overhead
    host_bytes_per_node: int

    @property
    def peak_bytes(self) -> int:
        return self.per_gpu.total


def _layer_bytes(est: Estimate, groups: tuple[TensorGroup, ...], trainable_only: bool = False) -> int:
    L = est.model.shape.num_layers
    total = 0
    for g in groups:
        if g.per_layer(L) and (g.trainable or not trainable_only):
            total += g.data_bytes() + (0 if trainable_only else g.quant_state_bytes(est.setup.double_quant))
    return total // L


def _root_bytes(est: Estimate, groups: tuple[TensorGroup, ...]) -> int:
    L = est.model.shape.num_layers
    return sum(g.data_bytes() for g in groups if not g.per_layer(L) and not g.added)


def per_gpu(est: Estimate, placement: Placement) -> ShardedPeak:
    """Peak memory per GPU of ``est`` under ``placement`` (see the module docstring)."""
    p = placement
    if p.strategy == "none":
        return ShardedPeak(p, est.peak_phase, est.peak, 0)
    groups = est.groups
    n = p.shard
    s_opt = n if p.strategy in ("zero1", "zero2", "zero3", "fsdp", "hybrid") else 1
    s_grad = n if p.strategy in ("zero2", "zero3", "fsdp", "hybrid") else 1
    s_weight = n if p.strategy in ("zero3", "fsdp", "hybrid") else 1
    layer_w = _layer_bytes(est, groups)
    layer_g = _layer_bytes(est, groups, trainable_only=True)
    extra = 0
    if s_weight > 1:
        extra += 2 * layer_w + _root_bytes(est, groups)   # gathered layers and the root unit
    if s_grad > 1:
        extra += layer_g                                  # one layer's gradients before reduce-scatter
    best: tuple[str, MemoryBreakdown] | None = None
    host = 0
    for phase, b in est.phases.items():
        weights = -(-b.weights // s_weight)
        quant = -(-b.quantization_state // s_weight)
        grads = -(-b.gradients // s_grad) * (2 if p.strategy == "ddp" else 1)
        states = -(-b.optimizer_states // s_opt)
        temps = b.temporaries
        if phase == "optimizer":
            temps = -(-temps // s_opt)
        phase_host = 0
        if p.offload in ("optimizer", "params"):
            phase_host += states + (temps if phase == "optimizer" else 0) + -(-4 * _trainable_elements(groups) // s_opt)
            states = 0
            if phase == "optimizer":
                temps = 0
        if p.offload == "params":
            phase_host += weights + quant
            weights = quant = 0
        tensors = weights + quant + grads + states + b.activations + b.logits_loss + temps + extra
        overhead = framework_overhead(tensors, est.setup, est.overhead)
        bd = MemoryBreakdown(weights=weights, quantization_state=quant, gradients=grads, optimizer_states=states,
                             activations=b.activations, logits_loss=b.logits_loss, temporaries=temps + extra,
                             overhead=overhead)
        host = max(host, phase_host)
        if best is None or bd.total > best[1].total:
            best = (phase, bd)
    per_node = min(p.gpus, p.gpus_per_node)
    return ShardedPeak(p, best[0], best[1], host * per_node)


def _trainable_elements(groups: tuple[TensorGroup, ...]) -> int:
    return sum(g.elements for g in groups if g.trainable)


def candidate_counts(max_gpus: int = 4096, gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> list[int]:
    """GPU counts people rent: 1, 2, 4, ... up to a node, then whole nodes."""
    out = [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= gpus_per_node]
    nodes = 2
    while nodes * gpus_per_node <= max_gpus:
        out.append(nodes * gpus_per_node)
        nodes = nodes * 2 if nodes >= 16 else nodes + 1
    return sorted(set(out))


def fewest_gpus(est: Estimate, strategy: str, offload: str, budget: int,
                gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> ShardedPeak | None:
    """The smallest count (of candidate_counts) at which ``strategy``/``offload`` fits ``budget`` bytes."""
    for count in candidate_counts(gpus_per_node=gpus_per_node):
        if strategy == "none" and count > 1:
            return None
        if strategy != "none" and count == 1:
            continue
        try:
            placement = Placement(strategy, count, gpus_per_node, offload)
        except PlanError:
            return None
        result = per_gpu(est, placement)
        if result.peak_bytes <= budget:
            return result
        if strategy in ("ddp", "zero1") and count >= 2 * gpus_per_node:
            return None  # these shard too little for more GPUs to help much; stop early
    return None


def options(est: Estimate, budget: int, gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> list[ShardedPeak]:
    """For every strategy and offload, the fewest GPUs that hold the step; best first (no offload,
    then fewest GPUs)."""
    found = []
    for strategy in STRATEGIES:
        for offload in OFFLOADS:
            if offload == "params" and strategy not in ("zero3", "fsdp", "hybrid"):
                continue
            if strategy == "none" and offload != "none":
                continue
            result = fewest_gpus(est, strategy, offload, budget, gpus_per_node)
            if result is not None:
                found.append(result)
    # offload is slow (every step crosses PCIe): the last resort, optimizer states before parameters
    rank = {"none": 0, "optimizer": 1, "params": 2}
    return sorted(found, key=lambda r: (rank[r.placement.offload], r.placement.gpus, r.host_bytes_per_node, r.peak_bytes))
