"""Plan: the one result of a request. Text tables, JSON and pictures are views of it.

``Plan.to_dict()`` is exactly what ``plan ... --json`` prints; ``fitplan.render`` prints the tables
and ``fitplan.plot`` draws the pictures from the same object, so that every answer a person reads
agrees with the numbers beside it.
"""

from __future__ import annotations

import json
import os

from fitplan.breakdown import MemoryBreakdown
from fitplan.calibration import Calibration
from fitplan.catalog import GPU, ModelEntry
from fitplan.estimate import PHASES, Estimate
from fitplan.frozen import frozen
from fitplan.lifecycle import Peaks, peaks
from fitplan.methods import Method
from fitplan.recommend import Recommendation
from fitplan.request import Request
from fitplan.setup import TrainingSetup
from fitplan.sharding import ShardedPeak
from fitplan.suggest import Suggestion

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    # imported where model parallelism is asked for (the cold start)
    from fitplan.parallel import RankPeak


@frozen
class MethodResult:
    """One method's answer: its estimate (or why there is none), and how it fits the GPU."""

    method: Method
    estimate: Estimate | None
    error: str | None = None
    spread: ShardedPeak | None = None     # the step spread over the requested GPUs
    fits: bool | None = None              # with a GPU: the per-GPU peak within usable memory
    gpus_needed: int | None = None        # with a GPU: the fewest that hold the step (None: no count)
    sharding: str | None = None
    recommended: bool = False
    gpus_needed_checkpointing: bool = False           # the count needs checkpointing the user did not choose
    gpus_needed_without_checkpointing: int | None = None
    parallel: RankPeak | None = None      # the step under --tensor/--pipeline/--context/--expert-parallel

    @property
    def peak_bytes(self) -> int:
        """Peak bytes of one unsharded replica."""
        return self.estimate.peak_bytes

    @property
    def peak_bytes_per_gpu(self) -> int:
        if self.parallel is not None:
            return self.parallel.peak_bytes
        return self.spread.peak_bytes if self.spread is not None else self.estimate.peak_bytes

    @property
    def tools_per_gpu(self) -> dict[str, int]:
        """What the tools will say at the peak on one GPU (the spread or parallel view where there is one):
        ``allocated_bytes`` (torch.cuda.max_memory_allocated), ``reserved_bytes``, ``device_used_bytes``
        (nvidia-smi), ``band_bytes`` and ``paged_state_bytes`` (a paged optimizer's states on this GPU,
        counted in device used only). CUDA only: empty on the CPU."""
        est = self.estimate
        if est is None or est.setup.device != "cuda":
            return {}
        paged = est.paged_state_bytes
        if self.parallel is not None:
            tensors = self.parallel.per_gpu.tensors
            paged = int(paged * self.parallel.per_gpu.optimizer_states / max(est.peak.optimizer_states, 1))
        elif self.spread is not None:
            tensors = self.spread.per_gpu.tensors
            p = self.spread.placement
            paged = 0 if p.offload != "none" else paged // (p.shard if p.strategy != "ddp" else 1)
        else:
            tensors = est.peak.tensors
        o = est.overhead
        used = o.device_used(tensors)
        return {"allocated_bytes": o.allocated(tensors - paged), "reserved_bytes": o.reserved(tensors - paged),
                "device_used_bytes": used, "band_bytes": int(used * o.band_fraction), "paged_state_bytes": paged}

    @property
    def other_peaks(self) -> Peaks:
        """The model load's and the checkpoint save's peaks beside the step's, per GPU."""
        return peaks(self.estimate, self.spread)

    @property
    def phases(self) -> dict[str, MemoryBreakdown]:
        """Bytes by category of each phase, per GPU where the step is spread (the worst pipeline stage's)."""
        if self.parallel is not None:
            return self.parallel.phases
        return self.spread.phases if self.spread is not None else self.estimate.phases

    def to_dict(self) -> dict[str, Any]:
        m = self.method
        if self.estimate is None:
            return {"method": m.name, "title": m.title, "error": self.error}
        est, setup = self.estimate, self.estimate.setup
        row: dict[str, Any] = {
            "method": m.name,
            "title": m.title,
            "trainable_parameters": est.trainable_params,
            "trainable_percent": round(est.trainable_percent, 4),
            "peak_bytes": est.peak_bytes,
            "peak_phase": est.peak_phase,
            "gpus": setup.gpus,
            "peak_breakdown": est.peak.parts(),
            "phases": {p: est.phases[p].to_dict() for p in PHASES},
            "saved_bytes": est.saved_file_bytes,
            "saved_kind": m.saved_kind,
            "gradient_checkpointing": setup.checkpointing,
            "layer_activation_bytes": {"layer_0": est.layer_activation_bytes[0],
                                       "per_later_layer": est.layer_activation_bytes[1]},
        }
        if setup.device == "cuda":
            row["allocated_bytes"] = est.allocated_bytes
            row["reserved_bytes"] = est.reserved_bytes
            row["device_used_bytes"] = est.device_used_bytes
            row["band_bytes"] = est.band_bytes
        if "lora_rank" in m.options:
            row["lora_rank"] = setup.lora_rank
        row["peak_bytes_per_gpu"] = self.peak_bytes_per_gpu
        if self.spread is not None or self.parallel is not None:
            row.update({f"{k.removesuffix('_bytes')}_bytes_per_gpu": v for k, v in self.tools_per_gpu.items()})
        row["other_peaks"] = self.other_peaks.to_dict()
        row["activation_host_bytes"] = est.host_bytes
        row["paged_state_bytes"] = est.paged_state_bytes
        if self.spread is not None:
            row["sharding"] = self.spread.placement.strategy
            row["offload"] = self.spread.placement.offload
            row["host_bytes_per_node"] = self.spread.host_bytes_per_node
        if self.spread is not None:
            row["phases_per_gpu"] = {p: b.to_dict() for p, b in self.spread.phases.items()}
            row["peak_phase_per_gpu"] = self.spread.phase
        if self.parallel is not None:
            row["parallel"] = parallel_dict(self.parallel)
            row["phases_per_gpu"] = {p: b.to_dict() for p, b in self.parallel.phases.items()}
            row["peak_phase_per_gpu"] = self.parallel.phase
        if self.fits is not None:
            row["fits"] = self.fits
            row["gpus_needed"] = self.gpus_needed
            row["gpus_needed_checkpointing"] = self.gpus_needed_checkpointing
            row["gpus_needed_without_checkpointing"] = self.gpus_needed_without_checkpointing
            row.setdefault("sharding", self.sharding)
            row["recommended"] = self.recommended
        return row


def parallel_dict(o: RankPeak) -> dict[str, Any]:
    lay = o.layout
    return {"tensor_parallel": lay.tp, "pipeline_parallel": lay.pp, "context_parallel": lay.cp,
            "expert_parallel": lay.ep, "data_parallel": lay.dp, "sharding": lay.strategy, "gpus": lay.gpus,
            "pipeline_schedule": lay.schedule, "virtual_stages": lay.virtual_stages, "microbatches": lay.m,
            "sequence_parallel": lay.sequence_parallel, "layout": lay.describe(), "worst_stage": o.stage,
            "stage_peak_bytes": dict(o.stages or {}), "peak_bytes_per_gpu": o.peak_bytes, "peak_phase": o.phase,
            "breakdown": o.per_gpu.parts()}


def sharded_dict(o: ShardedPeak) -> dict[str, Any]:
    return {"sharding": o.placement.strategy, "offload": o.placement.offload, "gpus": o.placement.gpus,
            "nodes": o.placement.nodes, "peak_bytes_per_gpu": o.peak_bytes, "peak_phase": o.phase,
            "host_bytes_per_node": o.host_bytes_per_node, "breakdown": o.per_gpu.parts()}


def suggestion_dict(x: Suggestion) -> dict[str, Any]:
    layout = x.result.layout
    extra = {} if layout is None else {"layout": layout.describe(), "tensor_parallel": layout.tp,
                                       "pipeline_parallel": layout.pp, "context_parallel": layout.cp,
                                       "expert_parallel": layout.ep, "data_parallel": layout.dp}
    return {"gpu": x.gpu.name, **sharded_dict(x.result), **extra, "gradient_checkpointing": x.setup.checkpointing,
            "headroom_fraction": round(x.headroom_fraction, 4), "price_usd_per_hour": x.price_per_hour,
            "price_date": x.gpu.price_date, "hours": x.hours, "cost_usd": x.cost, "calibrated": x.calibrated,
            "band_fraction": x.band_fraction, "practical": x.practical, "why_not": x.why_not or None}


def gpu_dict(gpu: GPU) -> dict[str, Any]:
    return {"name": gpu.name, "display_name": gpu.display_name, "memory_bytes": gpu.memory_bytes,
            "usable_memory_bytes": gpu.usable_memory_bytes, "bf16_tflops": gpu.bf16_tflops,
            "supports_bf16": gpu.supports_bf16}


@frozen
class Training:
    """Time and cost to train ``tokens`` tokens on ``gpus`` GPUs of the plan's kind."""

    tokens: int
    gpus: int
    mfu: float
    hours: float | None
    cost_usd: float | None


@frozen
class Plan:
    """The answer to a request: every view (table, JSON, picture) renders this object."""

    request: Request
    model: ModelEntry
    gpu: GPU | None
    setup: TrainingSetup                  # the common setting (of the first method planned)
    assumed: tuple[str, ...]
    notes: tuple[str, ...]
    calibration: Calibration | None
    methods: dict[str, MethodResult]
    single: bool                          # one method was asked for
    recommendation: Recommendation | None = None
    suggestions: tuple[Suggestion, ...] | None = None
    placements: tuple[ShardedPeak, ...] | None = None   # with one method and a GPU: per sharding
    placements_checkpointing: bool = False
    placements_note: str = ""
    layouts: tuple[RankPeak, ...] | None = None         # with one method and a GPU: model-parallel layouts that hold it
    training: Training | None = None
    largest: dict[str, int | None] | None = None
    gpus_per_node: int = 8
    goal: Any = None                      # fitplan.recommend.Goal
    placement: Any = None                 # fitplan.sharding.Placement the user asked for, if any
    layout: Any = None                    # fitplan.parallel.Layout the user asked for, if any
    stack: Any = None                     # fitplan.stacks.Stack whose defaults applied
    stack_applied: dict[str, Any] | None = None   # what the stack set (option -> value), where --stack was given

    @property
    def method(self) -> MethodResult:
        """The one method asked for (or the first one planned)."""
        return next(iter(self.methods.values()))

    @property
    def phases(self) -> dict[str, MemoryBreakdown]:
        """Bytes by category of each phase (forward, backward, optimizer) of the method asked for."""
        return self.method.phases

    def to_dict(self) -> dict[str, Any]:
        """The JSON view: every memory figure an int of bytes (the README documents each field)."""
        model, cal = self.model, self.calibration
        s = model.shape
        out: dict[str, Any] = {
            "model": {"name": model.name, "source": model.source, "hf_id": model.hf_id, "model_type": s.model_type,
                      "parameters": s.parameter_count, "layers": s.num_layers, "hidden_size": s.hidden_size,
                      "vocab_size": s.vocab_size},
            "gpu": gpu_dict(self.gpu) if self.gpu else None,
            "setup": {k: v for k, v in self.setup.to_dict().items() if k not in ("method", "grad_ckpt")}
                     | {"grad_ckpt": self.request.grad_ckpt},
            "calibration": None if cal is None else {
                "gpu": cal.gpu, "torch": cal.torch, "transformers": cal.transformers, "runs": cal.runs,
                "date": cal.date, "source": cal.source, "file": os.path.basename(cal.path) if cal.path else None},
            "assumed": list(self.assumed),
            "notes": list(self.notes),
            "stack": None if self.stack is None else {**self.stack.to_dict(self.stack_applied),
                                                      "given": self.request.given("stack")},
            "methods": [r.to_dict() for r in self.methods.values()],
            "recommendation": None if self.recommendation is None else self.recommendation.to_dict(),
        }
        if self.placement is not None:
            p = self.placement
            out["placement"] = {"sharding": p.strategy, "offload": p.offload, "gpus": p.gpus, "nodes": p.nodes,
                                "gpus_per_node": p.gpus_per_node, "description": p.describe()}
        if self.layout is not None:
            lay = self.layout
            out["layout"] = {"tensor_parallel": lay.tp, "pipeline_parallel": lay.pp, "context_parallel": lay.cp,
                             "expert_parallel": lay.ep, "data_parallel": lay.dp, "sharding": lay.strategy,
                             "gpus": lay.gpus, "description": lay.describe()}
        if self.suggestions is not None:
            out["suggestions"] = [suggestion_dict(x) for x in self.suggestions]
        if self.placements is not None:
            out["sharding_options"] = [sharded_dict(x) for x in self.placements]
            out["sharding_options_checkpointing"] = self.placements_checkpointing
        if self.layouts is not None:
            out["parallel_layouts"] = [parallel_dict(x) for x in self.layouts]
        if self.training is not None:
            t = self.training
            out["training"] = {"tokens": t.tokens, "gpus": t.gpus, "mfu": t.mfu, "hours": t.hours, "cost_usd": t.cost_usd}
        if self.largest is not None:
            out["largest"] = dict(self.largest)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
