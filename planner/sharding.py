"""Beyond one GPU: memory per GPU under DDP, ZeRO-1/2/3, FSDP and hybrid sharding, with offload.

Starting from the single-GPU estimate's phases, each strategy divides what it shards over the GPUs
that share it (ZeRO semantics, DeepSpeed docs "ZeRO" and PyTorch FSDP):

- ``none``: one GPU, nothing sharded (offload still moves states, or weights too, to the host).
- ``ddp``: nothing sharded; DDP's gradient buckets are a second copy of the gradients
  (``gradient_as_bucket_view=False``, PyTorch's default).
- ``zero1``: optimizer states (and the optimizer step's temporaries) sharded.
- ``zero2``: and gradients, plus one reduction bucket of a layer's gradients.
- ``zero3`` / ``fsdp`` (full shard): and the weights (4-bit ones and their quantization state
  too); each GPU holds two gathered layers (the one computing and the one prefetched) in the
  weights' storage, and the root unit (embeddings, final norm, head), which FSDP does not reshard
  between forward and backward, plus one layer's unsharded gradients before the reduce-scatter.
- ``fsdp1``: as ``fsdp``, by FSDP1's flat parameters, one per decoder layer (the transformer-layer wrap
  policy of accelerate and Lightning Fabric, ``use_orig_params=True``): a layer that trains any of its
  tensors (LoRA inside a wrapped layer) has a gradient for the whole flat parameter, frozen weights
  included. peft's own wrap policy (adapters in units of their own) is ``fsdp``.
- ``hybrid`` (FSDP hybrid shard / ZeRO++ hpZ): full sharding within a node, replication across.

Gradient accumulation (``TrainingSetup.grad_accum`` > 1) under FSDP (``fsdp``, ``fsdp1``, ``hybrid``)
runs the micro batches under ``no_sync`` (accelerate's and Fabric's default; FSDP2's
``set_requires_gradient_sync(False)``): the gradients accumulate unsharded (torch's
``FullyShardedDataParallel.no_sync`` docstring). DeepSpeed's ZeRO accumulates partitioned gradients.

Offload (DeepSpeed ZeRO-Offload and ZeRO-Infinity, FSDP CPUOffload), on one GPU too:
``optimizer`` moves the optimizer states, the step and the gradients (an fp32 copy, reduced bucket
by bucket: the GPU keeps one layer's) to host memory; ``params`` also moves the weights, the GPU
keeping only the two layers it gathers and the root unit. Host memory is reported per node.

Activations are not sharded: every GPU runs its own micro batch.

Per-GPU bytes are sums of a phase's parts, each either kept whole or divided (rounded up) by the
number of GPUs that share it; ``Spread`` holds those parts for one estimate, strategy and offload,
so that any GPU count is a few integer operations (the search's fast path), and the fewest GPUs
that hold a step is a bisection over every count, since the per-GPU peak never grows with the count.

Known limitations: tensor, pipeline, expert and context parallelism are ``fitplan.parallel``'s; NCCL's own buffers and
DeepSpeed's configurable bucket sizes are approximated by one layer's worth.
"""

from __future__ import annotations

from fitplan.breakdown import MemoryBreakdown
from fitplan.errors import PlanError, unknown_choice
from fitplan.estimate import PHASES, Estimate
from fitplan.frozen import frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

STRATEGIES = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp1", "hybrid")
SEARCHED = tuple(x for x in STRATEGIES if x != "fsdp1")   # fsdp1 is never better than fsdp: asked for only
OFFLOADS = ("none", "optimizer", "params")
DEFAULT_GPUS_PER_NODE = 8
MAX_GPUS = 100_000
_SHARDS_WEIGHTS = ("zero3", "fsdp", "fsdp1", "hybrid")
NO_SYNC = ("fsdp", "fsdp1", "hybrid")      # gradient accumulation under no_sync keeps unsharded gradients
_SHARDS_GRADIENTS = ("zero2",) + _SHARDS_WEIGHTS
_SHARDS_STATES = ("zero1",) + _SHARDS_GRADIENTS
DESCRIPTIONS = {
    "none": "one GPU, nothing sharded",
    "ddp": "replicated (DDP)",
    "zero1": "optimizer states sharded (ZeRO-1)",
    "zero2": "optimizer states and gradients sharded (ZeRO-2)",
    "zero3": "weights, gradients and optimizer states fully sharded (ZeRO-3)",
    "fsdp": "weights, gradients and optimizer states fully sharded (FSDP full shard)",
    "fsdp1": "fully sharded by FSDP1's flat parameters, one per decoder layer (frozen and trained weights together)",
    "hybrid": "fully sharded within a node, replicated across nodes (FSDP hybrid shard)",
}


@frozen
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
        if self.gpus > MAX_GPUS:
            raise PlanError(f"gpus of {self.gpus} is beyond the supported maximum of {MAX_GPUS}")
        if self.offload == "params" and self.strategy not in _SHARDS_WEIGHTS + ("none",):
            raise PlanError(f"--offload params needs sharded parameters; --sharding {self.strategy} keeps a whole "
                            "copy on every GPU: use --sharding zero3, fsdp or hybrid")
        if self.strategy == "none" and self.gpus != 1:
            raise PlanError(f"--sharding none is one GPU, but --gpus is {self.gpus}: choose ddp, zero1, zero2, "
                            "zero3, fsdp or hybrid for more")

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    @property
    def shard(self) -> int:
        """How many GPUs share one copy of what is sharded."""
        if self.strategy == "hybrid":
            return min(self.gpus, self.gpus_per_node)
        return self.gpus

    @property
    def practical(self) -> bool:
        """Whether the count is one people rent: up to a node in powers of two, else whole nodes."""
        n, per = self.gpus, self.gpus_per_node
        return (n <= per and n & (n - 1) == 0) or n % per == 0

    def describe(self) -> str:
        text = DESCRIPTIONS[self.strategy]
        if self.offload != "none":
            text += {"optimizer": ", optimizer states and gradients offloaded to host memory",
                     "params": ", weights, optimizer states and gradients offloaded to host memory"}[self.offload]
        return text


@frozen
class ShardedPeak:
    placement: Placement
    phase: str
    per_gpu: MemoryBreakdown          # tensors by category at the peak phase, and the overhead
    host_bytes_per_node: int
    phases: dict[str, MemoryBreakdown] | None = None   # every phase, per GPU
    layout: Any = None        # fitplan.parallel.Layout where tensor or pipeline parallelism is used too

    @property
    def peak_bytes(self) -> int:
        return self.per_gpu.total


def _ceil(x: int, n: int) -> int:
    return -(-x // n)


class Spread:
    """One estimate under one strategy and offload, for any GPU count (see the module docstring)."""

    def __init__(self, est: Estimate, strategy: str, offload: str = "none",
                 gpus_per_node: int = DEFAULT_GPUS_PER_NODE):
        self.est, self.strategy, self.offload, self.gpus_per_node = est, strategy, offload, gpus_per_node
        L = est.model.shape.num_layers
        groups = est.groups
        dq = est.setup.double_quant
        per_layer = [g for g in groups if g.per_layer(L)]
        self.layer_w = sum(g.data_bytes() + g.quant_state_bytes(dq) for g in per_layer) // L
        self.layer_g = sum(g.data_bytes() for g in per_layer if g.trainable) // L
        self.root = sum(g.data_bytes() for g in groups if not g.per_layer(L) and not g.added)
        self.fp32_grads = 4 * sum(g.elements for g in groups if g.trainable)
        # the gradients a GPU holds, as a multiple of the estimate's: FSDP1's flat parameter of a layer that
        # trains any of its tensors has a gradient for the whole layer (use_orig_params, frozen weights
        # included, in the flat parameter's dtype)
        grads = sum(g.data_bytes() for g in groups if g.trainable)
        self.g_scale = 1.0
        if strategy == "fsdp1" and grads and not any(g.quant_state_bytes(dq) for g in groups):
            units: dict[str, list] = {}
            for g in groups:
                key = "layers" if g.per_layer(L) else "root"
                units.setdefault(key, []).append(g)
            width = max((g.data_bytes() // max(g.elements, 1) for g in groups if not g.added), default=2)
            flat = sum(width * sum(x.elements for x in unit) for unit in units.values() if any(x.trainable for x in unit))
            self.g_scale = max(1.0, flat / grads)
        # gradient accumulation under FSDP's no_sync: every micro batch's gradients summed unsharded
        self.unsharded_grads = est.setup.grad_accum > 1 and strategy in NO_SYNC
        self.cuda = est.setup.device == "cuda"
        self.moments = est.moments
        # the moments as plain integers, for the fast path
        self._rows = tuple((phase == "optimizer", b.weights, b.quantization_state, b.gradients, b.optimizer_states,
                            b.activations + b.logits_loss, b.temporaries) for phase, b in est.moments)

    def _parts(self, n: int) -> tuple[int, int, int]:
        """How many GPUs share the weights, the gradients and the optimizer states."""
        s = min(n, self.gpus_per_node) if self.strategy == "hybrid" else n
        s_g = s if self.strategy in _SHARDS_GRADIENTS and not self.unsharded_grads else 1
        return (s if self.strategy in _SHARDS_WEIGHTS else 1, s_g, s if self.strategy in _SHARDS_STATES else 1)

    def per_phase(self, n: int) -> tuple[dict[str, MemoryBreakdown], int]:
        """Every phase's bytes per GPU on ``n`` GPUs, and the host bytes per GPU at their worst."""
        s_w, s_g, s_o = self._parts(n)
        off = self.offload
        extra = 0
        if s_w > 1 or off == "params":
            extra += 2 * self.layer_w + self.root          # gathered layers and the root unit
        if s_g > 1 and off == "none":
            extra += self.layer_g                          # one layer's gradients before reduce-scatter
        out: dict[str, MemoryBreakdown] = {}
        host = 0
        for phase, b in self.moments:
            weights, quant = _ceil(b.weights, s_w), _ceil(b.quantization_state, s_w)
            grads = _ceil(int(b.gradients * self.g_scale), s_g) * (2 if self.strategy == "ddp" else 1)
            states = _ceil(b.optimizer_states, s_o)
            temps = _ceil(b.temporaries, s_o) if phase == "optimizer" else b.temporaries
            phase_host = 0
            if off != "none":
                # states, the step and fp32 gradients live on the host; the GPU keeps one bucket
                phase_host += states + (temps if phase == "optimizer" else 0) + _ceil(self.fp32_grads, s_o)
                states = 0
                grads = min(grads, self.layer_g)
                if phase == "optimizer":
                    temps = 0
            if off == "params":
                phase_host += weights + quant
                weights = quant = 0
            tensors = weights + quant + grads + states + b.activations + b.logits_loss + temps + extra
            if phase in out and tensors + out[phase].overhead <= out[phase].total:
                continue
            overhead = (self.est.overhead.device_used(tensors) - tensors) if self.cuda else 0
            out[phase] = MemoryBreakdown(weights=weights, quantization_state=quant, gradients=grads,
                                         optimizer_states=states, activations=b.activations,
                                         logits_loss=b.logits_loss, temporaries=temps + extra, overhead=overhead)
            host = max(host, phase_host)
        return out, host

    def peak(self, n: int) -> int:
        """Peak bytes per GPU on ``n`` GPUs: ``per_phase``'s arithmetic on plain integers (the search's
        fast path; equals ``at(n).peak_bytes``)."""
        s_w, s_g, s_o = self._parts(n)
        off, params = self.offload != "none", self.offload == "params"
        extra = (2 * self.layer_w + self.root if s_w > 1 or params else 0) + (self.layer_g if s_g > 1 and not off else 0)
        ddp = 2 if self.strategy == "ddp" else 1
        g_scale = self.g_scale
        bucket = self.layer_g
        best = 0
        for is_opt, w, q, g, st, al, t in self._rows:
            w, q, g, st = -(-w // s_w), -(-q // s_w), -(-int(g * g_scale) // s_g) * ddp, -(-st // s_o)
            if is_opt:
                t = -(-t // s_o)
            if off:
                st = 0
                g = min(g, bucket)
                if is_opt:
                    t = 0
            if params:
                w = q = 0
            tensors = w + q + g + st + al + t + extra
            if tensors > best:
                best = tensors
        return self.est.overhead.device_used(best) if self.cuda else best

    def at(self, n: int) -> ShardedPeak:
        placement = Placement(self.strategy, n, self.gpus_per_node, self.offload)
        phases, host = self.per_phase(n)
        worst = max(PHASES, key=lambda p: phases[p].total)
        return ShardedPeak(placement, worst, phases[worst], host * min(n, self.gpus_per_node), phases)

    def fewest(self, budget: int, lo: int = 1, hi: int = MAX_GPUS) -> ShardedPeak | None:
        """The fewest GPUs (any count in [lo, hi]) whose per-GPU peak fits ``budget`` bytes, or None."""
        if self.strategy == "none":
            return self.at(1) if lo <= 1 and self.peak(1) <= budget else None
        lo = max(lo, 2)
        if self.peak(hi) > budget:
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if self.peak(mid) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return self.at(lo)


def per_gpu(est: Estimate, placement: Placement) -> ShardedPeak:
    """Peak memory per GPU of ``est`` under ``placement`` (see the module docstring)."""
    return Spread(est, placement.strategy, placement.offload, placement.gpus_per_node).at(placement.gpus)


def fewest_gpus(est: Estimate, strategy: str, offload: str, budget: int,
                gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> ShardedPeak | None:
    """The fewest GPUs (every count is searched) at which ``strategy``/``offload`` fits ``budget`` bytes."""
    if offload == "params" and strategy not in _SHARDS_WEIGHTS + ("none",) or strategy == "ddp" and offload != "none":
        return None
    found = Spread(est, strategy, offload, gpus_per_node).fewest(budget)
    if found is not None and strategy == "hybrid" and found.placement.gpus <= gpus_per_node:
        return None  # within one node hybrid sharding is full sharding
    return found


def options(est: Estimate, budget: int, gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> list[ShardedPeak]:
    """For every strategy and offload, the fewest GPUs that hold the step; best first (no offload,
    then fewest GPUs)."""
    found = []
    for strategy in SEARCHED:
        for offload in OFFLOADS:
            result = fewest_gpus(est, strategy, offload, budget, gpus_per_node)
            if result is not None:
                found.append(result)
    # offload is slow (every step crosses PCIe): the last resort, optimizer states before parameters
    rank = {"none": 0, "optimizer": 1, "params": 2}
    return sorted(found, key=lambda r: (rank[r.placement.offload], r.placement.gpus, r.host_bytes_per_node, r.peak_bytes))
