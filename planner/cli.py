"""The ``plan`` command: parse, load, call the planner, render. Bad input: one line, exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from planner import __version__
from planner.catalog import GPU, gpu_aliases, gpu_catalog, model_aliases, model_names, preset_info, resolve_gpu, resolve_model
from planner.errors import PlanError, unknown_choice
from planner.estimate import PHASES, Estimate, estimate
from planner.fit import gpus_needed
from planner.sharding import OFFLOADS, STRATEGIES, Placement, per_gpu
from planner.methods import REGISTRY, lora_target_matrices
from planner.recommend import recommend
from planner.render import gib, tabulate, model_line, phase_table, plan_table, setup_line, to_json
from planner.setup import ATTENTIONS, DEVICES, OPTIMIZERS, PRECISIONS, QUANTS, TrainingSetup

DEFAULTS: dict[str, Any] = {
    "seq_len": 2048,
    "batch_size": 1,
    "precision": "bf16",
    "optimizer": "adamw",
    "attention": "sdpa",
}


def _choice(what: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value not in choices:
        raise unknown_choice(what, value, choices)
    return value


def _targets(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.replace(" ", ",").split(",") if p.strip())
    if not parts:
        raise PlanError("--lora-targets must name at least one module, e.g. q,v or all-linear")
    return parts


def _estimate_row(model, setup: TrainingSetup, gpu: GPU | None, overhead=None, placement=None) -> tuple[dict[str, Any], Estimate | None]:
    try:
        est = estimate(model, setup, overhead) if overhead is not None else estimate(model, setup)
    except PlanError as exc:
        return {"method": setup.method, "title": REGISTRY[setup.method].title, "error": str(exc)}, None
    row: dict[str, Any] = {
        "method": setup.method,
        "title": est.method.title,
        "trainable_parameters": est.trainable_params,
        "trainable_percent": round(est.trainable_percent, 4),
        "peak_bytes": est.peak_bytes,
        "peak_phase": est.peak_phase,
        "gpus": setup.gpus,
        "peak_breakdown": est.peak.to_dict_no_total(),
        "phases": {p: est.phases[p].to_dict() for p in PHASES},
        "saved_bytes": est.saved_file_bytes,
        "saved_kind": "full checkpoint" if setup.method == "full" else "adapter file",
        "gradient_checkpointing": setup.checkpointing,
        "layer_activation_bytes": {"layer_0": est.layer_activation_bytes[0], "per_later_layer": est.layer_activation_bytes[1]},
    }
    if setup.device == "cuda":
        row["allocated_bytes"] = est.allocated_bytes
        row["reserved_bytes"] = est.reserved_bytes
        row["device_used_bytes"] = est.device_used_bytes
        row["band_bytes"] = int(est.device_used_bytes * est.overhead.band_fraction)
    if setup.method in ("lora", "qlora"):
        row["lora_rank"] = setup.lora_rank
    # spread over --gpus with the chosen sharding (fsdp when more than one GPU and none was chosen)
    row["peak_bytes_per_gpu"] = est.peak_bytes
    if placement is not None and placement.gpus > 1:
        spread = per_gpu(est, placement)
        row["peak_bytes_per_gpu"] = spread.peak_bytes
        row["sharding"] = placement.strategy
        row["offload"] = placement.offload
        row["host_bytes_per_node"] = spread.host_bytes_per_node
    if gpu is not None:
        row["fits"] = row["peak_bytes_per_gpu"] <= gpu.usable_memory_bytes
        row["gpus_needed"] = gpus_needed(est, gpu)
        row.setdefault("sharding", "none" if row["gpus_needed"] == 1 else "fsdp")
    return row, est


def _plot(path, model, gpu, rows, ests, spread_options, methods, method_name) -> None:
    from planner.plot import breakdown_chart

    if method_name and spread_options:
        # one bar per GPU count where sharding applies
        bars = []
        seen = set()
        for o in sorted(spread_options, key=lambda o: o.placement.gpus):
            key = (o.placement.gpus, o.placement.offload)
            if key not in seen:
                seen.add(key)
                label = f"{o.placement.gpus} x {o.placement.strategy}" + (f" +{o.placement.offload}" if o.placement.offload != "none" else "")
                bars.append((label, o.per_gpu.to_dict_no_total()))
        title = f"{model.name}, {ests[methods[0]].method.title}: memory per GPU"
    else:
        bars = [(r["method"], r["peak_breakdown"]) for r in rows if "error" not in r]
        title = f"{model.name}: peak memory per GPU by method"
    limit = gpu.usable_memory_bytes if gpu else None
    breakdown_chart(bars, title, limit, f"{gpu.name} usable" if gpu else None, path)


def _sharded_json(o) -> dict[str, Any]:
    return {"sharding": o.placement.strategy, "offload": o.placement.offload, "gpus": o.placement.gpus,
            "nodes": o.placement.nodes, "peak_bytes_per_gpu": o.peak_bytes, "peak_phase": o.phase,
            "host_bytes_per_node": o.host_bytes_per_node, "breakdown": o.per_gpu.to_dict_no_total()}


def _suggestion_json(x) -> dict[str, Any]:
    return {"gpu": x.gpu.name, **_sharded_json(x.result), "gradient_checkpointing": x.setup.checkpointing,
            "headroom_fraction": round(x.headroom_fraction, 4), "price_usd_per_hour": x.price_per_hour,
            "price_date": x.gpu.price_date, "hours": x.hours, "cost_usd": x.cost}


def _print_suggestions(suggestions, tokens, mfu) -> None:
    click.echo("")
    how = "cost to finish" if tokens else "indicative price per hour"
    click.echo(f"GPU configurations that hold the step, cheapest {how} first (prices: on-demand, indicative, per "
               "data/gpus; GiB is 2**30 bytes):")
    table = []
    for x in suggestions:
        p = x.result.placement
        row = [x.gpu.name, p.gpus, p.nodes, p.strategy, p.offload, "on" if x.setup.checkpointing else "off",
               gib(x.result.peak_bytes), f"{100 * x.headroom_fraction:.0f}%",
               "-" if x.price_per_hour is None else f"${x.price_per_hour:,.2f} ({x.gpu.price_date})"]
        if tokens:
            row += ["-" if x.hours is None else f"{x.hours:,.1f}", "-" if x.cost is None else f"${x.cost:,.0f}"]
        table.append(row)
    headers = ["gpu", "GPUs", "nodes", "sharding", "offload", "ckpt", "GiB/GPU", "headroom", "$/h all GPUs"]
    if tokens:
        headers += ["hours", "cost"]
    click.echo(tabulate(table, headers))
    if tokens:
        click.echo(f"Time: tokens x FLOPs per token (6 x parameters for full fine-tuning, 4 x with a frozen base, "
                   f"+2 x with checkpointing) at {100 * mfu:.0f}% of each GPU's bf16 peak.")


def _gpu_json(gpu: GPU) -> dict[str, Any]:
    return {
        "name": gpu.name,
        "display_name": gpu.display_name,
        "memory_bytes": gpu.memory_bytes,
        "usable_memory_bytes": gpu.usable_memory_bytes,
        "bf16_tflops": gpu.bf16_tflops,
        "supports_bf16": gpu.supports_bf16,
    }


def setup_options(func):
    """The options that describe a training step, shared by planning and validation."""
    options = [
        click.option("--method", "method_name", metavar="METHOD", help="One of full, lora, qlora, adapter, prefix, prompt, ptuning; default all."),
        click.option("--lora-rank", type=int, default=16, show_default=True),
        click.option("--lora-targets", default="q,v", show_default=True, help="Module names, roles (q,k,v,o,gate,up,down) or all-linear."),
        click.option("--adapter-size", type=int, default=64, show_default=True, help="Bottleneck width of Houlsby adapters."),
        click.option("--num-virtual-tokens", type=int, default=20, show_default=True, help="Prefix, prompt and P-tuning tokens."),
        click.option("--prefix-projection/--no-prefix-projection", default=False, show_default=True, help="Prefix tuning's reparameterisation MLP."),
        click.option("--seq-len", type=int, default=None, help="Tokens per sequence [default: 2048]."),
        click.option("--batch-size", type=int, default=None, help="Micro batch per GPU [default: 1]."),
        click.option("--precision", default=None, metavar="P", help=f"{', '.join(PRECISIONS)} [default: bf16]."),
        click.option("--optimizer", default=None, metavar="OPT", help=f"{', '.join(OPTIMIZERS)} [default: adamw]."),
        click.option("--grad-ckpt/--no-grad-ckpt", default=None, help="Gradient checkpointing [default: on for qlora, off otherwise]."),
        click.option("--attention", default=None, metavar="IMPL", help=f"{', '.join(ATTENTIONS)} [default: sdpa]."),
        click.option("--quant", default="nf4", show_default=True, metavar="Q", help=f"{', '.join(QUANTS)} (qlora)."),
        click.option("--double-quant/--no-double-quant", default=True, show_default=True, help="bitsandbytes double quantization (qlora)."),
        click.option("--kbit-upcast/--no-kbit-upcast", default=True, show_default=True,
                     help="qlora: peft's prepare_model_for_kbit_training keeps non-4-bit parameters (and so activations) in fp32."),
        click.option("--transformers", "transformers_major", type=click.IntRange(4, 5), default=5, show_default=True,
                     help="Major version of transformers to model (4: per-expert MoE linears, extra fp32 logits copy)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", metavar="NAME|PATH", help="Preset or alias (see `plan models`), or a config.json / its folder.")
@click.option("--gpu", "gpu_name", metavar="NAME", help="GPU to fit on (see `plan gpus`).")
@setup_options
@click.option("--gpus", "gpus", type=int, default=1, show_default=True, help="GPUs the step is spread over (reported per GPU).")
@click.option("--sharding", default="auto", show_default=True, metavar="S",
              help="auto, none, ddp, zero1, zero2, zero3, fsdp or hybrid (auto: fsdp when --gpus > 1).")
@click.option("--offload", default="none", show_default=True, metavar="O", help="none, optimizer or params (to host memory).")
@click.option("--gpus-per-node", type=int, default=8, show_default=True, help="GPUs per node, for nodes and hybrid sharding.")
@click.option("--suggest", is_flag=True, help="Rank every catalog GPU by the cheapest configuration that holds the step.")
@click.option("--max-batch", is_flag=True, help="Find the largest micro batch that fits --gpu.")
@click.option("--max-seq-len", is_flag=True, help="Find the longest sequence that fits --gpu.")
@click.option("--tokens", type=int, default=None, metavar="N", help="Tokens to train on: adds time and cost estimates.")
@click.option("--mfu", type=float, default=0.40, show_default=True, help="Share of the GPU's bf16 peak reached, for --tokens.")
@click.option("--plot", "plot_path", metavar="FILE", help="Draw the breakdown as stacked bars (.png, .svg or .pdf; needs .[plot]).")
@click.option("--calibration", "calibration_path", metavar="FILE|none",
              help="A calibration file to apply, or 'none' for the defaults [default: the one matching --gpu].")
@click.option("--device", default="cuda", show_default=True, metavar="D", help="Kernels to model: cuda, or cpu (the validator's CPU runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, every memory figure in integer bytes.")
@click.version_option(__version__, prog_name="plan")
@click.pass_context
def cli(ctx: click.Context, model_name, gpu_name, method_name, lora_rank, lora_targets, adapter_size, num_virtual_tokens,
        prefix_projection, seq_len, batch_size, precision, optimizer, grad_ckpt, attention, quant, double_quant,
        kbit_upcast, transformers_major, gpus, sharding, offload, gpus_per_node, suggest, max_batch, max_seq_len, tokens,
        mfu, plot_path, calibration_path, device, as_json) -> None:
    """Plan the memory of fine-tuning a language model: `plan --model llama-70b --gpu a100-80`."""
    if ctx.invoked_subcommand is not None:
        return
    if not model_name:
        raise PlanError("missing --model: give a preset (see `plan models`) or a config.json path, "
                        "e.g. plan --model llama-70b --gpu a100-80")
    given = {"seq_len": seq_len, "batch_size": batch_size, "precision": precision, "optimizer": optimizer, "attention": attention}
    assumed = tuple(k for k, v in given.items() if v is None)
    values = {k: (DEFAULTS[k] if v is None else v) for k, v in given.items()}
    values["precision"] = _choice("precision", values["precision"], PRECISIONS)
    values["optimizer"] = _choice("optimizer", values["optimizer"], OPTIMIZERS)
    values["attention"] = _choice("attention implementation", values["attention"], ATTENTIONS)
    device = _choice("device", device, DEVICES)
    quant = _choice("quantization", quant, QUANTS)
    methods = list(REGISTRY) if method_name is None else [_choice("method", method_name, tuple(REGISTRY))]
    model = resolve_model(model_name)
    gpu = resolve_gpu(gpu_name) if gpu_name else None
    notes: list[str] = []
    if gpu is not None and device != "cuda":
        raise PlanError(f"--gpu {gpu.name} plans for a CUDA device; drop --device {device} or --gpu")
    if gpu is not None and not gpu.supports_bf16 and values["precision"].startswith("bf16"):
        if "precision" in assumed:
            values["precision"] = "fp16"
            notes.append(f"{gpu.name} has no bf16: planned in fp16")
        else:
            raise PlanError(f"{gpu.name} does not support bf16; use --precision fp16, fp16-mixed or fp32")
    if model.shape.model_type == "gemma2" and values["attention"] != "eager":
        if "attention" in assumed:
            values["attention"] = "eager"
            notes.append("gemma2 runs eager attention in transformers 5 (no SDPA path)")
        else:
            raise PlanError("gemma2 has no SDPA or flash path in transformers 5; use --attention eager")
    if model.shape.num_experts and any(m == "qlora" for m in methods):
        notes.append("qlora on MoE: transformers 5 keeps the fused 3-D expert weights unquantized "
                     "(prepare_model_for_kbit_training upcasts them to fp32)")
    base = TrainingSetup(
        method=methods[0], lora_rank=lora_rank, lora_targets=_targets(lora_targets), adapter_size=adapter_size,
        num_virtual_tokens=num_virtual_tokens, prefix_projection=prefix_projection, grad_ckpt=grad_ckpt,
        quant=quant, double_quant=double_quant, gpus=gpus, device=device, assumed=assumed,
        kbit_upcast=kbit_upcast, transformers_major=transformers_major, **values,
    )
    lora_target_matrices(model.shape, base.lora_targets)  # a bad target is bad input for every method
    sharding = _choice("sharding", sharding, ("auto",) + STRATEGIES)
    offload = _choice("offload", offload, OFFLOADS)
    if gpus_per_node < 1:
        raise PlanError(f"gpus-per-node must be positive, got {gpus_per_node}")
    if tokens is not None and tokens <= 0:
        raise PlanError(f"tokens must be positive, got {tokens}")
    if not 0 < mfu <= 1:
        raise PlanError(f"mfu must lie in (0, 1], got {mfu}")
    if (max_batch or max_seq_len) and (gpu is None or method_name is None):
        raise PlanError("--max-batch and --max-seq-len need --gpu and --method")
    placement = None
    if gpus > 1 or sharding not in ("auto", "none") or offload != "none":
        strategy = "fsdp" if sharding in ("auto", "none") else sharding
        placement = Placement(strategy, gpus, gpus_per_node, offload)
    from planner.calibration import overhead_for

    if calibration_path and calibration_path.lower() == "none":
        from planner.memory.overhead import DEFAULT_OVERHEAD

        overhead, cal = DEFAULT_OVERHEAD, None
    elif calibration_path:
        from planner.calibration import load_file

        cal = load_file(calibration_path)
        overhead = cal.overhead
    else:
        overhead, cal = overhead_for(gpu)
    rows, ests = [], {}
    for name in methods:
        row, est = _estimate_row(model, base.with_(method=name), gpu, overhead, placement)
        rows.append(row)
        if est is not None:
            ests[name] = est
    if not ests:
        raise PlanError(rows[0]["error"])
    rec = recommend(model, base, gpu, overhead) if gpu is not None and method_name is None else None
    if rec is not None:
        for r in rows:
            r["recommended"] = r["method"] == rec.method
    payload: dict[str, Any] = {
        "model": {
            "name": model.name, "source": model.source, "hf_id": model.hf_id, "model_type": model.shape.model_type,
            "parameters": model.shape.parameter_count, "layers": model.shape.num_layers,
            "hidden_size": model.shape.hidden_size, "vocab_size": model.shape.vocab_size,
        },
        "gpu": _gpu_json(gpu) if gpu else None,
        "setup": {k: v for k, v in base.to_dict().items() if k not in ("method", "grad_ckpt")} | {"grad_ckpt": grad_ckpt},
        "calibration": None if cal is None else {"gpu": cal.gpu, "torch": cal.torch, "transformers": cal.transformers,
                                                  "runs": cal.runs, "date": cal.date, "source": cal.source,
                                                  "file": Path(cal.path).name if cal.path else None},
        "assumed": list(assumed),
        "notes": notes,
        "methods": rows,
        "recommendation": None if rec is None else {
            "method": rec.method, "lora_rank": rec.lora_rank, "gpus": rec.gpus, "reason": rec.reason,
            "peak_bytes": rec.estimate.peak_bytes if rec.estimate else None,
        },
    }
    suggestions = None
    if suggest:
        from planner.calibration import overhead_for as _ov
        from planner.catalog import gpu_catalog
        from planner.suggest import suggest as _suggest

        target = base.with_(method=methods[0] if method_name else "lora")
        suggestions = _suggest(model, target, {g.name: _ov(g)[0] for g in gpu_catalog().values()}, tokens, mfu,
                               gpus_per_node)
        payload["suggestions"] = [_suggestion_json(x) for x in suggestions]
    spread_options = None
    ckpt_note = ""
    if method_name and gpu is not None and not suggest:
        est = ests[methods[0]]
        from planner.sharding import options as _options

        spread_options = [] if rows[0].get("fits") and placement is None else _options(est, gpu.usable_memory_bytes, gpus_per_node)
        ckpt_note = ""
        if not spread_options and not rows[0].get("fits") and grad_ckpt is None and not est.setup.checkpointing \
                and est.setup.method != "prefix":
            # not chosen by the user: show what checkpointing makes possible
            est = estimate(model, est.setup.with_(grad_ckpt=True), overhead)
            spread_options = _options(est, gpu.usable_memory_bytes, gpus_per_node)
            ckpt_note = " with gradient checkpointing (without it, no count holds the step)"
        payload["sharding_options"] = [_sharded_json(x) for x in spread_options]
        payload["sharding_options_checkpointing"] = est.setup.checkpointing
        if tokens:
            from planner.suggest import training_time_hours

            n = placement.gpus if placement else (spread_options[0].placement.gpus if spread_options else 1)
            hours = training_time_hours(model, est.setup, gpu, n, tokens, mfu)
            payload["training"] = {"tokens": tokens, "gpus": n, "mfu": mfu, "hours": hours,
                                   "cost_usd": None if hours is None or gpu.price_usd_per_hour is None
                                   else hours * n * gpu.price_usd_per_hour}
    searched = {}
    if max_batch or max_seq_len:
        from planner.suggest import largest

        for flag, field in ((max_batch, "batch_size"), (max_seq_len, "seq_len")):
            if flag:
                value = largest(model, ests[methods[0]].setup, gpu.usable_memory_bytes, field, overhead)
                searched[field] = value
        payload["largest"] = searched
    if plot_path:
        _plot(plot_path, model, gpu, rows, ests, spread_options, methods, method_name)
        payload["plot"] = plot_path
    if as_json:
        click.echo(to_json(payload))
        return
    first = next(iter(ests.values()))
    click.echo(model_line(model))
    if gpu is not None:
        click.echo(f"GPU: {gpu.display_name}, {gib(gpu.usable_memory_bytes)} GiB usable of {gib(gpu.memory_bytes)} GiB")
    click.echo(setup_line(first))
    click.echo("")
    if method_name is None:
        click.echo("Peak memory per GPU, GiB (2**30 bytes), by component at each method's peak phase:")
        click.echo(plan_table(rows, gpu))
        if base.gpus > 1:
            click.echo(f"(components are one unsharded replica's; peak/GPU shards weights, gradients and "
                       f"optimizer states over {base.gpus} GPUs)")
    else:
        est = ests[methods[0]]
        row = rows[0]
        click.echo(f"{est.method.title}: {est.trainable_params:,} trainable parameters ({est.trainable_percent:.3f}%), "
                   f"saves {est.saved_file_bytes / 2**20:,.1f} MiB ({row['saved_kind']})")
        click.echo("Memory by training phase, GiB (2**30 bytes):")
        click.echo(phase_table(est))
        if device == "cuda":
            band = gib(row["band_bytes"])
            click.echo(f"What the tools will say at the peak: allocated {gib(est.allocated_bytes)} GiB "
                       f"(torch.cuda.max_memory_allocated), reserved {gib(est.reserved_bytes)} GiB, "
                       f"device used {gib(est.device_used_bytes)} ± {band} GiB (nvidia-smi)")
        if gpu is not None:
            n = row["gpus_needed"]
            verdict = "fits" if row["fits"] else (f"needs {n} GPUs (FSDP full shard)" if n else "does not fit at any GPU count")
            click.echo(f"On {gpu.name}: peak {gib(est.peak_bytes)} GiB of {gib(gpu.usable_memory_bytes)} GiB usable: {verdict}")
    for r in rows:
        if "error" in r:
            click.echo(f"  {r['method']}: not estimated: {r['error']}")
    if spread_options:
        click.echo("")
        click.echo(f"Across {gpu.name} GPUs ({gpus_per_node} per node), the fewest that hold the step for each "
                   f"sharding{ckpt_note}:")
        click.echo(tabulate([[o.placement.strategy, o.placement.offload, o.placement.gpus, o.placement.nodes,
                              gib(o.peak_bytes), gib(o.host_bytes_per_node), o.phase] for o in spread_options],
                            ["sharding", "offload", "GPUs", "nodes", "GiB per GPU", "host GiB per node", "peak phase"]))
    elif method_name and gpu is not None and not suggest and not rows[0].get("fits"):
        click.echo(f"No sharding or offload holds this step on {gpu.name} at any count up to 4096 GPUs: the "
                   "activations are not sharded; enable --grad-ckpt, shorten the sequence or lower the batch.")
    if "training" in payload:
        t = payload["training"]
        cost = "" if t["cost_usd"] is None else f", about ${t['cost_usd']:,.0f} at {gpu.name}'s indicative price ({gpu.price_date})"
        hours = "unknown (no bf16/fp16 peak in the catalog)" if t["hours"] is None else f"{t['hours']:,.1f} h"
        click.echo(f"Training {tokens:,} tokens on {t['gpus']} x {gpu.name} at {100 * mfu:.0f}% of peak: {hours}{cost}")
    for field, value in searched.items():
        name = "micro batch" if field == "batch_size" else "sequence length"
        if value is None:
            click.echo(f"Largest {name} that fits one {gpu.name}: none (1 does not fit)")
        else:
            click.echo(f"Largest {name} that fits one {gpu.name}: {value:,} (the next one up does not fit)")
    if suggestions is not None:
        _print_suggestions(suggestions, tokens, mfu)
    if rec is not None:
        click.echo("")
        click.echo(f"Recommended: {rec.method}" + (f" r={rec.lora_rank}" if rec.lora_rank else "") + f" ({rec.reason})")
    if device == "cuda" and (gpu is not None or cal is not None):
        if cal is not None:
            click.echo(f"Calibration: {cal.describe()}")
        else:
            click.echo(f"Calibration: none matches {gpu.name} or its architecture ({gpu.architecture}); documented defaults "
                       "(CUDA context 512 MiB, allocator reserve 5%)")
    for note in notes:
        click.echo(f"Note: {note}")
    if rec is not None:
        click.echo("* the recommended method")
    if assumed:
        words = {"seq_len": ("sequence length", "--seq-len"), "batch_size": ("micro batch", "--batch-size"),
                 "precision": ("precision", "--precision"), "optimizer": ("optimizer", "--optimizer"),
                 "attention": ("attention kernel", "--attention")}
        click.echo("Assumed, not chosen (change with the option named):")
        for i, k in enumerate(assumed, 1):
            name, option = words[k]
            click.echo(f"  [{i}] {name} {getattr(first.setup, k)} ({option})")


@cli.command("validate")
@click.option("--model", "model_name", metavar="NAME|PATH", help="Preset or alias, or a config.json / its folder.")
@setup_options
@click.option("--mode", default="auto", show_default=True, metavar="M",
              help="auto, cuda (a GPU), cpu (a real CPU run) or fake (fake tensors, any size).")
@click.option("--device", "device_name", default=None, metavar="D", help="cuda or cpu: the same as --mode.")
@click.option("--steps", type=int, default=2, show_default=True, help="Optimizer steps to run (at least 2).")
@click.option("--nproc", type=int, default=1, show_default=True, help="Ranks to run (local processes; gloo on a CPU).")
@click.option("--sharding", "validate_sharding", default=None, metavar="S", help="With --nproc > 1: fsdp (FSDP2 full shard).")
@click.option("--sweep", metavar="FILE", help="A TOML sweep (see data/sweeps/) to run instead of one setting.")
@click.option("--out", metavar="FILE", help="JSONL file the records are appended to (needed with --sweep).")
@click.option("--plot", "plot_path", metavar="FILE", help="Draw estimate beside measurement (needs .[plot]).")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def validate_cmd(model_name, method_name, lora_rank, lora_targets, adapter_size, num_virtual_tokens, prefix_projection,
                 seq_len, batch_size, precision, optimizer, grad_ckpt, attention, quant, double_quant, kbit_upcast,
                 transformers_major, mode, device_name, steps, nproc, validate_sharding, sweep, out, plot_path,
                 as_json) -> None:
    """Run real training steps and compare the measured peak with the estimate (needs `.[validate]`)."""
    mode = _choice("mode", device_name if device_name else mode, ("auto", "cuda", "cpu", "fake"))
    try:
        from validate.cli import validate_command
    except ImportError as exc:
        raise PlanError(f"plan validate needs the validation extras ({exc.name} is missing): pip install 'fitplan[validate]'") from None
    settings = {
        "model": model_name, "method": _choice("method", method_name or "lora", tuple(REGISTRY)),
        "seq_len": seq_len or 512, "batch_size": batch_size or 1,
        "precision": _choice("precision", precision or ("fp32" if mode == "cpu" else "bf16"), PRECISIONS),
        "optimizer": _choice("optimizer", optimizer or "adamw", OPTIMIZERS), "grad_ckpt": grad_ckpt,
        "attention": _choice("attention implementation", attention or "sdpa", ATTENTIONS), "lora_rank": lora_rank,
        "lora_targets": lora_targets, "adapter_size": adapter_size, "num_virtual_tokens": num_virtual_tokens,
        "prefix_projection": prefix_projection, "quant": _choice("quantization", quant, QUANTS),
        "double_quant": double_quant, "steps": steps,
    }
    if steps < 2:
        raise PlanError("--steps must be at least 2: the optimizer's state appears at the first")
    if nproc < 1:
        raise PlanError(f"nproc must be positive, got {nproc}")
    if nproc > 1:
        sharding = _choice("sharding", validate_sharding or "fsdp", ("fsdp",))
        if mode not in ("auto", "cpu", "cuda"):
            raise PlanError("--nproc runs real ranks: use --mode cpu (gloo) or cuda (NCCL)")
        settings.update(nproc=nproc, sharding=sharding)
    elif validate_sharding:
        raise PlanError("--sharding needs --nproc 2 or more")
    settings["kbit_upcast"] = kbit_upcast
    settings["transformers_major"] = transformers_major
    validate_command(settings, mode, sweep, out, as_json, plot_path)


@cli.command("reference")
@click.option("--file", "path", metavar="CSV", help="Published measurements [default: data/reference/published_memory.csv].")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def reference_cmd(path, as_json) -> None:
    """Published, measured GPU peaks beside the planner's like-for-like figures."""
    from planner import reference

    if path and not Path(path).exists():
        raise PlanError(f"reference file {path}: no such file")
    comparisons, skipped = reference.compare(path)
    summary = reference.summary(comparisons)
    if as_json:
        click.echo(to_json({
            "summary": summary,
            "rows": [{"id": c.id, "model": c.model, "method": c.method, "settings": c.settings, "kind": c.kind,
                      "gpus": c.gpus, "measured_bytes": c.measured_bytes, "planner_bytes": c.planner_bytes,
                      "error_percent": round(c.error_percent, 3)} for c in comparisons],
            "skipped": [{"id": i, "reason": r} for i, r in skipped],
        }))
        return
    table = [[c.id, c.model, c.method, c.kind, gib(c.measured_bytes), gib(c.planner_bytes), f"{c.error_percent:+.1f}%",
              c.settings] for c in comparisons]
    click.echo("Published peaks against the planner, GiB (2**30 bytes), allocated with allocated, reserved with reserved:")
    click.echo(tabulate(table, ["row", "model", "method", "measured", "measured", "planner", "error", "settings"]))
    click.echo(f"{summary['rows']} rows; median |error| {summary['median_abs_error_percent']}%; "
               f"worst {summary['worst']['id']} {summary['worst']['error_percent']:+.1f}%")
    click.echo(f"{len(skipped)} rows not expressible: " + ", ".join(f"{i}" for i, _ in skipped))


@cli.command("calibrate")
@click.argument("records", nargs=-1)
@click.option("--reference", "use_reference", is_flag=True,
              help="Fit from the published rows that report allocated memory beside nvidia-smi's.")
@click.option("--gpu", "gpu_name", metavar="NAME", help="The GPU the records come from [default: from the records].")
@click.option("--out", metavar="FILE", help="Where to write [default: data/calibration/<gpu>-torch<version>.json].")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate_cmd(records, use_reference, gpu_name, out, as_json) -> None:
    """Fit the framework overhead (workspaces, allocator reserve, CUDA context) from measurements."""
    import datetime as dt

    from planner import calibration, reference
    from planner.catalog import data_dir

    if not records and not use_reference:
        raise PlanError("give validator records (JSONL files from `plan validate --mode cuda`) or --reference")
    observations, provenance, off = [], {}, []
    if use_reference:
        by_gpu = reference.observations()
        gpu = resolve_gpu(gpu_name or "a100-80")
        observations = by_gpu.get(gpu.name, [])
        if not observations:
            raise PlanError(f"the published rows report no allocated/nvidia-smi pairs for {gpu.name}; "
                            f"they do for: {', '.join(sorted(by_gpu))}")
        provenance = {"torch": "2.4", "transformers": "4.48", "driver": None,
                      "source": "published rows (foundation-model-stack fms-acceleration A100-80GB table), single GPU"}
    else:
        from validate.records import read_records

        loaded = []
        for path in records:
            if not Path(path).exists():
                raise PlanError(f"records file {path}: no such file")
            loaded += read_records(path)
        cuda = [r for r in loaded if (r.get("measurement") or {}).get("mode") == "cuda" and r.get("outcome") == "ok"]
        if not cuda:
            raise PlanError("the records hold no successful cuda-mode run to fit (cpu and fake runs have no allocator)")
        names = {r["device"].get("gpu") for r in cuda}
        gpu = resolve_gpu(gpu_name) if gpu_name else _gpu_from_device_name(names)
        observations = calibration.observations_from_records(cuda)
        off = calibration.categories_off(observations)
        first = cuda[0]
        provenance = {"torch": (first.get("versions") or {}).get("torch"),
                      "transformers": (first.get("versions") or {}).get("transformers"),
                      "driver": first["device"].get("driver"), "source": ", ".join(records)}
    overhead, description, residuals = calibration.fit(observations)
    cal = calibration.Calibration(
        gpu=gpu.name, architecture=gpu.architecture, torch=provenance["torch"], transformers=provenance["transformers"],
        driver=provenance["driver"], date=dt.date.today().isoformat(), source=provenance["source"],
        runs=len(observations), overhead=overhead, fit=description, residuals=tuple(residuals),
        categories_off=tuple(off),
    )
    torch_tag = (provenance["torch"] or "unknown").split("+")[0]
    path = Path(out) if out else data_dir() / "calibration" / f"{gpu.name}-torch{torch_tag}.json"
    calibration.write(cal, path)
    if as_json:
        click.echo(to_json({**cal.to_json(), "path": str(path)}))
        return
    o = overhead
    click.echo(f"Calibration for {gpu.name} from {len(observations)} runs written to {path}")
    click.echo(f"  workspaces {o.workspace_bytes / 2**20:,.0f} MiB; reserve {100 * o.reserve_fraction:.1f}% + "
               f"{o.reserve_bytes / 2**20:,.0f} MiB; CUDA context {o.context_bytes / 2**20:,.0f} MiB; "
               f"band ±{100 * o.band_fraction:.1f}% ({description['law']})")
    errs = [abs(r["error_percent"]) for r in residuals]
    if errs:
        click.echo(f"  residuals: median {sorted(errs)[len(errs) // 2]:.1f}%, worst {max(errs):.1f}%")
    if off:
        click.echo(f"  {len(off)} runs have planner categories off by more than 5% (planner bugs, not absorbed):")
        for item in off[:10]:
            click.echo(f"    {item['id']}: {item['categories_error_percent']}")


def _gpu_from_device_name(names: set) -> GPU:
    """The catalog GPU whose display name best matches what torch reported."""
    from planner.catalog import gpu_catalog

    names = {n for n in names if n}
    if len(names) != 1:
        raise PlanError(f"records come from {len(names)} GPU kinds ({', '.join(sorted(map(str, names)))}); pass --gpu")
    reported = next(iter(names)).lower()
    best = None
    for g in gpu_catalog().values():
        tokens = [t for t in g.display_name.lower().replace("nvidia", "").split() if t]
        score = sum(t in reported for t in tokens)
        if best is None or score > best[0]:
            best = (score, g)
    if best is None or best[0] == 0:
        raise PlanError(f"no catalog GPU matches {reported!r}; pass --gpu")
    return best[1]


@cli.command("models")
@click.option("--json", "as_json", is_flag=True)
def models_cmd(as_json: bool) -> None:
    """List the model presets and their aliases."""
    aliases = model_aliases()
    by_target: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        by_target.setdefault(target, []).append(alias)
    rows = []
    for name in model_names():
        info = preset_info(name)
        short = sorted((a for a in by_target.get(name, []) if "/" not in a), key=len)[:3]
        rows.append({"name": name, "hf_id": info.get("hf_id"), "model_type": info.get("model_type"),
                     "parameters": info.get("parameters"), "aliases": short})
    if as_json:
        click.echo(to_json({"models": rows}))
        return
    click.echo(tabulate([[r["name"], r["hf_id"], r["model_type"], f"{r['parameters']:,}", ", ".join(r["aliases"])] for r in rows],
                        ["preset", "hugging face id", "type", "parameters", "aliases"]))


@cli.command("gpus")
@click.option("--json", "as_json", is_flag=True)
def gpus_cmd(as_json: bool) -> None:
    """List the GPU catalog."""
    aliases = gpu_aliases()
    rows = []
    for g in gpu_catalog().values():
        rows.append({"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes,
                     "usable_memory_bytes": g.usable_memory_bytes, "bf16_tflops": g.bf16_tflops, "hbm_gbps": g.hbm_gbps,
                     "interconnect": g.interconnect, "supports_bf16": g.supports_bf16, "supports_fp8": g.supports_fp8,
                     "aliases": sorted(a for a, t in aliases.items() if t == g.name)})
    if as_json:
        click.echo(to_json({"gpus": rows}))
        return
    click.echo(tabulate([[r["name"], r["display_name"], gib(r["memory_bytes"]), gib(r["usable_memory_bytes"]),
                          r["bf16_tflops"] if r["bf16_tflops"] is not None else "-", r["hbm_gbps"],
                          "yes" if r["supports_fp8"] else "no", r["interconnect"]] for r in rows],
                        ["gpu", "name", "GiB", "usable GiB", "bf16 TFLOP/s", "GB/s", "fp8", "interconnect"]))


def main(argv: list[str] | None = None) -> int:
    """Entry point: every bad input ends as one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="plan", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        click.echo("plan: aborted", err=True)
        return 1
    except click.UsageError as exc:
        click.echo(f"plan: error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"plan: error: {exc.format_message()}", err=True)
        return 2
    except PlanError as exc:
        click.echo(f"plan: error: {exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:  # console script
    sys.exit(main())
