"""Exact accounting of live tensor bytes during training steps, by category and phase.

A ``TorchDispatchMode`` sees every aten op; every output storage not seen before is an allocation
(``untyped_storage().nbytes()``, deduplicated by storage identity) and a ``weakref.finalize`` on
the storage records its release. Phase markers (forward / backward / optimizer / zero_grad) and
identity-based kinds (parameter, gradient, optimizer state) say what was live at the peak. It
works on real CPU tensors and on fake tensors alike; it models an allocator without rounding or
fragmentation, i.e. what ``torch.cuda.memory_allocated`` would show modulo block rounding.
Workspaces allocated inside one kernel (cuBLAS, flash-attention scratch) are not visible.

The autograd engine sums two gradients reaching the same input in place, except when a tensor
subclass or a dispatch mode is active, when it adds out of place: the tracker emulates the
in-place sum so that what it measures is what a plain run does.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# tracker kinds -> the planner's categories (fitplan.breakdown); every other kind is a temporary
CATEGORY_OF_KIND = {
    "param": "weights",
    "buffer": "weights",
    "quant_state": "quantization_state",
    "grad": "gradients",
    "opt_state": "optimizer_states",
    "opt_step_scalar": "optimizer_states",
    "activation": "activations",
    "loss_activation": "logits_loss",
}


def category_of(kind: str) -> str:
    """The planner's category of a tracker kind (``fitplan.breakdown.Category`` values)."""
    return CATEGORY_OF_KIND.get(kind, "temporaries")


@dataclasses.dataclass
class Alloc:
    rid: int
    nbytes: int
    step: int
    phase: str
    op: str
    shape: tuple
    dtype: str
    born: int  # event index
    died: int | None = None
    kind: str | None = None  # param / buffer / grad / opt_state (identity based)
    region: str = "body"     # "head": made from the output head on (logits and loss)

    def category(self, step_end_forward: dict[int, int]) -> str:
        if self.kind is not None:
            return self.kind
        if self.phase == "forward":
            eof = step_end_forward.get(self.step)
            if eof is not None and (self.died is None or self.died > eof):
                # forward-born, alive at end of forward: held by the graph
                return "loss_activation" if self.region == "head" else "activation"
            return "forward_temp"
        if self.phase == "backward":
            return "backward_temp"
        if self.phase == "optimizer":
            return "optimizer_temp"
        return self.phase + "_temp"


class MemoryTracker(TorchDispatchMode):
    """Records every new storage produced by an aten op and its release."""

    def __init__(self):
        super().__init__()
        self.allocs: list[Alloc] = []
        self.live_by_cdata: dict[int, Alloc] = {}
        self.live = 0
        self.events = 0
        self.step = 0
        self.phase = "setup"
        self.region = "body"
        self.op_index = 0
        # peak tracking
        self.peak = 0
        self.peak_event = -1
        self.peak_where: dict[str, Any] = {}
        self.phase_peaks: dict[tuple[int, str], dict[str, Any]] = {}
        self.marks: dict[tuple[int, str], int] = {}  # (step, label) -> live bytes
        self.mark_events: dict[tuple[int, str], int] = {}
        self.timeline: list[tuple[int, str, str, int]] = []  # (step, phase, op, live) after each op
        self.keep_timeline = True
        # engine input-buffer accumulation emulation (see ``emulate_inplace_accumulation``)
        self.in_node = 0
        self.emulate_inplace_accumulation = True
        self.inplace_accumulations = 0

    # -- public
    def set_phase(self, step: int, phase: str):
        self.step, self.phase, self.op_index = step, phase, 0
        self.region = "body"
        pk = self.phase_peaks.get((step, phase))
        if pk is None or self.live > pk["bytes"]:
            self.phase_peaks[(step, phase)] = dict(bytes=self.live, event=self.events, op="<phase start>", op_index=0)

    def mark(self, label: str):
        self.marks[(self.step, label)] = self.live
        self.mark_events[(self.step, label)] = self.events

    def register(self, t: torch.Tensor, kind: str, op: str = "<init>"):
        a = self._track(t, op)
        if a is not None:
            a.kind = kind
        return a

    def watch_head(self, model: torch.nn.Module) -> None:
        """Count what is made from the output head on (logits, the loss's saved tensors) as logits and loss."""
        try:
            head = model.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            head = None
        if head is not None:
            head.register_forward_pre_hook(lambda *_: setattr(self, "region", "head"))

    def name_grads(self, params, only: tuple | None = None) -> None:
        """Mark the parameters' gradients as gradients (``only``: those whose kind is one of these)."""
        for p in params:
            if p.grad is not None:
                a = self.lookup(p.grad)
                if a is not None and (only is None or a.kind in only):
                    a.kind = "grad"

    def name_states(self, opt, numel=lambda v: v.numel()) -> None:
        """Mark the optimizer's states (its one-element ``step`` counters apart); ``numel`` of a state."""
        for st in opt.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    a = self.lookup(v)
                    if a is not None and a.kind is None:
                        a.kind = "opt_step_scalar" if (k == "step" and numel(v) == 1) else "opt_state"

    def lookup(self, t: torch.Tensor) -> Alloc | None:
        return self.live_by_cdata.get(t.untyped_storage()._cdata)

    # -- internals
    def _track(self, t: torch.Tensor, op: str) -> Alloc | None:
        st = t.untyped_storage()
        key = st._cdata
        a = self.live_by_cdata.get(key)
        if a is not None:
            return a
        self.events += 1
        a = Alloc(
            rid=len(self.allocs),
            nbytes=st.nbytes(),
            step=self.step,
            phase=self.phase,
            op=op,
            shape=tuple(t.shape),
            dtype=str(t.dtype).replace("torch.", ""),
            born=self.events,
            region=self.region,
        )
        self.allocs.append(a)
        self.live_by_cdata[key] = a
        self.live += a.nbytes
        weakref.finalize(st, self._free, key, a)
        if self.live > self.peak:
            self.peak = self.live
            self.peak_event = self.events
            self.peak_where = dict(step=self.step, phase=self.phase, op=op, op_index=self.op_index)
        pk = self.phase_peaks.get((self.step, self.phase))
        if pk is None or self.live > pk["bytes"]:
            self.phase_peaks[(self.step, self.phase)] = dict(
                bytes=self.live, event=self.events, op=op, op_index=self.op_index
            )
        return a

    def _free(self, key, a: Alloc):
        self.events += 1
        a.died = self.events
        if self.live_by_cdata.get(key) is a:
            del self.live_by_cdata[key]
        if not getattr(a, "transferred", False):
            self.live -= a.nbytes

    def instrument_graph(self, root):
        """Flag when the autograd engine is inside a Node (pre-hook .. post-hook).  An ``add`` seen in
        the backward *outside* any node is the engine summing two incoming gradients in an InputBuffer."""
        seen, stack = set(), [root]
        enter = lambda *a: self._enter()
        leave = lambda *a: self._leave()
        while stack:
            n = stack.pop()
            if n is None or n in seen:
                continue
            seen.add(n)
            n.register_prehook(enter)
            n.register_hook(leave)
            stack.extend(f for f, _ in n.next_functions)

    def _enter(self):
        self.in_node += 1

    def _leave(self):
        self.in_node -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
        self.op_index += 1
        if (
            self.emulate_inplace_accumulation
            and self.phase == "backward"
            and self.in_node == 0
            and func is torch.ops.aten.add.Tensor
            and isinstance(out, torch.Tensor)
            and isinstance(args[0], torch.Tensor)
            and args[0].shape == out.shape
            and args[0].dtype == out.dtype
        ):
            # The engine's InputBuffer::accumulate does ``old_var.add_(var)`` in place for plain tensors,
            # but goes out of place whenever a tensor subclass (FakeTensor) or a dispatch mode is active.
            # Emulate the in-place path: the sum takes over the old buffer's bytes.
            old = self.live_by_cdata.get(args[0].untyped_storage()._cdata)
            if old is not None and not getattr(old, "transferred", False):
                old.transferred = True
                self.live -= old.nbytes
                self.inplace_accumulations += 1
                name = "add_(input-buffer accumulate)"
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, name)
        if self.keep_timeline:
            self.timeline.append((self.step, self.phase, name, self.live))
        return out

    # -- analysis
    def live_at(self, event: int) -> list[Alloc]:
        return [a for a in self.allocs if a.born <= event and (a.died is None or a.died > event)]

    def composition(self, event: int) -> tuple[dict[str, int], list[Alloc]]:
        eof = {s: e for (s, lab), e in self.mark_events.items() if lab == "end_forward"}
        live = self.live_at(event)
        comp: dict[str, int] = defaultdict(int)
        for a in live:
            comp[a.category(eof)] += a.nbytes
        return dict(comp), live
