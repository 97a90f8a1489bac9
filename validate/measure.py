"""Run real training steps and measure their peak memory, three ways.

- ``cuda``: on an NVIDIA GPU. PyTorch's own memory-tracker protocol: one warm-up step (the
  optimizer's state appears there), ``gc.collect()``, ``empty_cache()``,
  ``reset_peak_memory_stats()``, then the measured steps; ``max_memory_allocated``,
  ``max_memory_reserved`` and NVML's used memory for the device, sampled every few milliseconds
  by a thread (pynvml), with the memory used before this process touched CUDA subtracted and the
  CUDA context (used right after initialisation) reported on its own. The live-storage tracker
  runs as well and gives the categories.
- ``cpu``: a real run on the CPU with exact accounting of live tensor bytes by category
  (``validate.tracker``). fp32 is fast here; bf16 is very slow on a CPU without native bf16.
- ``fake``: full-size models under ``FakeTensorMode``, no memory used; a full-depth 8B step takes
  minutes, so two depths (2 and 3 layers; layer 0 differs from the others) are measured and every
  phase's categories extrapolated linearly to the real depth, which the record says.

Fake tensors run CPU kernels, so ``cpu`` and ``fake`` are compared with the planner's CPU-kernel
estimate (``device="cpu"``) and ``cuda`` with its CUDA estimate.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from fitplan.architecture import ModelShape
from fitplan.breakdown import CATEGORIES, MemoryBreakdown
from fitplan.errors import PlanError
from fitplan.optimizers import optimizer
from fitplan.setup import TrainingSetup
from fitplan.validate.build import (
    build_fake,
    build_real,
    real_mask_decisions,
    torch_dtype,
)
from fitplan.validate.tracker import MemoryTracker, category_of

FAKE_DEPTHS = (2, 3)


@dataclass
class Measurement:
    mode: str
    peak_bytes: int                       # live tensor bytes at the peak (tracker)
    peak_phase: str
    breakdown: MemoryBreakdown            # the planner's categories at the peak
    steps: int
    duration_s: float
    allocated_peak_bytes: int | None = None   # cuda: torch.cuda.max_memory_allocated
    reserved_peak_bytes: int | None = None    # cuda: torch.cuda.max_memory_reserved
    nvml_peak_used_bytes: int | None = None   # cuda: NVML used, minus what others used before
    cuda_context_bytes: int | None = None     # cuda: NVML used right after CUDA initialisation
    extrapolated_from_layers: list[int] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["breakdown"] = self.breakdown.parts()
        out["categories"] = self.breakdown.shared()
        return out


class MeasurementError(RuntimeError):
    """A run that could not be measured for a reason other than running out of memory."""


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def make_optimizer(setup: TrainingSetup, params: list[torch.nn.Parameter]):
    """The setup's optimizer, from the table the planner uses (``fitplan.optimizers``)."""
    return optimizer(setup.optimizer).make(params, foreach=setup.uses_foreach)


def _register_model(tracker: MemoryTracker, model: torch.nn.Module) -> None:
    for p in model.parameters():
        tracker.register(p, "param")
        state = getattr(p, "quant_state", None)
        if state is not None:
            pieces = [state.absmax, state.code]
            if getattr(state, "nested", False):
                pieces += [state.offset, state.state2.absmax, state.state2.code]
            for t in pieces:
                if isinstance(t, torch.Tensor):
                    tracker.register(t, "quant_state")
    for b in model.buffers():
        tracker.register(b, "buffer")


def _autocast(setup: TrainingSetup, device: str):
    if setup.mixed:
        return torch.autocast(device_type=device, dtype=torch_dtype(setup.compute_dtype))
    import contextlib

    return contextlib.nullcontext()


class _InBackward:
    """torchtune's optimizer in backward (``torchtune/training/memory.py`` 197-243): one optimizer per
    parameter, stepped in its post-accumulate-grad hook, its gradient freed there."""

    def __init__(self, setup: TrainingSetup, params: list[torch.nn.Parameter]):
        self.optimizers = {p: make_optimizer(setup, [p]) for p in params}
        for p in params:
            p.register_post_accumulate_grad_hook(self._step)

    def _step(self, p: torch.nn.Parameter) -> None:
        opt = self.optimizers[p]
        opt.step()
        opt.zero_grad(set_to_none=True)

    @property
    def state(self) -> dict:
        return {k: v for o in self.optimizers.values() for k, v in o.state.items()}

    def step(self) -> None:      # every step happened in backward
        pass

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass


def _train(model, setup: TrainingSetup, vocab: int, steps: int, tracker: MemoryTracker | None, device: str,
           first_step: int = 1) -> None:
    """Run ``steps`` optimizer steps, marking phases for the tracker."""
    from fitplan.validate.losses import prepare, release, training_loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    prepare(model, setup)
    opt = getattr(model, "_fitplan_optimizer", None)
    if opt is None:
        opt = _InBackward(setup, trainable) if setup.optimizer_in_backward else make_optimizer(setup, trainable)
        model._fitplan_optimizer = opt
    for step in range(first_step, first_step + steps):
        if tracker:
            tracker.set_phase(step, "forward")
            tracker.mark("start")
        ids = torch.randint(0, vocab, (setup.batch_size, setup.seq_len), device=device)
        with _autocast(setup, device):
            loss = training_loss(model, ids, setup)
        if tracker:
            tracker.mark("end_forward")
            tracker.set_phase(step, "backward")
            tracker.instrument_graph(loss.grad_fn)
        loss.backward()
        release(model)
        del loss, ids
        if tracker:
            tracker.mark("end_backward")
            tracker.name_grads(trainable)
            tracker.set_phase(step, "optimizer")
        opt.step()
        if tracker:
            tracker.name_states(opt)
            tracker.set_phase(step, "zero_grad")
        opt.zero_grad(set_to_none=True)
        if tracker:
            tracker.mark("end_step")


def _breakdown(composition: dict[str, int]) -> dict[str, int]:
    out = dict.fromkeys(CATEGORIES, 0)
    for kind, nbytes in composition.items():
        out[category_of(kind)] += nbytes
    return out


def _phase_peaks(tracker: MemoryTracker, step: int) -> dict[str, tuple[int, dict[str, int]]]:
    """Each phase of ``step``: (live bytes at its peak, categories there)."""
    out = {}
    for phase in ("forward", "backward", "optimizer"):
        pk = tracker.phase_peaks.get((step, phase))
        if pk is None:
            continue
        comp, _ = tracker.composition(pk["event"])
        # categories are judged with the kinds known at the end (gradients are named after backward)
        out[phase] = (pk["bytes"], _breakdown(comp))
    return out


def _best(phases: dict[str, tuple[int, dict[str, int]]]) -> tuple[str, int, MemoryBreakdown]:
    phase = max(phases, key=lambda p: phases[p][0])
    return phase, phases[phase][0], MemoryBreakdown(**phases[phase][1])


def measure_cpu(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, steps: int = 2) -> Measurement:
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_real(raw, shape, setup, "cpu")
    tracker = MemoryTracker()
    tracker.keep_timeline = False
    _register_model(tracker, model)
    tracker.watch_head(model)
    vocab = shape.vocab_size
    with tracker:
        _train(model, setup, vocab, steps, tracker, "cpu")
    phases = _phase_peaks(tracker, steps)
    phase, peak, cats = _best(phases)
    return Measurement("cpu", peak, phase, cats, steps, time.perf_counter() - start)


def _fake_once(raw, shape, setup, layers: int, steps: int) -> dict[str, tuple[int, dict[str, int]]]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs="8bit" in setup.optimizer or setup.optimizer in ("paged-adamw", "lion"))
    model = build_fake(raw, shape, setup, fake_mode, layers)
    tracker = MemoryTracker()
    tracker.keep_timeline = False
    _register_model(tracker, model)
    tracker.watch_head(model)
    with fake_mode, tracker, real_mask_decisions():
        _train(model, setup, shape.vocab_size, steps, tracker, "cpu")
    return _phase_peaks(tracker, steps)


def measure_fake(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, steps: int = 2) -> Measurement:
    """Two shallow depths measured on fake tensors, every phase extrapolated to the real depth."""
    start = time.perf_counter()
    d1, d2 = FAKE_DEPTHS
    L = shape.num_layers
    notes = []
    if L <= d2:
        phases = _fake_once(raw, shape, setup, L, steps)
        extrapolated = None
    else:
        a = _fake_once(raw, shape, setup, d1, steps)
        b = _fake_once(raw, shape, setup, d2, steps)
        phases = {}
        for phase in a.keys() & b.keys():
            (pa, ca), (pb, cb) = a[phase], b[phase]
            grow = lambda x, y: x + (L - d1) * (y - x) // (d2 - d1)  # noqa: E731
            phases[phase] = (grow(pa, pb), {k: grow(ca[k], cb[k]) for k in ca})
        extrapolated = [d1, d2]
        notes.append(f"measured at {d1} and {d2} layers, extrapolated linearly to {L}")
    phase, peak, cats = _best(phases)
    return Measurement("fake", peak, phase, cats, steps, time.perf_counter() - start,
                       extrapolated_from_layers=extrapolated, notes=notes)


class _NvmlSampler:
    """Polls NVML's used memory of one device on a thread; the maximum is kept."""

    def __init__(self, index: int = 0, interval_s: float = 0.002):
        import pynvml

        pynvml.nvmlInit()
        self.pynvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.interval = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def used(self) -> int:
        return int(self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.used()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.used())


def cuda_available() -> bool:
    return torch.cuda.is_available()


def measure_cuda(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, steps: int = 2) -> Measurement:
    if not cuda_available():
        raise PlanError("--mode cuda needs an NVIDIA GPU with CUDA, and torch sees none here; use --mode cpu or fake")
    start = time.perf_counter()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device() if torch.cuda.is_initialized() else 0)
        before = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception as exc:  # NVMLError_LibraryNotFound and friends
        raise MeasurementError(f"NVML is not usable here ({type(exc).__name__}); cuda mode needs it") from None
    torch.cuda.init()
    torch.empty(1, device="cuda")
    context = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used) - before
    torch.manual_seed(0)
    model = build_real(raw, shape, setup, "cuda")
    _train(model, setup, shape.vocab_size, 1, None, "cuda")  # warm-up: the optimizer's state appears here
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    tracker = MemoryTracker()
    tracker.keep_timeline = False
    _register_model(tracker, model)
    tracker.watch_head(model)
    for st in model._fitplan_optimizer.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.is_cuda:
                tracker.register(v, "opt_state")
    with _NvmlSampler() as sampler, tracker:
        _train(model, setup, shape.vocab_size, steps, tracker, "cuda", first_step=2)
        torch.cuda.synchronize()
    phases = _phase_peaks(tracker, 1 + steps)
    phase, peak, cats = _best(phases)
    return Measurement(
        "cuda", peak, phase, cats, steps, time.perf_counter() - start,
        allocated_peak_bytes=int(torch.cuda.max_memory_allocated()),
        reserved_peak_bytes=int(torch.cuda.max_memory_reserved()),
        nvml_peak_used_bytes=sampler.peak - before,
        cuda_context_bytes=context,
    )


def choose_mode(shape: ModelShape, setup: TrainingSetup) -> str:
    """A GPU if there is one; else a real CPU run where the step is small; else fake tensors."""
    if cuda_available():
        return "cuda"
    tokens = setup.batch_size * setup.seq_len
    if shape.parameter_count <= 50_000_000 and tokens <= 4096 and setup.compute_dtype == "fp32":
        return "cpu"
    if setup.method.quantized_base:
        return "cpu"
    return "fake"


def measure(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, mode: str, steps: int = 2) -> Measurement:
    if steps < 2:
        raise PlanError("--steps must be at least 2: the optimizer's state appears at the first")
    if mode == "cuda":
        return measure_cuda(raw, shape, setup, steps)
    if mode == "cpu":
        return measure_cpu(raw, shape, setup, steps)
    if mode == "fake":
        return measure_fake(raw, shape, setup, steps)
    raise PlanError(f"unknown mode {mode!r}. Valid: cuda, cpu, fake")
