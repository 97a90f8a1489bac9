"""plan(): every decision between a request and its answer, in one place.

Resolves the model and the GPU, fills the defaults (and records which were assumed), refuses every
combination of options that would otherwise be ignored or silently changed, adjusts what the
hardware or the architecture forces (with a note saying so), picks the calibration, estimates each
method with its fit on the GPU, and adds what was asked for: the recommendation, placements across
GPU counts, suggestions across the catalog, time and cost, the largest batch or sequence.
The command line and the library call this; views render the ``Plan`` it returns.
"""

from __future__ import annotations

from fitplan.calibration import Calibration, load_file, overhead_for
from fitplan.catalog import GPU, ModelEntry, resolve_gpu, resolve_model
from fitplan.errors import PlanError, unknown_choice
from fitplan.estimate import Estimate, estimate
from fitplan.frozen import replace
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead
from fitplan.methods import METHOD_OPTIONS, NAMES, REGISTRY, SEEDS, Method
from fitplan.methods.lora import target_matrices
from fitplan.optimizers import NAMES as OPTIMIZERS
from fitplan.request import Request
from fitplan.result import MethodResult, Plan, Training
from fitplan.setup import (
    ATTENTIONS,
    DEVICES,
    PRECISIONS,
    QUANTS,
    TrainingSetup,
    method_fields,
)
from fitplan.sharding import NO_SYNC, OFFLOADS, STRATEGIES, Placement, Spread, per_gpu

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    # imported where model parallelism is asked for (the cold start)
    from fitplan.parallel import Layout

FLASH_MIN_CAPABILITY = (8, 0)   # FlashAttention 2: Ampere or newer


def plan(request: Request | None = None, /, **options: Any) -> Plan:
    """Plan the memory of fine-tuning a model: ``plan(model="llama-70b", gpu="a100-80")``.

    Takes a ``Request`` or its fields as keyword arguments (the command line's options under their
    field names). Returns the ``Plan``. Raises ``PlanError`` (one line naming the problem and the
    valid choices) for bad input, conflicting options included.
    """
    if request is None:
        request = Request.of(**options)
    elif options:
        raise PlanError("give a Request or keyword options, not both")
    return _Planner(request).plan()


def _choice(what: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise unknown_choice(what, value, choices)
    return text


def _targets(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip())
    if not parts:
        raise PlanError("--lora-targets must name at least one module, e.g. q,v or all-linear")
    return parts


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _modules(text: Any) -> tuple[str, ...]:
    """``--modules-to-save`` as a tuple of module names (a comma list)."""
    if isinstance(text, (tuple, list)):
        return tuple(text)
    return tuple(p.strip() for p in str(text or "").replace(" ", ",").split(",") if p.strip())


class _Planner:
    """One request's decisions, taken in order; ``plan()`` returns what they add up to."""

    def __init__(self, request: Request):
        self.r = request
        self.notes: list[str] = []
        self.layout: Layout | None = None
        self.stack = None                  # fitplan.stacks.Stack: the training stack's defaults
        self.no_bf16 = False               # the GPU has no bf16 (a stack's per-method bf16 becomes fp16)
        self.stack_applied: dict[str, Any] = {}

    # ---- inputs ----------------------------------------------------------------------------
    def _model(self) -> ModelEntry:
        if self.r.model is None:
            raise PlanError("missing --model: give a preset (see `plan models`) or a config.json path, "
                            "e.g. plan --model llama-70b --gpu a100-80")
        model = resolve_model(self.r.model)
        if model.resolved_from:
            self.notes.append(f"{model.resolved_from} has {model.name}'s architecture and sizes: planned as the "
                              f"{model.name} preset ({model.hf_id})")
        return model

    def _methods(self) -> list[Method]:
        """The seeds' short table by default, every method with ``--method all``, else the one named."""
        if self.r.method is None:
            return [REGISTRY[n] for n in SEEDS]
        if str(self.r.method).strip().lower() == "all":
            return list(REGISTRY.values())
        return [REGISTRY[_choice("method", self.r.method, NAMES + ("all",))]]

    def _conflicts(self, methods: list[Method]) -> None:
        """Refuse every option the request gives that nothing would honour."""
        r = self.r
        for option in METHOD_OPTIONS:
            if r.given(option) and not any(option in m.options for m in methods):
                users = [m.name for m in REGISTRY.values() if option in m.options]
                raise PlanError(f"{_flag(option)} applies to {', '.join(users)}; "
                                f"--method {methods[0].name} does not use it")
        suggest = bool(r.value("suggest"))
        if r.given("mfu") and r.tokens is None:
            raise PlanError("--mfu sets the utilisation for --tokens; give --tokens N or drop --mfu")
        if r.tokens is not None and r.gpu is None and not suggest:
            raise PlanError("--tokens needs --gpu (or --suggest) to turn FLOPs into hours")
        if suggest and r.value("device") != "cuda":
            raise PlanError("--suggest ranks the GPU catalog; drop --device cpu")
        if suggest and (r.value("max_batch") or r.value("max_seq_len")):
            raise PlanError("--max-batch and --max-seq-len search one GPU; drop --suggest or give --gpu alone")
        if r.given("calibration") and r.value("device") != "cuda":
            raise PlanError("--calibration applies to CUDA figures; --device cpu has no allocator to calibrate")
        if r.given("gpus_per_node") and r.value("gpus") == 1 and r.gpu is None and not suggest:
            raise PlanError("--gpus-per-node lays GPUs out in nodes; give --gpus N, --gpu or --suggest")

    def _goal(self):
        from fitplan.recommend import TASKS, Goal

        task = _choice("task", self.r.task, TASKS) if self.r.task is not None else None
        return Goal(task, self.r.examples, self.r.dataset_tokens, self.r.adapters)

    def _attention(self, model: ModelEntry, gpu: GPU | None) -> str:
        r, shape = self.r, model.shape
        attention = _choice("attention implementation", r.value("attention"), ATTENTIONS)
        if attention not in shape.attention_kernels:
            if not r.given("attention"):
                attention = shape.attention_kernels[0]
                self.notes.append(f"{shape.model_type} runs {attention} attention in transformers 5 (no SDPA path)")
            else:
                raise PlanError(f"{shape.model_type} has no {attention} attention path in transformers 5; "
                                f"use --attention {' or '.join(shape.attention_kernels)}")
        if attention == "flash" and gpu is not None and gpu.vendor == "nvidia" and gpu.compute_capability:
            cc = tuple(int(x) for x in gpu.compute_capability.split("."))
            if cc < FLASH_MIN_CAPABILITY:
                raise PlanError(f"FlashAttention 2 needs an Ampere or newer GPU (compute capability 8.0); {gpu.name} "
                                f"is {gpu.architecture} ({gpu.compute_capability}): use --attention sdpa or eager")
        return attention

    def _sequence(self, model: ModelEntry) -> int:
        seq, shape = self.r.value("seq_len"), model.shape
        if not self.r.given("seq_len") and shape.max_positions and seq > shape.max_positions:
            self.notes.append(f"sequence length {shape.max_positions:,}: the default 2,048 is beyond "
                              f"{model.name}'s {shape.max_positions:,} positions")
            return shape.max_positions
        if isinstance(seq, int) and not isinstance(seq, bool) and shape.max_positions and seq > shape.max_positions:
            if shape.position_embeddings:
                raise PlanError(f"{model.name} has {shape.position_embeddings:,} learned positions; --seq-len {seq:,} "
                                "is longer than it can encode")
            self.notes.append(f"sequence {seq:,} is beyond {model.name}'s {shape.max_positions:,} positions "
                              "(max_position_embeddings with its rope_scaling): planned anyway; extend rope_scaling "
                              "to train at this length")
        return seq

    # ---- the training stack (fitplan.stacks) -------------------------------------------------
    def _v(self, name: str) -> Any:
        """An option's value: the user's, else the stack's default, else the planner's."""
        r = self.r
        if r.given(name):
            return getattr(r, name)
        d = self.stack.default(name) if self.stack is not None else None
        return d.value if d is not None else r.value(name)

    def _stack_methods(self, m: Method, base: TrainingSetup) -> dict[str, Any]:
        """What one method's setup takes beyond the common base: the stack's per-method values, the
        LoRA-only options reset for methods that do not read them, and the stack's checkpointing and
        offload dropped where the method refuses checkpointing."""
        out: dict[str, Any] = {}
        for name, default in (("adapter_dtype", "fp32"), ("lora_alpha", None), ("modules_to_save", ())):
            if name not in m.options and getattr(base, name) != default:
                out[name] = default
        for d in self.stack.defaults if self.stack is not None else ():
            if d.methods and not self.r.given(d.option) and (d.option not in METHOD_OPTIONS or d.option in m.options):
                value = d.for_method(m.name)
                if d.option == "precision" and self.no_bf16 and str(value).startswith("bf16"):
                    value = "fp16-mixed" if value == "bf16-mixed" else "fp16"   # as for the common precision
                out[d.option] = _modules(value) if d.option == "modules_to_save" else value
        if m.checkpointing_refused and self.r.grad_ckpt is None and base.grad_ckpt:
            out["grad_ckpt"] = None
            if not self.r.given("activation_offload"):
                out["activation_offload"] = False
        return out

    def _stack_notes(self, methods: list[Method]) -> None:
        """One note naming the stack and what it set (each option with its value and source)."""
        st = self.stack
        if st is None or not self.r.given("stack"):
            return
        parts = []
        for d in st.defaults:
            if self.r.given(d.option):
                continue
            if d.option in METHOD_OPTIONS and not any(d.option in m.options for m in methods):
                continue
            value = d.value
            if d.methods:
                value = f"{d.value} ({', '.join(f'{k}: {v}' for k, v in d.methods)})"
            self.stack_applied[d.option] = d.value if not d.methods else {"value": d.value, **dict(d.methods)}
            shown = ("on" if value else "off") if isinstance(value, bool) else value
            parts.append(f"{_flag(d.option)} {shown} [{d.source}]")
        given = [_flag(d.option) for d in st.defaults if self.r.given(d.option)]
        text = f"stack {st.name} ({st.describe()}) set: " + ("; ".join(parts) if parts else "nothing")
        if given:
            text += f"; kept as given: {', '.join(given)}"
        self.notes.append(text)

    def _base_setup(self, model: ModelEntry, gpu: GPU | None, methods: list[Method]) -> TrainingSetup:
        from fitplan import stacks

        r = self.r
        self.stack = stacks.load(r.value("stack"))
        precision = _choice("precision", self._v("precision"), PRECISIONS)
        optimizer = _choice("optimizer", self._v("optimizer"), OPTIMIZERS)
        device = _choice("device", r.value("device"), DEVICES)
        quant = _choice("quantization", self._v("quant"), QUANTS)
        if gpu is not None and device != "cuda":
            raise PlanError(f"--gpu {gpu.name} plans for a CUDA device; drop --device {device} or --gpu")
        self.no_bf16 = gpu is not None and not gpu.supports_bf16
        if gpu is not None and not gpu.supports_bf16 and precision.startswith("bf16"):
            if not r.given("precision"):
                precision = "fp16-mixed" if precision == "bf16-mixed" else "fp16"
                self.notes.append(f"{gpu.name} has no bf16: planned in {precision}")
            else:
                raise PlanError(f"{gpu.name} does not support bf16; use --precision fp16, fp16-mixed or fp32")
        attention = self._attention(model, gpu)
        shape = model.shape
        if shape.num_experts and any(m.quantized_base for m in methods):
            self.notes.append("qlora on MoE: transformers 5 keeps the fused 3-D expert weights unquantized "
                              "(prepare_model_for_kbit_training upcasts them to fp32)")
        transformers_major = r.value("transformers")
        if transformers_major not in (4, 5):
            raise PlanError(f"--transformers must be 4 or 5, got {transformers_major}")
        # checkpointing refused by a method is said on that method's row, not for every method
        grad_ckpt = self._v("grad_ckpt")
        first = methods[0]
        if grad_ckpt and first.checkpointing_refused and len(methods) > 1:
            first = next((m for m in methods if m.checkpointing_refused is None), first)
        if grad_ckpt and first.checkpointing_refused and not r.given("grad_ckpt"):
            grad_ckpt = None     # a stack's checkpointing is not asked of a method that refuses it
        if r.given("activation_offload") and r.activation_offload and not r.given("grad_ckpt") and not grad_ckpt \
                and not first.checkpointing_default and first.checkpointing_refused is None:
            # what is offloaded is the checkpointed layer inputs: asking for it, unasked-for checkpointing comes too
            grad_ckpt = True
            self.notes.append("gradient checkpointing on: --activation-offload moves the checkpointed layer inputs "
                              "to host memory (give --no-grad-ckpt to refuse both)")
        setup = TrainingSetup(
            method=first, seq_len=self._sequence(model), batch_size=r.value("batch_size"), precision=precision,
            optimizer=optimizer, grad_ckpt=grad_ckpt, attention=attention, device=device,
            lora_rank=self._v("lora_rank"), lora_targets=_targets(self._v("lora_targets")),
            lora_dropout=float(self._v("lora_dropout")), adapter_size=r.value("adapter_size"),
            num_virtual_tokens=r.value("num_virtual_tokens"), prefix_projection=bool(r.value("prefix_projection")),
            quant=quant, double_quant=bool(self._v("double_quant")), gpus=r.value("gpus"),
            kbit_upcast=bool(self._v("kbit_upcast")), transformers_major=transformers_major, assumed=self._assumed(),
            **method_fields(self._checkpoint_value(model, methods)), **self._stack_fields(grad_ckpt, first),
        )
        if any("lora_targets" in m.options for m in methods):
            target_matrices(shape, setup.lora_targets)  # a bad target is bad input
        if shape.note:
            self.notes.append(shape.note)
        for m in methods:
            for note in m.notes(shape, setup):
                if note not in self.notes:
                    self.notes.append(note)
        return setup

    def _assumed(self) -> tuple[str, ...]:
        """The influential defaults neither the user nor the stack chose."""
        st = self.stack
        return tuple(k for k in self.r.assumed if st is None or not st.sets(k))

    def _stack_fields(self, grad_ckpt: bool | None, first: Method) -> dict[str, Any]:
        """The setup's stack options (loss, compile, optimizer in backward, offload, adapters, packing)."""
        offload = bool(self._v("activation_offload"))
        if offload and not self.r.given("activation_offload") and (grad_ckpt is False or (
                grad_ckpt is None and not first.checkpointing_default)):
            offload = False     # the stack offloads checkpointed inputs; without checkpointing there are none
        alpha = self._v("lora_alpha")
        return {
            "loss": str(self._v("loss")), "compile": bool(self._v("compile")),
            "optimizer_in_backward": bool(self._v("optimizer_in_backward")), "activation_offload": offload,
            "adapter_dtype": str(self._v("adapter_dtype")).strip().lower(),
            "lora_alpha": alpha, "modules_to_save": _modules(self._v("modules_to_save")),
            "packing": str(self._v("packing")).strip().lower(),
            "grad_accum": self._v("grad_accum"),
        }

    def _placement(self) -> Placement | None:
        r = self.r
        sharding = _choice("sharding", r.value("sharding"), ("auto",) + STRATEGIES)
        offload = _choice("offload", r.value("offload"), OFFLOADS)
        gpus, per_node = r.value("gpus"), r.value("gpus_per_node")
        if per_node < 1:
            raise PlanError(f"gpus-per-node must be positive, got {per_node}")
        if sharding == "ddp" and offload != "none":
            raise PlanError("DDP keeps everything on the GPU; offloading needs --sharding zero1, zero2, zero3 or fsdp")
        placement = None
        if gpus > 1 or sharding not in ("auto", "none") or offload != "none":
            if sharding == "auto":
                sharding = "fsdp" if gpus > 1 else "none"
            placement = Placement(sharding, gpus, per_node, offload)
        accum = self._v("grad_accum")
        if accum != 1 and (placement is None or placement.strategy not in NO_SYNC):
            self.notes.append(f"--grad-accum {accum}: the peak is one micro batch's; accumulation changes it only "
                              "under FSDP (unsharded gradients), not here")
        return placement

    def _checkpoint_value(self, model: ModelEntry, methods: list[Method]):
        """``Request.value``, with a pre-quantized checkpoint's storage as the default ``base`` of the
        LoRA-family methods (said in the notes)."""
        r, stored = self.r, model.shape.checkpoint_base
        if not stored or r.given("base"):
            return r.value
        users = [m.name for m in methods if "base" in m.options]
        others = [m.name for m in methods if "base" not in m.options and not m.quantized_base]
        if users:
            self.notes.append(f"the checkpoint stores its linear weights as {stored} (quantization_config): "
                              f"{', '.join(users)} planned on that base (--base none plans them unquantized)")
        if others:
            self.notes.append(f"{', '.join(others)} cannot train {stored} weights as stored: planned on them "
                              "dequantized to the training dtype")

        def value(name: str):
            return stored if name == "base" and users else r.value(name)

        return value

    def _layout(self, placement: Placement | None) -> Layout | None:
        """The model-parallel layout the request asks for (any of --tensor/--pipeline/--context/--expert-parallel
        above 1), with the data-parallel degree what is left of --gpus."""
        r = self.r
        degrees = {k: r.value(k) for k in ("tensor_parallel", "pipeline_parallel", "context_parallel", "expert_parallel")}
        for k, v in degrees.items():
            if v < 1:
                raise PlanError(f"{_flag(k)} must be a positive number, got {v}")
        pp = degrees["pipeline_parallel"]
        if r.given("parallel_engine") and all(v == 1 for v in degrees.values()):
            raise PlanError("--parallel-engine applies to model parallelism; give --tensor-parallel, "
                            "--pipeline-parallel, --context-parallel or --expert-parallel")
        for k in ("pipeline_schedule", "virtual_stages", "microbatches"):
            if r.given(k) and pp == 1:
                raise PlanError(f"{_flag(k)} shapes a pipeline; give --pipeline-parallel P (P > 1) or drop it")
        if r.given("sequence_parallel") and degrees["tensor_parallel"] == 1:
            raise PlanError("--sequence-parallel splits what tensor parallelism leaves whole; give --tensor-parallel T")
        if all(v == 1 for v in degrees.values()):
            return None
        from fitplan.parallel import ENGINES, SCHEDULES, Layout
        gpus = r.value("gpus")
        model_ranks = degrees["tensor_parallel"] * pp * degrees["context_parallel"]
        if gpus % model_ranks:
            raise PlanError(f"--gpus {gpus} is not a multiple of tensor x pipeline x context parallel "
                            f"({model_ranks}): the data-parallel degree is what is left")
        if placement is not None and placement.offload != "none":
            raise PlanError("--offload is not modelled with tensor, pipeline, context or expert parallelism")
        strategy = placement.strategy if placement is not None and r.given("sharding") else "zero1"
        if strategy in ("none", "hybrid"):
            raise PlanError(f"--sharding {strategy} with model parallelism: choose ddp, zero1 (Megatron's distributed "
                            "optimizer), zero2, zero3 or fsdp")
        schedule = _choice("pipeline schedule", r.value("pipeline_schedule"), SCHEDULES)

        return Layout(tp=degrees["tensor_parallel"], pp=pp, cp=degrees["context_parallel"],
                      ep=degrees["expert_parallel"], dp=gpus // model_ranks, strategy=strategy, schedule=schedule,
                      virtual_stages=r.value("virtual_stages"), microbatches=r.value("microbatches") or 0,
                      sequence_parallel=bool(r.value("sequence_parallel")), gpus_per_node=r.value("gpus_per_node"),
                      engine=_choice("parallel engine", r.value("parallel_engine"), ENGINES))

    def _calibration(self, gpu: GPU | None) -> tuple[Overhead, Calibration | None]:
        from fitplan.calibration import problems

        self.notes.extend(problems())
        path = self.r.calibration
        if path and str(path).lower() == "none":
            return DEFAULT_OVERHEAD, None
        if path:
            cal = load_file(path)
            return cal.overhead, cal
        return overhead_for(gpu)

    # ---- per method ------------------------------------------------------------------------
    def _result(self, model: ModelEntry, base: TrainingSetup, m: Method, gpu: GPU | None, overhead: Overhead,
                placement: Placement | None) -> MethodResult:
        try:
            setup = base.with_(method=m, **self._stack_methods(m, base))
            est = estimate(model, setup, overhead)
        except PlanError as exc:
            return MethodResult(m, None, error=str(exc))
        layout = self.layout
        parallel = None
        if layout is not None:
            try:
                from fitplan.parallel import per_rank

                parallel = per_rank(est, layout)
            except PlanError as exc:
                return MethodResult(m, None, error=str(exc))
        spread = per_gpu(est, placement) if parallel is None and placement is not None \
            and (placement.gpus > 1 or placement.offload != "none") else None
        if gpu is None:
            return MethodResult(m, est, spread=spread, parallel=parallel)
        peak = parallel.peak_bytes if parallel is not None else spread.peak_bytes if spread is not None else est.peak_bytes
        budget = gpu.usable_memory_bytes
        per_node = self.r.value("gpus_per_node")
        found = Spread(est, "fsdp", "none", per_node).fewest(budget, lo=1) if est.peak_bytes > budget else None
        needed = 1 if est.peak_bytes <= budget else (found.placement.gpus if found else None)
        without, with_ckpt = needed, False
        if needed != 1 and self.r.grad_ckpt is None and not setup.checkpointing and m.checkpointing_refused is None:
            ckpt = estimate(model, setup.with_(grad_ckpt=True), overhead)
            if ckpt.peak_bytes <= budget:
                n = 1
            else:
                f = Spread(ckpt, "fsdp", "none", per_node).fewest(budget, lo=1)
                n = f.placement.gpus if f else None
            if n is not None and (needed is None or n < needed):
                needed, with_ckpt = n, True
        return MethodResult(m, est, spread=spread, parallel=parallel, fits=peak <= budget, gpus_needed=needed,
                            sharding="none" if needed == 1 else "fsdp", gpus_needed_checkpointing=with_ckpt,
                            gpus_needed_without_checkpointing=without)

    # ---- the whole answer ------------------------------------------------------------------
    def plan(self) -> Plan:
        r = self.r
        model = self._model()
        gpu = resolve_gpu(r.gpu) if r.gpu else None
        methods = self._methods()
        self._conflicts(methods)
        goal = self._goal()
        base = self._base_setup(model, gpu, methods)
        self._stack_notes(methods)
        placement = self._placement()
        self.layout = self._layout(placement)
        tokens, mfu = r.tokens, float(r.value("mfu"))
        if tokens is not None and tokens <= 0:
            raise PlanError(f"tokens must be positive, got {tokens}")
        if not 0 < mfu <= 1:
            raise PlanError(f"mfu must lie in (0, 1], got {mfu}")
        single = r.method is not None and str(r.method).strip().lower() != "all"
        if (r.value("max_batch") or r.value("max_seq_len")) and (gpu is None or not single):
            raise PlanError("--max-batch and --max-seq-len need --gpu and --method")
        overhead, cal = self._calibration(gpu)
        results = {m.name: self._result(model, base, m, gpu, overhead, placement) for m in methods}
        if all(x.estimate is None for x in results.values()):
            raise PlanError(next(iter(results.values())).error)
        rec = None
        kwargs: dict[str, Any] = {}
        if gpu is not None and not single and not r.value("suggest"):
            from fitplan.recommend import recommend

            given = {k for k in ("grad_ckpt", "optimizer", "lora_rank", "lora_targets") if r.given(k)}
            rec = recommend(model, base, gpu, overhead, goal, given)
            results = {k: replace(v, recommended=k == rec.method) for k, v in results.items()}
            if tokens and rec.estimate is not None:
                kwargs["training"] = self._training(model, rec.estimate.setup, gpu, rec.gpus or 1, tokens, mfu)
        if r.value("suggest"):
            kwargs["suggestions"] = self._suggestions(model, base, methods, gpu, placement, tokens, mfu)
        first = next(x for x in results.values() if x.estimate is not None)
        if single and gpu is not None and not r.value("suggest"):
            kwargs.update(self._placements(model, first, gpu, placement, overhead, tokens, mfu))
        if r.value("max_batch") or r.value("max_seq_len"):
            from fitplan.suggest import largest

            found = {}
            for flag, name in (("max_batch", "batch_size"), ("max_seq_len", "seq_len")):
                if r.value(flag):
                    found[name] = largest(model, first.estimate.setup, gpu.usable_memory_bytes, name, overhead,
                                          placement)
            kwargs["largest"] = found
        return Plan(request=r, model=model, gpu=gpu, setup=first.estimate.setup, assumed=self._assumed(),
                    notes=tuple(self.notes), calibration=cal, methods=results, single=single, recommendation=rec,
                    gpus_per_node=r.value("gpus_per_node"), goal=goal, placement=placement, layout=self.layout,
                    stack=self.stack, stack_applied=dict(self.stack_applied), **kwargs)

    def _training(self, model: ModelEntry, setup: TrainingSetup, gpu: GPU, n: int, tokens: int, mfu: float) -> Training:
        from fitplan.suggest import training_time_hours

        hours = training_time_hours(model, setup, gpu, n, tokens, mfu)
        cost = None if hours is None or gpu.price_usd_per_hour is None else hours * n * gpu.price_usd_per_hour
        return Training(tokens, n, mfu, hours, cost)

    def _suggestions(self, model, base, methods, gpu, placement, tokens, mfu):
        from fitplan.catalog import gpu_catalog
        from fitplan.suggest import suggest

        target = base.with_(method=methods[0] if self.r.method is not None else "lora")
        pool = [gpu] if gpu is not None else list(gpu_catalog().values())
        fixed = placement if (self.r.given("gpus") or self.r.given("sharding") or self.r.given("offload")) else None
        return tuple(suggest(model, target, pool, tokens, mfu, self.r.value("gpus_per_node"), fixed=fixed,
                             calibration=self.r.calibration))

    def _placements(self, model: ModelEntry, first: MethodResult, gpu: GPU, placement: Placement | None,
                    overhead: Overhead, tokens: int | None, mfu: float) -> dict[str, Any]:
        from fitplan.sharding import options

        est: Estimate = first.estimate
        per_node = self.r.value("gpus_per_node")
        found = [] if first.fits and placement is None else options(est, gpu.usable_memory_bytes, per_node)
        note = ""
        if not found and not first.fits and self.r.grad_ckpt is None and not est.setup.checkpointing \
                and est.setup.method.checkpointing_refused is None:
            # not chosen by the user: show what checkpointing makes possible
            est = estimate(model, est.setup.with_(grad_ckpt=True), overhead)
            found = options(est, gpu.usable_memory_bytes, per_node)
            note = " with gradient checkpointing (without it, no count holds the step)"
        out: dict[str, Any] = {"placements": tuple(found), "placements_checkpointing": est.setup.checkpointing,
                               "placements_note": note}
        if not first.fits and self.layout is None:
            out["layouts"] = tuple(_layouts(est, gpu, per_node))
        if tokens:
            n = placement.gpus if placement else (found[0].placement.gpus if found else 1)
            out["training"] = self._training(model, est.setup, gpu, n, tokens, mfu)
        return out


def _layouts(est: Estimate, gpu: GPU, per_node: int) -> list:
    """Model-parallel layouts at the fewest whole nodes (up to 128 of them) that hold the step, best first."""
    from fitplan.parallel import Ranks, search

    ranks = Ranks(est)
    for nodes in (1, 2, 4, 8, 16, 32, 64, 128):
        found = search(est, gpu.usable_memory_bytes, nodes * per_node, per_node, ranks=ranks)
        if found:
            return found
    return []
