"""Measure the live-memory timeline of real training steps without real memory.

The model is built on the meta device, its parameters and buffers are swapped
for fake CPU tensors (``FakeTensorMode``), and real training steps (forward
with labels, ``loss.backward()``, ``optimizer.step()``, ``zero_grad``) run on
those fake tensors.  A ``TorchDispatchMode`` stacked on top of the fake mode
sees every aten op; every output storage not seen before is an allocation
(``untyped_storage().nbytes()``, deduplicated by storage identity) and a
``weakref.finalize`` on the storage object records its release.  Phase markers
(forward / backward / optimizer / zero_grad) and identity-based kinds
(parameter, gradient, optimizer state) let us say what was live at the peak.

This models a caching allocator without rounding or fragmentation: the numbers
are the sum of live tensor storages, i.e. what ``torch.cuda.memory_allocated``
would show modulo 512-byte block rounding.  Workspaces allocated *inside* a
single kernel (cuBLAS workspace, flash-attention scratch) are not visible.

Usage::

    from tests.helpers.step_peak import measure_step, extrapolate
    rep = measure_step(cfg, method="lora", num_layers=2)
    print(rep.summary())
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections import defaultdict
from typing import Any

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MiB = 1024 * 1024

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


# --------------------------------------------------------------------------- tracking


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

    def category(self, step_end_forward: dict[int, int]) -> str:
        if self.kind is not None:
            return self.kind
        if self.phase == "forward":
            eof = step_end_forward.get(self.step)
            if eof is not None and (self.died is None or self.died > eof):
                return "activation"  # forward-born, alive at end of forward: held by the graph
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


# --------------------------------------------------------------------------- model building


def _make_config(config: dict, dtype, num_layers):
    from transformers import AutoConfig

    cfg = dict(config)
    mt = cfg.pop("model_type", "llama")
    if num_layers is not None:
        cfg["num_hidden_layers"] = num_layers
    return AutoConfig.for_model(mt, **cfg)


def _fakeify(model: nn.Module, fake_mode: FakeTensorMode, real_buffers: dict[str, torch.Tensor]):
    """Swap every parameter / buffer / stray tensor attribute for a fake CPU tensor.

    Shared (tied) Parameter objects are swapped once so they stay tied.
    """
    swapped: dict[int, nn.Parameter] = {}
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            newp = swapped.get(id(p))
            if newp is None:
                with fake_mode:
                    fake = torch.empty(p.shape, dtype=p.dtype, device="cpu")
                newp = nn.Parameter(fake, requires_grad=p.requires_grad)
                swapped[id(p)] = newp
            mod._parameters[name] = newp
    bufmap: dict[int, torch.Tensor] = {}
    for mname, mod in model.named_modules():
        for name, b in list(mod._buffers.items()):
            if b is None:
                continue
            full = f"{mname}.{name}" if mname else name
            nb = bufmap.get(id(b))
            if nb is None:
                real = real_buffers.get(full)
                if real is None:
                    real = torch.zeros(b.shape, dtype=b.dtype)
                nb = fake_mode.from_tensor(real.to(b.dtype))
                bufmap[id(b)] = nb
            mod._buffers[name] = nb
        # plain tensor attributes left on meta (e.g. rotary `original_inv_freq`)
        for k, v in list(vars(mod).items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and v.device.type == "meta":
                full = f"{mname}.{k}" if mname else k
                real = real_buffers.get(full, torch.zeros(v.shape, dtype=v.dtype))
                setattr(mod, k, fake_mode.from_tensor(real.to(v.dtype)))
    return swapped


def _real_rotary_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Real values for rotary-embedding buffers, computed by re-instantiating the module on CPU."""
    out = {}
    for mname, mod in model.named_modules():
        if "Rotary" in type(mod).__name__ and hasattr(mod, "inv_freq"):
            try:
                real = type(mod)(config=mod.config, device="cpu")
            except TypeError:
                real = type(mod)(mod.config)
            for k, v in list(real._buffers.items()) + [
                (k, v) for k, v in vars(real).items() if isinstance(v, torch.Tensor)
            ]:
                if v is not None:
                    out[f"{mname}.{k}" if mname else k] = v
    return out


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class StepStats:
    step: int
    peak: int
    peak_phase: str
    peak_op: str
    peak_op_index: int
    start_live: int
    end_forward: int
    forward_peak: int
    backward_peak: int
    backward_peak_op: str
    backward_peak_op_index: int
    backward_ops: int
    optimizer_peak: int
    optimizer_peak_op: str
    end_backward: int
    end_step: int


@dataclasses.dataclass
class StepReport:
    label: str
    num_layers: int
    n_params: int
    n_trainable: int
    param_bytes: int
    trainable_bytes: int
    largest_trainable_bytes: int
    steps: list[StepStats]
    peak: int
    peak_where: dict
    composition: dict[str, int]
    top_temporaries: list[tuple[str, int, str, tuple, str, int]]  # (category, nbytes, op, shape, dtype, count)
    notes: list[str]
    inplace_accumulations: int = 0
    tracker: MemoryTracker | None = dataclasses.field(default=None, repr=False)

    def summary(self) -> str:
        lines = [
            f"== {self.label} (layers={self.num_layers}) params={self.n_params:,} ({self.param_bytes:,} B) "
            f"trainable={self.n_trainable:,} ({self.trainable_bytes:,} B, largest {self.largest_trainable_bytes:,} B)",
            f"PEAK {self.peak:,} B = {self.peak / MiB:,.2f} MiB at {self.peak_where}",
        ]
        for s in self.steps:
            lines.append(
                f"  step {s.step}: peak {s.peak:,} ({s.peak_phase}:{s.peak_op}#{s.peak_op_index}) | start {s.start_live:,}"
                f" | end_fwd {s.end_forward:,} | fwd_peak {s.forward_peak:,} | bwd_peak {s.backward_peak:,}"
                f" ({s.backward_peak_op}#{s.backward_peak_op_index}/{s.backward_ops}) | end_bwd {s.end_backward:,}"
                f" | opt_peak {s.optimizer_peak:,} ({s.optimizer_peak_op}) | end_step {s.end_step:,}"
            )
        lines.append("  composition at peak:")
        for k, v in sorted(self.composition.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:16s} {v:>16,} B  {v / MiB:>12,.2f} MiB")
        lines.append("  biggest non-param/grad/state tensors live at peak:")
        for cat, nb, op, shape, dt, cnt in self.top_temporaries:
            lines.append(f"    {cat:15s} {op:40s} {str(shape):28s} {dt:9s} {nb:>14,} B x{cnt}")
        lines.append(f"  input-buffer gradient sums emulated in place: {self.inplace_accumulations}")
        for n in self.notes:
            lines.append("  note: " + n)
        return "\n".join(lines)


# --------------------------------------------------------------------------- main entry


def _make_optimizer(name, params, foreach, state_dtype_note):
    name = name.lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-5, foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-5, foreach=foreach)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=1e-5, momentum=0.9, foreach=foreach)
    if name in ("adamw8bit", "adamw_8bit", "bnb_adamw8bit"):
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-5)
    raise ValueError(name)


def measure_step(
    config: dict,
    *,
    dtype="bfloat16",
    attn_implementation="sdpa",
    method="full",
    lora_targets=("q_proj", "v_proj"),
    lora_rank=16,
    lora_autocast_adapter_dtype=True,
    lora_dropout=0.0,
    optimizer="adamw",
    foreach=None,
    seq_len=2048,
    batch_size=1,
    grad_ckpt=False,
    steps=2,
    num_layers=None,
    use_cache=None,
    keep_tracker=False,
    keep_outputs=False,
    cuda_like_dropout=True,
    top_n=12,
) -> StepReport:
    """Run ``steps`` real training steps on fake tensors and report the live-memory timeline.

    method: "full" (all params trainable), "lora" (peft LoRA on ``lora_targets``; peft's default
    ``autocast_adapter_dtype=True`` keeps adapter weights in fp32 — pass
    ``lora_autocast_adapter_dtype=False`` for bf16 adapters), "frozen" (no trainable params except
    that the input embeddings' output requires grad, i.e. forward+backward through a frozen model).

    keep_outputs: keep the whole model output (bf16 logits, DynamicCache) alive until after backward,
    as a loop doing ``out = model(...); out.loss.backward()`` would; default drops it right after
    forward (``loss = model(...).loss``, which is what HF Trainer effectively does).

    Fake-tensor artifact avoided here: transformers' ``find_packed_sequence_indices`` treats a fake
    ``position_ids`` as "tracing" and returns a packed-sequence mask, which materializes a
    (b,1,s,s) bool mask and makes SDPA fall back to ``repeat_kv`` instead of ``enable_gqa``.  A real
    run with unpacked ``arange`` positions returns None, so it is patched to return None.
    """
    from transformers import AutoModelForCausalLM

    tdtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    cfg = _make_config(config, tdtype, num_layers)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation, dtype=tdtype)
    notes: list[str] = []

    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=lora_dropout, target_modules=list(lora_targets))
        model = get_peft_model(model, lcfg, autocast_adapter_dtype=lora_autocast_adapter_dtype)
    elif method == "frozen":
        for p in model.parameters():
            p.requires_grad_(False)
    elif method != "full":
        raise ValueError(method)

    real_bufs = _real_rotary_buffers(model)
    # bitsandbytes' optimizers keep real CPU quantization maps (qmap) created at init
    fake_mode = FakeTensorMode(allow_non_fake_inputs="8bit" in optimizer.lower())
    _fakeify(model, fake_mode, real_bufs)
    model.train()
    if grad_ckpt:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "frozen" and not grad_ckpt:
        model.enable_input_require_grads()

    params = list(model.parameters())  # dedupes tied
    trainable = [p for p in params if p.requires_grad]
    tracker = MemoryTracker()
    for p in params:
        tracker.register(p, "param")
    for b in model.buffers():
        tracker.register(b, "buffer")

    n_params = sum(p.numel() for p in params)
    n_train = sum(p.numel() for p in trainable)
    pbytes = sum(p.numel() * p.element_size() for p in params)
    tbytes = sum(p.numel() * p.element_size() for p in trainable)
    largest = max((p.numel() * p.element_size() for p in trainable), default=0)

    opt = _make_optimizer(optimizer, trainable, foreach, notes) if trainable else None
    stats: list[StepStats] = []
    vocab = cfg.vocab_size
    with fake_mode, tracker, _no_packed_sequences(), _cuda_like_dropout(cuda_like_dropout):
        for step in range(1, steps + 1):
            tracker.set_phase(step, "forward")
            tracker.mark("start")
            input_ids = torch.randint(0, vocab, (batch_size, seq_len))
            kw = {}
            if use_cache is not None:
                kw["use_cache"] = use_cache
            out = model(input_ids=input_ids, labels=input_ids, **kw)
            loss = out.loss
            if not keep_outputs:
                del out
            tracker.mark("end_forward")
            tracker.set_phase(step, "backward")
            tracker.instrument_graph(loss.grad_fn)
            loss.backward()
            del loss, input_ids
            if keep_outputs:
                del out
            tracker.mark("end_backward")
            if opt is not None:
                for p in trainable:
                    if p.grad is not None:
                        a = tracker.lookup(p.grad)
                        if a is not None:
                            a.kind = "grad"
                tracker.set_phase(step, "optimizer")
                opt.step()
                for st in opt.state.values():
                    for k, v in st.items():
                        if isinstance(v, torch.Tensor):
                            a = tracker.lookup(v)
                            if a is not None and a.kind is None:
                                # AdamW's scalar `step` lives on the CPU on CUDA too (unless capturable/fused)
                                a.kind = "opt_step_scalar" if (k == "step" and v.numel() == 1) else "opt_state"
                tracker.mark("end_optimizer")
                tracker.set_phase(step, "zero_grad")
                opt.zero_grad(set_to_none=True)
            tracker.mark("end_step")

    # per-step stats
    for step in range(1, steps + 1):
        pk = {ph: tracker.phase_peaks.get((step, ph)) for ph in ("forward", "backward", "optimizer", "zero_grad")}
        best = max(((ph, v) for ph, v in pk.items() if v), key=lambda kv: kv[1]["bytes"])
        nb_ops = sum(1 for s, ph, _, _ in tracker.timeline if s == step and ph == "backward")
        stats.append(
            StepStats(
                step=step,
                peak=best[1]["bytes"],
                peak_phase=best[0],
                peak_op=best[1]["op"],
                peak_op_index=best[1]["op_index"],
                start_live=tracker.marks[(step, "start")],
                end_forward=tracker.marks[(step, "end_forward")],
                forward_peak=(pk["forward"] or {}).get("bytes", 0),
                backward_peak=(pk["backward"] or {}).get("bytes", 0),
                backward_peak_op=(pk["backward"] or {}).get("op", ""),
                backward_peak_op_index=(pk["backward"] or {}).get("op_index", 0),
                backward_ops=nb_ops,
                optimizer_peak=(pk["optimizer"] or {}).get("bytes", 0),
                optimizer_peak_op=(pk["optimizer"] or {}).get("op", ""),
                end_backward=tracker.marks[(step, "end_backward")],
                end_step=tracker.marks[(step, "end_step")],
            )
        )
    comp, live = tracker.composition(tracker.peak_event)
    eof = {s: e for (s, lab), e in tracker.mark_events.items() if lab == "end_forward"}
    groups: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for a in live:
        cat = a.category(eof)
        if cat in ("param", "grad", "opt_state", "opt_step_scalar", "buffer"):
            continue
        g = groups[(cat, a.op, a.shape, a.dtype, a.nbytes)]
        g[0] += a.nbytes
        g[1] += 1
    top = sorted(groups.items(), key=lambda kv: -kv[0][4])[:top_n]
    top_t = [(k[0], k[4], f"{k[1]}@s{_birth_step(live, k)}", k[2], k[3], v[1]) for k, v in top]

    label = f"{method}/{optimizer}{'' if foreach is None else ' foreach=' + str(foreach)}{' +ckpt' if grad_ckpt else ''} {dtype} {attn_implementation} b{batch_size}s{seq_len}"
    rep = StepReport(
        label=label,
        num_layers=cfg.num_hidden_layers,
        n_params=n_params,
        n_trainable=n_train,
        param_bytes=pbytes,
        trainable_bytes=tbytes,
        largest_trainable_bytes=largest,
        steps=stats,
        peak=tracker.peak,
        peak_where=tracker.peak_where,
        composition=comp,
        top_temporaries=top_t,
        notes=notes,
        inplace_accumulations=tracker.inplace_accumulations,
        tracker=tracker if keep_tracker else None,
    )
    return rep


@contextlib.contextmanager
def _no_packed_sequences():
    import transformers.masking_utils as mu

    orig = mu.find_packed_sequence_indices
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = orig


@contextlib.contextmanager
def _cuda_like_dropout(enabled: bool):
    """CPU ``F.dropout`` builds a float mask (``empty_like().bernoulli_()``, saved at input dtype);
    CUDA uses the fused ``native_dropout`` whose saved mask is bool.  Route training dropout through
    ``native_dropout`` so the saved bytes match a GPU run."""
    import torch.nn.functional as F

    orig = F.dropout
    if not enabled:
        yield
        return

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return input
        if p == 1.0 or inplace:
            return orig(input, p, training, inplace)
        return torch.native_dropout(input, p, True)[0]

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = orig


def _birth_step(live, key):
    cat, op, shape, dt, nb = key
    for a in live:
        if a.op == op and a.shape == shape and a.dtype == dt:
            return f"{a.step}{a.phase[0]}"
    return "?"


def extrapolate(r_a: StepReport, r_b: StepReport, num_layers: int) -> dict[str, int]:
    """Linear extrapolation in depth from two reports (e.g. 2 and 3 layers)."""
    la, lb = r_a.num_layers, r_b.num_layers

    def ext(x, y):
        d = (y - x) // (lb - la)
        assert (y - x) % (lb - la) == 0
        return x + (num_layers - la) * d

    out = {"peak": ext(r_a.peak, r_b.peak)}
    for i, (sa, sb) in enumerate(zip(r_a.steps, r_b.steps)):
        for f in ("peak", "end_forward", "forward_peak", "backward_peak", "optimizer_peak", "end_backward", "end_step"):
            out[f"step{sa.step}.{f}"] = ext(getattr(sa, f), getattr(sb, f))
    for k in set(r_a.composition) | set(r_b.composition):
        out[f"comp.{k}"] = ext(r_a.composition.get(k, 0), r_b.composition.get(k, 0))
    return out


LLAMA31_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    num_hidden_layers=32,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    tie_word_embeddings=False,
)

LLAMA32_1B = dict(
    model_type="llama",
    hidden_size=2048,
    intermediate_size=8192,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    num_hidden_layers=16,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    tie_word_embeddings=True,
)

TINY_LLAMA = dict(
    model_type="llama",
    hidden_size=256,
    intermediate_size=688,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocab_size=1000,
    num_hidden_layers=4,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
