"""Per-rank memory of tensor and pipeline parallelism, measured with PyTorch's own engines on N local ranks.

``measure_parallel(raw, runs, world)`` starts ``world`` processes on this machine
(``torch.multiprocessing``, spawned or forked; backend gloo, ``MASTER_ADDR=127.0.0.1`` and a free port),
runs every ``Run`` of the list in them one after the other (the import of torch and transformers is
paid once), and returns each rank's measured peak through files in a temporary folder. ``planned(raw, run)`` is the
planner's per-GPU estimate for the same setting (``fitplan.parallel.Ranks(estimate).at(layout)`` of the
single-GPU CPU-kernel fp32 estimate), ``compare`` puts them side by side, rank by rank.

What runs (a transformers llama, built with ``from_config`` on every rank from the same seed, fp32,
SDPA, full fine-tuning with the planner's AdamW):

- ``tp``: ``torch.distributed.tensor.parallel.parallelize_module`` with torchtitan's llama3 plan
  (``models/llama3/infra/parallelize.py``) translated to transformers' module names: q/k/v/gate/up
  ``ColwiseParallel``, o/down ``RowwiseParallel``; with sequence parallelism the norms
  ``SequenceParallel``, the embedding ``RowwiseParallel(output_layouts=Shard(1))``, attention and MLP
  inputs all-gathered by ``PrepareModuleInput``, o/down reduce-scattered (``output_layouts=Shard(1)``);
  the head ``ColwiseParallel(output_layouts=Shard(-1))`` with ``loss_parallel()`` (a vocabulary-parallel
  cross-entropy over V/t logits). transformers' attention reshapes with ``view(*input_shape, -1,
  head_dim)``, so a column-parallel q/k/v (local outputs, ``use_local_output=True`` as torchtitan) runs
  heads/t local heads with no attribute changed; ``num_key_value_groups`` is unchanged because heads and
  KV heads are both divided by t (t must divide the KV heads). The decoder layers are driven directly
  (embedding, rotary table of the *full* sequence, layers, norm, head, loss), not through
  ``LlamaModel.forward``, which would build position ids from the local (sequence-sharded) length.
- ``pp``: ``torch.distributed.pipelining.PipelineStage`` over a manual split by layers (stage 0 the
  embedding and the first layers, the last stage the rest, the final norm, the head; the loss is the
  schedule's ``loss_fn``), ``ScheduleGPipe`` or ``Schedule1F1B`` over ``microbatches`` microbatches of
  ``batch_size`` sequences each. ``return_outputs=False`` as torchtitan's trainer (with the default
  ``True`` the last stage keeps every microbatch's logits for the merged output: ``keep_outputs``).
- ``fsdp`` on top of either: ``fully_shard`` of every decoder layer and then the root over the
  data-parallel dimension of a 2-D mesh (torchtitan's ``apply_fsdp``; with pipelining not resharded
  after forward).

Each rank measures its own live tensors with ``validate.tracker.MemoryTracker`` (one subclass here,
``RankTracker``), which needed three changes to be right under these engines:

- the dispatch mode returns ``NotImplemented`` for DTensor and ``AsyncCollectiveTensor`` ops, so they
  desugar into local ops the mode then sees (as ``torch.distributed._tools.mem_tracker`` does), and a
  wrapper's bytes are its inner tensors' (a wrapper subclass's own storage reports ``nbytes()`` it does
  not hold: counting it counted the embedding's reduce-scatter output three times); ops under
  DTensor's sharding propagation (fake tensors) hold no memory and are not counted;
- FSDP2 all-gathers parameters into, and frees them from, the same storage with
  ``UntypedStorage.resize_``, which the tracker follows (one record closed, another opened);
- pipelining's activations are told by ``saved_tensors_hooks``, whose pack returns a detached alias:
  returning the tensor itself makes every output saved by its own ``grad_fn`` (``exp``, SDPA's) a
  reference cycle, freed only by the garbage collector (the first step's metadata-inference forward
  then stayed alive into the second);
- the tracker emulates the engine's in-place sum of two gradients reaching one tensor; the engine
  does that only into a buffer it holds the last reference to, so a sum into a stage's receive buffer
  (held by the stage) is out of place here, and the base class's ``live_at`` listed a record whose bytes
  an emulated sum took over until its storage died (the categories then summed to more than the peak);
  pipelining's graphs are instrumented per microbatch so that a node's own ``add`` is not taken for such
  a sum.

Categories are the planner's: weights, gradients and optimizer states by identity; for tensor
parallelism, activations are forward-born storages alive at the end of the forward (as
``measure_cpu``), with the loss's backward (``backward``) told from the layers' (``backward_layers``);
for pipelining, whose forwards and backwards interleave, storages autograd saved; the rest
temporaries, of which the stage's receive buffers (``pipe_buffer``), what it keeps of each in-flight
microbatch (``stage_output``), FSDP's gathered parameters (``fsdp_unsharded``) and their gradients
(``fsdp_unsharded_grad``) are reported on their own. What these measurements found that the planner
lacked (DTensor's saved all-gathered inputs, the vocabulary-parallel loss's three shards, a stage's
gradients at 1F1B's peak, the receive buffers, the last stage's kept outputs and losses, FSDP's
moments around the loss) is now in ``fitplan.parallel``; ``tests/validate/test_parallel.py`` holds
each rank within 5%.

On GPUs and across nodes, under ``torchrun --nnodes M --nproc-per-node N`` (rendezvous by its
``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), the same ``_run_one`` runs with
these lines changed:

- ``dist.init_process_group("gloo", ...)`` -> ``dist.init_process_group("nccl")`` (rank and world from
  the environment; no ``mp.spawn``, no free port: torchrun starts the processes);
- ``DEVICE = "cpu"`` -> ``torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))`` and
  ``device = torch.device("cuda", local_rank)``: ``init_device_mesh("cuda", ...)``, the model built
  ``with torch.device(device)``, ``PipelineStage(..., device)``, the batch on that device;
- the results written to a shared folder (or gathered to rank 0 with ``dist.gather_object``) instead of
  this process's temporary folder; and the tracker compared with ``torch.cuda.max_memory_allocated()``
  (block rounding, NCCL's buffers outside PyTorch's allocator) and the planner's ``device="cuda"``
  estimate (CUDA kernels, the CUDA context).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from fitplan.validate.tracker import Alloc, MemoryTracker

DEVICE = "cpu"

# the model of the tests: every TP degree up to 4 divides its heads, KV heads, width and vocabulary
TINY_LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1024, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 2048, "tie_word_embeddings": False}


@dataclass(frozen=True)
class Run:
    """One measured setting. ``batch_size`` sequences per microbatch per data rank (the planner's
    ``batch_size``); a pipeline step runs ``microbatches`` of them."""

    name: str
    tp: int = 1
    pp: int = 1
    dp: int = 1
    schedule: str = "1f1b"           # "gpipe" or "1f1b"
    microbatches: int = 1
    sequence_parallel: bool = True
    strategy: str = "zero1"          # "fsdp": fully_shard over dp
    seq_len: int = 128
    batch_size: int = 2
    steps: int = 2
    keep_outputs: bool = False       # pipelining: the schedule's return_outputs

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp


# -- tracking -----------------------------------------------------------------------------------------


def _inner(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors holding a tensor's bytes: a DTensor's local shard, an ``AsyncCollectiveTensor``'s
    element (any traceable wrapper subclass, recursively); a plain tensor itself. A wrapper's own
    storage has no bytes of its own although ``nbytes()`` says it has."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if not is_traceable_wrapper_subclass(t):
        return [t]
    attrs, _ = t.__tensor_flatten__()
    out = []
    for name in attrs:
        v = getattr(t, name)
        if isinstance(v, torch.Tensor):
            out.extend(_inner(v))
    return out


def _local(t: torch.Tensor) -> torch.Tensor:
    return _inner(t)[0]


class RankTracker(MemoryTracker):
    """``MemoryTracker`` that sees through DTensor and FSDP2's storage resizing (see the module docstring)."""

    HELD_ELSEWHERE = frozenset({"pipe_buffer", "stage_output", "param", "grad", "opt_state", "buffer"})

    def __init__(self):
        super().__init__()
        self.keep_timeline = False
        self._current: dict[int, Alloc] = {}     # first record's rid -> the storage's current record
        self._orig_resize = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._guards import active_fake_mode
        from torch._subclasses.fake_tensor import FakeTensor
        from torch.distributed._functional_collectives import AsyncCollectiveTensor
        from torch.distributed.tensor import DTensor

        if any(issubclass(t, (DTensor, AsyncCollectiveTensor)) for t in types):
            return NotImplemented   # DTensor (or a collective's wrapper) runs its inner ops, which come back here
        if active_fake_mode() is not None or any(issubclass(t, FakeTensor) for t in types):
            return func(*args, **(kwargs or {}))   # DTensor's sharding propagation: no memory
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        held = self.live_by_cdata.get(first.untyped_storage()._cdata) if first is not None else None
        if held is not None and held.kind in self.HELD_ELSEWHERE and self.emulate_inplace_accumulation:
            # the engine sums in place only into a buffer it holds the last reference to; a stage's
            # receive buffer is also held by the stage, so that sum is out of place
            self.emulate_inplace_accumulation = False
            try:
                return super().__torch_dispatch__(func, types, args, kwargs)
            finally:
                self.emulate_inplace_accumulation = True
        before = self.inplace_accumulations
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.inplace_accumulations != before:
            # the emulated in-place sum took over args[0]'s bytes: from now on that record is not live
            old = self.live_by_cdata.get(args[0].untyped_storage()._cdata)
            if old is not None:
                old.transfer_event = self.events
        return out

    def live_at(self, event: int) -> list[Alloc]:
        """As ``MemoryTracker.live_at``, without the records whose bytes an emulated in-place gradient sum
        took over before ``event`` (the base class keeps listing them until the storage dies)."""
        return [a for a in super().live_at(event) if getattr(a, "transfer_event", event + 1) > event]

    def _track(self, t: torch.Tensor, op: str) -> Alloc | None:
        allocs = [super(RankTracker, self)._track(x, op) for x in _inner(t)]
        return allocs[0] if allocs else None

    def lookup(self, t: torch.Tensor) -> Alloc | None:
        return super().lookup(_local(t))

    def _free(self, key, a: Alloc):
        cur = self._current.pop(a.rid, a)
        if cur.died is not None:
            return
        self.events += 1
        cur.died = self.events
        if self.live_by_cdata.get(key) is cur:
            del self.live_by_cdata[key]
        if not getattr(cur, "transferred", False):
            self.live -= cur.nbytes

    def _resized(self, st, new: int) -> None:
        key = st._cdata
        a = self.live_by_cdata.get(key)
        if a is None or a.nbytes == new:
            return
        first = next((f for f, c in self._current.items() if c is a), a.rid)
        self.events += 1
        a.died = self.events
        if not getattr(a, "transferred", False):
            self.live -= a.nbytes
        b = Alloc(rid=len(self.allocs), nbytes=new, step=self.step, phase=self.phase, op="resize_",
                  shape=(new,), dtype="uint8", born=self.events + 1, kind="fsdp_unsharded" if new else a.kind,
                  region=self.region)
        self.events += 1
        self.allocs.append(b)
        self.live_by_cdata[key] = b
        self._current[first] = b
        self.live += new
        if self.live > self.peak:
            self.peak, self.peak_event = self.live, self.events
        pk = self.phase_peaks.get((self.step, self.phase))
        if pk is None or self.live > pk["bytes"]:
            self.phase_peaks[(self.step, self.phase)] = {"bytes": self.live, "event": self.events, "op": "resize_",
                                                         "op_index": self.op_index}

    def __enter__(self):
        orig = torch.UntypedStorage.resize_
        tracker = self

        def resize_(st, size):
            out = orig(st, size)
            tracker._resized(st, int(size))
            return out

        self._orig_resize = orig
        torch.UntypedStorage.resize_ = resize_
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._orig_resize
        return super().__exit__(*exc)

    def register_module(self, module: torch.nn.Module) -> None:
        for p in module.parameters():
            self.register(p, "param")
        for b in module.buffers():
            self.register(b, "buffer")
        for mod in module.modules():   # rotary tables kept as plain attributes
            for v in vars(mod).values():
                if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter):
                    self.register(v, "buffer")

    def name_grads_and_states(self, params, opt) -> None:
        self.name_grads(params, only=(None, "fsdp_unsharded"))
        self.name_states(opt, numel=lambda v: _local(v).numel())


def _summary(tracker: RankTracker, step: int) -> dict[str, Any]:
    """Step ``step``'s peak, its categories, and every phase's peak bytes."""
    from fitplan.validate.measure import _breakdown

    phases = {ph: pk for (st, ph), pk in tracker.phase_peaks.items() if st == step}
    phase = max(phases, key=lambda ph: phases[ph]["bytes"])
    pk = phases[phase]
    comp, live = tracker.composition(pk["event"])
    cats = _breakdown(comp)
    out = {
        "peak_bytes": pk["bytes"],
        "phase": phase,
        "categories": cats,
        "split": {"parameters": cats["weights"], "gradients": cats["gradients"],
                  "optimizer_states": cats["optimizer_states"],
                  "other": pk["bytes"] - cats["weights"] - cats["gradients"] - cats["optimizer_states"]},
        "phases": {ph: v["bytes"] for ph, v in phases.items()},
        "kinds": dict(sorted(comp.items())),
    }
    for kind in ("pipe_buffer", "stage_output", "fsdp_unsharded", "fsdp_unsharded_grad"):
        out[kind] = sum(a.nbytes for a in live if a.kind == kind)
    if os.environ.get("FITPLAN_PARALLEL_LIVE"):
        eof = {s: e for (s, lab), e in tracker.mark_events.items() if lab == "end_forward"}
        out["live"] = _live_table(live, eof)
    return out


def _live_table(live, eof) -> list:
    """What is live at the peak, grouped by (category, op, shape, phase born): for explaining a difference
    (``FITPLAN_PARALLEL_LIVE=1``)."""
    rows: dict[tuple, list[int]] = {}
    for a in live:
        key = (a.category(eof), a.op, str(a.shape), a.phase)
        r = rows.setdefault(key, [0, 0])
        r[0] += 1
        r[1] += a.nbytes
    return sorted([[*k, n, b] for k, (n, b) in rows.items()], key=lambda r: -r[-1])


def _tag_fsdp_grads(tracker: RankTracker, module: torch.nn.Module) -> None:
    """Name the gradients FSDP2's unsharded parameters receive (before the reduce-scatter, or accumulated
    across microbatches while gradient sync is off) ``fsdp_unsharded_grad``; a temporary for the planner."""
    from torch.distributed.fsdp import FSDPModule

    def hook(p):
        a = tracker.lookup(p.grad)
        if a is not None and a.kind is None:
            a.kind = "fsdp_unsharded_grad"

    for mod in module.modules():
        if not isinstance(mod, FSDPModule):
            continue
        group = mod._get_fsdp_state()._fsdp_param_group
        for fp in group.fsdp_params if group is not None else ():
            unsharded = getattr(fp, "_unsharded_param", None)
            if unsharded is not None and not getattr(unsharded, "_fitplan_hooked", False):
                unsharded.register_post_accumulate_grad_hook(hook)
                unsharded._fitplan_hooked = True


# -- the model, driven layer by layer -------------------------------------------------------------------


class Span(torch.nn.Module):
    """Layers ``lo:hi`` of a transformers llama, with the embedding if ``first`` and the final norm and head
    if ``last``. Input: token ids (first) or hidden states; output: hidden states or logits.
    ``on_top_grad``: called when the backward reaches the top layer's output (the loss, the head and the
    final norm are done), to tell that moment from the layers' backward."""

    def __init__(self, model, lo: int, hi: int, first: bool, last: bool):
        super().__init__()
        inner = model.model
        self.embed_tokens = inner.embed_tokens if first else None
        self.layers = torch.nn.ModuleList(inner.layers[lo:hi])
        self.rotary_emb = inner.rotary_emb
        self.norm = inner.norm if last else None
        self.lm_head = model.lm_head if last else None
        self.seq_len: int | None = None     # the full sequence (the input may be a sequence shard)
        self.on_top_grad = None

    def forward(self, x):
        h = self.embed_tokens(x) if self.embed_tokens is not None else x
        s = self.seq_len or h.shape[1]
        position_ids = torch.arange(s, device=h.device).unsqueeze(0)
        pe = self.rotary_emb(h, position_ids)     # the whole sequence's table, also when h is a shard
        for layer in self.layers:
            h = layer(h, attention_mask=None, position_embeddings=pe, position_ids=position_ids)
        if self.lm_head is not None:
            if self.on_top_grad is not None and h.requires_grad:
                h.register_hook(lambda g: self.on_top_grad())
            h = self.lm_head(self.norm(h))
        return h


def causal_loss(logits, shifted_labels):
    """transformers' ``ForCausalLMLoss`` with the labels already shifted (``pad(ids, (0, 1), -100)[:, 1:]``)."""
    logits = logits.float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted_labels.reshape(-1),
                                             ignore_index=-100)


def shifted(ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(ids, (0, 1), value=-100)[:, 1:].contiguous()


def _build(raw: dict[str, Any]):
    from fitplan.validate.build import hf_config
    from transformers import AutoModelForCausalLM

    cfg = hf_config(raw)
    torch.manual_seed(0)     # the same weights on every rank
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    model.train()
    return model


def _tp_plan(sp: bool) -> tuple[dict, dict]:
    """torchtitan's llama3 plan (root, per layer) in transformers' names."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    head = ColwiseParallel(input_layouts=Shard(1) if sp else Replicate(), output_layouts=Shard(-1),
                           use_local_output=False)              # loss_parallel: V/t logits per rank
    if sp:
        root = {"embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
                "norm": SequenceParallel(), "lm_head": head}
        layer = {
            "input_layernorm": SequenceParallel(),
            # transformers passes ``hidden_states`` by keyword
            "self_attn": PrepareModuleInput(input_kwarg_layouts={"hidden_states": Shard(1)},
                                            desired_input_kwarg_layouts={"hidden_states": Replicate()},
                                            use_local_output=True),
            "self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(output_layouts=Shard(1)),
            "post_attention_layernorm": SequenceParallel(),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                      use_local_output=True),
            "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(),
            "mlp.down_proj": RowwiseParallel(output_layouts=Shard(1)),
        }
    else:
        root = {"embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
                "lm_head": head}
        layer = {
            "self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(),
            "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel(),
        }
    return root, layer


def _make_optimizer(params):
    from fitplan.setup import TrainingSetup
    from fitplan.validate.measure import make_optimizer

    return make_optimizer(TrainingSetup(method="full", precision="fp32", device="cpu"), params)


def _optimizer_step(tracker: RankTracker, step: int, params, opt) -> None:
    tracker.name_grads_and_states(params, opt)
    tracker.set_phase(step, "optimizer")
    opt.step()
    tracker.name_grads_and_states(params, opt)
    tracker.set_phase(step, "zero_grad")
    opt.zero_grad(set_to_none=True)
    tracker.mark("end_step")


def _run_tp(raw, run: Run, rank: int) -> dict[str, Any]:
    """Tensor (and sequence) parallelism, optionally under FSDP2 over a data-parallel mesh dimension."""
    import contextlib

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import loss_parallel, parallelize_module

    model = _build(raw)
    span = Span(model, 0, len(model.model.layers), True, True)
    span.seq_len = run.seq_len
    del model
    if run.dp > 1:
        mesh = init_device_mesh(DEVICE, (run.dp, run.tp), mesh_dim_names=("dp", "tp"))
        tp_mesh, dp_mesh = mesh["tp"], mesh["dp"]
    else:
        tp_mesh, dp_mesh = init_device_mesh(DEVICE, (run.tp,), mesh_dim_names=("tp",)), None
    if run.tp > 1:
        root, layer = _tp_plan(run.sequence_parallel)
        parallelize_module(span, tp_mesh, root)
        for blk in span.layers:
            parallelize_module(blk, tp_mesh, layer)
    fsdp = run.strategy == "fsdp" and dp_mesh is not None
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for blk in span.layers:
            fully_shard(blk, mesh=dp_mesh)
        fully_shard(span, mesh=dp_mesh)
    params = [p for p in span.parameters() if p.requires_grad]
    opt = _make_optimizer(params)
    dp_rank = dp_mesh.get_local_rank() if dp_mesh is not None else 0
    g = torch.Generator().manual_seed(1 + dp_rank)       # the same batch on a TP group, another per data rank
    vocab = raw["vocab_size"]

    tracker = RankTracker()
    tracker.register_module(span)
    span.lm_head.register_forward_pre_hook(lambda *_: setattr(tracker, "region", "head"))
    span.on_top_grad = lambda: tracker.set_phase(tracker.step, "backward_layers")
    ctx = loss_parallel if run.tp > 1 else contextlib.nullcontext
    with tracker:
        for step in range(1, run.steps + 1):
            if fsdp and step > 1:
                _tag_fsdp_grads(tracker, span)
            tracker.set_phase(step, "forward")
            tracker.mark("start")
            ids = torch.randint(0, vocab, (run.batch_size, run.seq_len), generator=g)
            labels = shifted(ids)
            with ctx():
                loss = causal_loss(span(ids), labels)
                tracker.mark("end_forward")
                tracker.set_phase(step, "backward")
                tracker.instrument_graph(loss.grad_fn)
                loss.backward()
            del loss, ids, labels
            tracker.mark("end_backward")
            _optimizer_step(tracker, step, params, opt)
    out = _summary(tracker, run.steps)
    out["stage"] = "only"
    return out


def _run_pp(raw, run: Run, rank: int) -> dict[str, Any]:
    """Pipelining over ``run.pp`` stages (one per rank), optionally with FSDP2 over ``run.dp`` ranks per stage."""
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    p = run.pp
    if run.dp > 1:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(DEVICE, (p, run.dp), mesh_dim_names=("pp", "dp"))
        pp_group, dp_mesh = mesh.get_group("pp"), mesh["dp"]
        stage_index = mesh["pp"].get_local_rank()
    else:
        pp_group, dp_mesh, stage_index = dist.group.WORLD, None, rank
    model = _build(raw)
    L = len(model.model.layers)
    lo, hi = stage_index * L // p, (stage_index + 1) * L // p
    first, last = stage_index == 0, stage_index == p - 1
    span = Span(model, lo, hi, first, last)
    del model
    fsdp = run.strategy == "fsdp" and dp_mesh is not None
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for blk in span.layers:
            fully_shard(blk, mesh=dp_mesh, reshard_after_forward=False)     # torchtitan with pp
        fully_shard(span, mesh=dp_mesh, reshard_after_forward=False)
    tracker = RankTracker()

    def loss_fn(logits, target):
        tracker.region = "head"      # the loss's saved tensors are the planner's logits_loss
        loss = causal_loss(logits, target)
        tracker.instrument_graph(loss.grad_fn)
        return loss

    stage = PipelineStage(span, stage_index, p, torch.device(DEVICE), group=pp_group)
    sched_cls = ScheduleGPipe if run.schedule == "gpipe" else Schedule1F1B
    schedule = sched_cls(stage, run.microbatches, loss_fn=loss_fn)
    params = [q for q in span.parameters() if q.requires_grad]
    opt = _make_optimizer(params)
    dp_rank = dp_mesh.get_local_rank() if dp_mesh is not None else 0
    g = torch.Generator().manual_seed(1 + dp_rank)
    vocab = raw["vocab_size"]

    tracker.register_module(span)
    if last:
        span.lm_head.register_forward_pre_hook(lambda *_: setattr(tracker, "region", "head"))
    # a stage's forwards and backwards interleave: "forward" inside its module's forward, "backward" else
    span.register_forward_pre_hook(lambda *_: tracker.set_phase(tracker.step, "forward"))
    span.register_forward_hook(lambda *_: tracker.set_phase(tracker.step, "backward"))
    # the receive buffers are made by the first step's set-up: named before any backward sums into them
    span.register_forward_pre_hook(lambda *_: name_pipeline_tensors())

    def pack(t):
        a = tracker.lookup(t)
        if a is not None and a.kind is None:
            a.kind = "loss_activation" if a.region == "head" else "activation"
        # a detached alias: returning ``t`` itself would make a tensor saved by its own grad_fn (an output:
        # exp, SDPA's) a reference cycle, alive until the garbage collector runs
        return t.detach()

    def name_pipeline_tensors():
        # the receive buffers of every microbatch (allocated once, kept), and what the stage keeps of each
        # in-flight microbatch for its backward (its output: hidden states, or the last stage's logits)
        for info in list(stage.args_recv_info.values()) + list(getattr(stage, "grad_recv_info", {}).values()):
            for r in info:
                buf = getattr(r, "buffer", None)
                if isinstance(buf, torch.Tensor):
                    a = tracker.lookup(buf)
                    if a is not None and a.kind in (None, "activation"):
                        a.kind = "pipe_buffer"

    def keep_outputs(module, args, output):
        for t in (output if isinstance(output, tuple) else (output,)):
            a = tracker.lookup(t)
            if a is not None and a.kind is None:
                a.kind = "stage_output"
            if not last and t.grad_fn is not None:
                # tell the engine's sums of two incoming gradients from a node's own adds (see the tracker)
                tracker.instrument_graph(t.grad_fn)

    span.register_forward_hook(keep_outputs)
    with tracker, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for step in range(1, run.steps + 1):
            if fsdp and step > 1:
                _tag_fsdp_grads(tracker, span)
            tracker.set_phase(step, "forward")
            tracker.mark("start")
            ids = torch.randint(0, vocab, (run.batch_size * run.microbatches, run.seq_len), generator=g)
            labels = shifted(ids)
            losses: list = []
            schedule.step(*((ids,) if first else ()), target=labels if last else None,
                          losses=losses if last else None, return_outputs=run.keep_outputs)
            del ids, labels, losses
            _optimizer_step(tracker, step, params, opt)
    out = _summary(tracker, run.steps)
    out["stage"] = "first" if first else "last" if last else "middle"
    out["stage_index"] = stage_index
    return out


def _run_one(raw, run: Run, rank: int) -> dict[str, Any]:
    import torch.distributed as dist

    start = time.perf_counter()
    out = _run_pp(raw, run, rank) if run.pp > 1 else _run_tp(raw, run, rank)
    out["duration_s"] = round(time.perf_counter() - start, 3)
    out["rank"] = rank
    dist.barrier()
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, raw: dict[str, Any], runs: list[Run], out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)                  # N ranks share this machine's cores
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=180))
    try:
        from fitplan.validate.env import quiet_libraries

        quiet_libraries()
        for i, run in enumerate(runs):
            try:
                if run.world != world:
                    raise ValueError(f"run {run.name} needs {run.world} ranks, this launch has {world}")
                out = _run_one(raw, run, rank)
            except Exception as exc:   # noqa: BLE001 - recorded; the other runs go on
                out = {"rank": rank, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                dist.barrier()
            Path(out_dir, f"run{i}-rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def measure_parallel(raw: dict[str, Any], runs: list[Run], world: int, start_method: str = "spawn") -> list[dict[str, Any]]:
    """Every run of ``runs`` (each of ``world`` ranks) on ``world`` local gloo ranks, one after the other in
    the same processes. Per run: ``{"run": asdict(run), "ranks": [...], "launch_s"}``, each rank's
    ``peak_bytes``, ``phase``, ``categories`` (the planner's), ``split`` (parameters / gradients /
    optimizer states / other), ``phases`` (each phase's peak), ``stage``, ``pipe_buffer``,
    ``stage_output``, ``fsdp_unsharded``, ``fsdp_unsharded_grad``, ``duration_s`` -- or its ``error``.

    ``start_method="fork"`` (Linux, CPU only) starts the ranks from this process with torch, the
    distributed engines and transformers already imported, which saves each rank their import time."""
    import torch.multiprocessing as mp

    start = time.perf_counter()
    if start_method == "fork":
        import torch.distributed.fsdp
        import torch.distributed.pipelining
        import torch.distributed.tensor.parallel  # noqa: F401
        import transformers.models.llama.modeling_llama  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="fitplan-parallel-") as out_dir:
        mp.start_processes(_worker, args=(world, _free_port(), raw, list(runs), out_dir), nprocs=world,
                           start_method=start_method)
        results = []
        for i, run in enumerate(runs):
            ranks = [json.loads(Path(out_dir, f"run{i}-rank{r}.json").read_text()) for r in range(world)]
            results.append({"run": asdict(run), "ranks": ranks})
    for r in results:
        r["launch_s"] = round(time.perf_counter() - start, 3)
    return results


# -- the planner beside it ------------------------------------------------------------------------------


def setup_of(run: Run):
    from fitplan.setup import TrainingSetup

    return TrainingSetup(method="full", precision="fp32", seq_len=run.seq_len, batch_size=run.batch_size,
                         device="cpu", attention="sdpa")


def layout_of(run: Run):
    from fitplan.parallel import Layout

    return Layout(tp=run.tp, pp=run.pp, dp=run.dp, strategy=run.strategy if run.dp > 1 else "zero1",
                  schedule=run.schedule, microbatches=run.microbatches if run.pp > 1 else 0,
                  sequence_parallel=run.sequence_parallel, engine="torch")   # PyTorch's engines run here


def _estimate(raw: dict[str, Any], run: Run):
    from fitplan.architecture import shape_from_config
    from fitplan.catalog import ModelEntry
    from fitplan.estimate import estimate

    entry = ModelEntry("parallel-validation", "config", None, shape_from_config(raw, "parallel-validation"))
    return estimate(entry, setup_of(run))


def planned(raw: dict[str, Any], run: Run):
    """The planner's per-rank estimate for ``run`` (``fitplan.parallel.Ranks(estimate).at(layout)``): a
    ``RankPeak`` with every stage's peak total (``stages``) and the worst stage's breakdown."""
    from fitplan.parallel import Ranks

    return Ranks(_estimate(raw, run)).at(layout_of(run))


def error_percent(planned_bytes: int, measured_bytes: int) -> float:
    return round(100.0 * (planned_bytes - measured_bytes) / measured_bytes, 2)


def compare(raw: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Per rank: the measured peak and categories beside the planner's for that rank's stage (the
    planner's middle stage is the second, the one with the most microbatches in flight of the middle
    ones: a later middle stage holds less)."""
    run = Run(**result["run"])
    peak = planned(raw, run)
    rows = []
    for r in result["ranks"]:
        if "error" in r:
            rows.append({"rank": r["rank"], "error": r["error"]})
            continue
        stage = r["stage"]
        row = {"rank": r["rank"], "stage": stage, "measured": r["peak_bytes"], "measured_phase": r["phase"],
               "measured_categories": r["categories"], "split": r["split"]}
        for k in ("pipe_buffer", "stage_output", "fsdp_unsharded", "fsdp_unsharded_grad", "phases", "duration_s"):
            row[k] = r.get(k)
        plan_total = (peak.stages or {}).get(stage)
        if plan_total is not None:
            row.update(planned=plan_total, error_percent=error_percent(plan_total, r["peak_bytes"]))
            if stage == peak.stage:
                row["planned_phase"] = peak.phase
                row["planned_categories"] = peak.per_gpu.parts()
        rows.append(row)
    return {"run": run.name, "layout": layout_of(run).describe(), "ranks": rows}
