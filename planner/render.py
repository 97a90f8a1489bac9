"""Text views of a Plan: the tables and lines a person reads. JSON is ``Plan.to_dict()``.

Bytes stay ints until here; tables print GiB (2**30 bytes) with one decimal and say so.
"""

from __future__ import annotations

from fitplan.breakdown import CATEGORIES, LABELS
from fitplan.catalog import GPU, ModelEntry
from fitplan.estimate import PHASES
from fitplan.request import ASSUMED
from fitplan.result import MethodResult, Plan
from fitplan.units import GIB, MIB, count, gib

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


FORMATS = ("text", "markdown", "github", "csv")


def tabulate(rows: list[list[Any]], headers: list[str], fmt: str = "text") -> str:
    """A table: plain text (left-aligned columns, a dashed rule under the headers), or Markdown,
    GitHub Markdown or CSV for pasting elsewhere.

    The plain table is written here: the tabulate library (which draws the others) imports
    importlib.metadata, a quarter of the planner's cold-start budget, so it is imported only when a
    pasteable table is asked for.
    """
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([headers, *([_unstyle(str(c)) for c in r] for r in rows)])
        return out.getvalue().rstrip("\n")
    if fmt in ("markdown", "github"):
        import tabulate as library

        clean = [[_unstyle(str(c)) for c in r] for r in rows]
        return library.tabulate(clean, headers, tablefmt="pipe" if fmt == "markdown" else "github",
                                disable_numparse=True)
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    # pad by the visible width: ANSI colour codes take no room on the screen
    widths = [max(len(_unstyle(r[i])) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c + " " * (w - len(_unstyle(c))) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _unstyle(text: str) -> str:
    if "\x1b" not in text:
        return text
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def model_line(model: ModelEntry) -> str:
    s = model.shape
    src = f" ({model.hf_id})" if model.hf_id else f" (from {model.source})" if model.source != "preset" else ""
    return (
        f"Model: {model.name}{src}, {s.model_type}, {s.parameter_count:,} parameters, "
        f"{s.num_layers} layers, hidden {s.hidden_size}, vocab {s.vocab_size}"
    )


def setup_line(plan: Plan) -> str:
    st = plan.setup
    if st.grad_ckpt is None and st.method.checkpointing_default:
        ckpt = "on (peft's prepare_model_for_kbit_training enables it)"
    elif st.grad_ckpt is None:
        ckpt = "off (on for qlora, as peft's prepare_model_for_kbit_training does)"
    else:
        ckpt = "on" if st.grad_ckpt else "off"
    p, lay = plan.placement, plan.layout
    if lay is not None:
        gpus = f", {lay.gpus} GPU{'s' if lay.gpus > 1 else ''}: {lay.describe()}"
    else:
        gpus = f", {p.gpus} GPU{'s' if p.gpus > 1 else ''}: {p.describe()}" if p is not None else ""
    return (
        f"Setup: seq {st.seq_len}, batch {st.batch_size}, {st.precision}, {st.optimizer}, attention {st.attention} "
        f"({st.device}), gradient checkpointing {ckpt}{gpus}"
    )


def _styled() -> bool:
    """Colour only for a terminal, and never where NO_COLOR is set (no-color.org)."""
    import os
    import sys

    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def fit_cell(fits: bool, needs: int | None, with_ckpt: bool = False) -> str:
    """✓, ✓ with ckpt (fits one GPU once checkpointing is on), needs N [(ckpt)], or ✗ (no count)."""
    if fits:
        text = "✓"
    elif needs == 1:
        text = "✓ with ckpt"
    elif needs:
        text = f"needs {needs}" + (" (ckpt)" if with_ckpt else "")
    else:
        text = "✗"
    if not _styled():
        return text
    import click

    return click.style(text, fg="green" if fits or needs == 1 else ("yellow" if needs else "red"))


def plan_table(results: list[MethodResult], gpu: GPU | None, fmt: str = "text") -> str:
    headers = ["method", "trainable", "weights", "quant", "grads", "optim", "activ", "logits", "temps", "overhead",
               "peak/GPU", "saves"]
    if gpu is not None:
        headers.append(f"fits {gpu.name}")
    table = []
    for r in results:
        if r.estimate is None:
            table.append([r.method.name, "-", *(["-"] * 10), *(["n/a"] if gpu else [])][: len(headers)])
            continue
        est = r.estimate
        b = est.peak
        line = [
            ("* " if r.recommended else "") + r.method.name,
            f"{count(est.trainable_params)} ({est.trainable_percent:.2f}%)",
            gib(b.weights), gib(b.quantization_state), gib(b.gradients), gib(b.optimizer_states),
            gib(b.activations), gib(b.logits_loss), gib(b.temporaries), gib(b.overhead),
            gib(r.peak_bytes_per_gpu), gib(est.saved_file_bytes),
        ]
        if gpu is not None:
            line.append(fit_cell(r.fits, r.gpus_needed, r.gpus_needed_checkpointing))
        table.append(line)
    return tabulate(table, headers, fmt)


def phase_table(phases: dict[str, Any], peak_phase: str, fmt: str = "text") -> str:
    rows = []
    for c in CATEGORIES:
        rows.append([LABELS[c], *(gib(getattr(phases[p], c)) for p in PHASES)])
    rows.append(["total", *(gib(phases[p].total) for p in PHASES)])
    headers = ["GiB", *(p + (" (peak)" if p == peak_phase else "") for p in PHASES)]
    return tabulate(rows, headers, fmt)


def _suggestions(plan: Plan, fmt: str = "text") -> list[str]:
    tokens = plan.request.tokens
    how = "cost to finish" if tokens else "indicative price per hour"
    lines = ["", f"GPU configurations that hold the step, cheapest {how} first (prices: on-demand, indicative, per "
             "data/gpus; GiB is 2**30 bytes):"]
    table = []
    for x in plan.suggestions:
        p = x.result.placement
        sharding = p.strategy if x.result.layout is None else x.result.layout.describe()
        row = [("" if x.practical else "! ") + x.gpu.name, p.gpus, p.nodes, sharding, p.offload,
               "on" if x.setup.checkpointing else "off", gib(x.result.peak_bytes), f"{100 * x.headroom_fraction:.0f}%",
               f"±{100 * x.band_fraction:.0f}%" + ("" if x.calibrated else " (uncalibrated)"),
               "-" if x.price_per_hour is None else f"${x.price_per_hour:,.2f} ({x.gpu.price_date})"]
        if tokens:
            row += ["-" if x.hours is None else f"{x.hours:,.1f}", "-" if x.cost is None else f"${x.cost:,.0f}"]
        table.append(row)
    headers = ["gpu", "GPUs", "nodes", "sharding", "offload", "ckpt", "GiB/GPU", "headroom", "band", "$/h all GPUs"]
    if tokens:
        headers += ["hours", "cost"]
    lines.append(tabulate(table, headers, fmt))
    odd = [x for x in plan.suggestions if not x.practical]
    if odd:
        lines.append("! listed last, rarely worth building: " + "; ".join(x.why_not for x in odd))
    if not plan.suggestions:
        lines.append("No GPU of the catalog holds this step with its band to spare.")
    if tokens:
        lines.append(f"Time: tokens x FLOPs per token (6 x parameters for full fine-tuning, 4 x with a frozen base, "
                     f"+2 x with checkpointing) at {100 * plan.request.value('mfu'):.0f}% of each GPU's bf16 peak.")
    return lines


def _beyond_step(r: MethodResult) -> list[str]:
    """The lines on what the step is not: offloaded activations in host memory; the model load's and
    the checkpoint save's peaks, and which of the three is highest."""
    est, lines = r.estimate, []
    if est.host_bytes:
        lines.append(f"Host memory: {gib(est.host_bytes)} GiB of offloaded activations (pinned), per GPU")
    pk = r.other_peaks
    words = {"step": "the step", "model_load": "the model load", "checkpoint_save": "the checkpoint save"}
    lines.append(f"Beside the step ({gib(pk.step_bytes)} GiB): model load {gib(pk.load_bytes)} GiB ({pk.load_how}), "
                 f"checkpoint save {gib(pk.save_bytes)} GiB ({pk.save_how}); highest: {words[pk.highest]}")
    return lines


def _beyond_steps(results: list[MethodResult]) -> list[str]:
    """For the methods' table: the methods whose model load or checkpoint save peaks above the step."""
    above = []
    for r in results:
        if r.estimate is None:
            continue
        pk = r.other_peaks
        if pk.highest != "step":
            what = "model load" if pk.highest == "model_load" else "checkpoint save"
            top = pk.load_bytes if pk.highest == "model_load" else pk.save_bytes
            above.append(f"{r.method.name} {what} {gib(top)} GiB")
    if not above:
        return ["Beside the step: the model load and the checkpoint save peak below every method's step "
                "(--method M --json: other_peaks)"]
    return ["Beside the step, above it: " + "; ".join(above)]


def render(plan: Plan, fmt: str = "text") -> str:
    """The whole text answer, its tables in ``fmt``; with ``csv``, the main table alone."""
    if fmt == "csv":
        return primary_csv(plan)
    gpu, model = plan.gpu, plan.model
    out = [model_line(model)]
    if gpu is not None:
        out.append(f"GPU: {gpu.display_name}, {gib(gpu.usable_memory_bytes)} GiB usable of {gib(gpu.memory_bytes)} GiB")
    out += [setup_line(plan), ""]
    results = list(plan.methods.values())
    if not plan.single:
        out.append("Peak memory per GPU, GiB (2**30 bytes), by component at each method's peak phase:")
        out.append(plan_table(results, gpu, fmt))
        if plan.setup.gpus > 1:
            out.append(f"(components are one unsharded replica's; peak/GPU shards weights, gradients and "
                       f"optimizer states over {plan.setup.gpus} GPUs)")
        out += _beyond_steps(results)
    else:
        r = plan.method
        est = r.estimate
        out.append(f"{est.method.title}: {est.trainable_params:,} trainable parameters ({est.trainable_percent:.3f}%), "
                   f"saves {est.saved_file_bytes / MIB:,.1f} MiB ({est.method.saved_kind})")
        spread = r.spread or r.parallel
        if r.parallel is not None:
            par = r.parallel
            where = ""
            if par.stage != "only":
                stages = ", ".join(f"{k} {gib(v)} GiB" for k, v in (par.stages or {}).items())
                where = f", the {par.stage} pipeline stage (the worst of {stages})"
            out.append(f"Memory per GPU by training phase, {par.layout.describe()}{where}, GiB (2**30 bytes):")
            out.append(phase_table(par.phases, par.phase, fmt))
        elif spread is None:
            out.append("Memory by training phase, GiB (2**30 bytes):")
            out.append(phase_table(est.phases, est.peak_phase, fmt))
        else:
            p = spread.placement
            out.append(f"Memory per GPU by training phase on {p.gpus} GPU{'s' if p.gpus > 1 else ''} ({p.describe()}), "
                       "GiB (2**30 bytes):")
            out.append(phase_table(spread.phases, spread.phase, fmt))
            if spread.host_bytes_per_node:
                out.append(f"Host memory: {gib(spread.host_bytes_per_node)} GiB per node")
        tools = r.tools_per_gpu
        if tools:
            paged = tools["paged_state_bytes"]
            out.append(f"What the tools will say at the peak{' per GPU' if spread else ''}: allocated "
                       f"{gib(tools['allocated_bytes'])} GiB (torch.cuda.max_memory_allocated), reserved "
                       f"{gib(tools['reserved_bytes'])} GiB, device used {gib(tools['device_used_bytes'])} ± "
                       f"{gib(tools['band_bytes'])} GiB (nvidia-smi)")
            if paged:
                out.append(f"Paged optimizer: {gib(paged)} GiB of states in CUDA unified memory, which nvidia-smi counts "
                           "while resident and max_memory_allocated / max_memory_reserved never do")
        out += _beyond_step(r)
        if gpu is not None:
            n = r.gpus_needed
            if r.fits:
                verdict = "fits"
            elif n:
                verdict = f"needs {n} GPUs (FSDP full shard" + (", with gradient checkpointing)" if
                                                                r.gpus_needed_checkpointing else ")")
            else:
                verdict = "does not fit at any GPU count"
            if r.parallel is not None and not r.fits:
                # the count beside is data parallelism's, not this layout's
                verdict = f"this layout does not fit; without model parallelism it {verdict}"
            what = "peak per GPU" if spread else "peak"
            peak, usable = gib(r.peak_bytes_per_gpu), gib(gpu.usable_memory_bytes)
            if peak == usable:      # a verdict on figures that round alike: show the difference
                peak, usable = f"{r.peak_bytes_per_gpu / GIB:.3f}", f"{gpu.usable_memory_bytes / GIB:.3f}"
            out.append(f"On {gpu.name}: {what} {peak} GiB of {usable} GiB usable: {verdict}")
    for r in results:
        if r.estimate is None:
            out.append(f"  {r.method.name}: not estimated: {r.error}")
    if plan.placements:
        out.append("")
        out.append(f"Across {gpu.name} GPUs ({plan.gpus_per_node} per node), the fewest that hold the step for each "
                   f"sharding{plan.placements_note}:")
        rows: dict[tuple, list[str]] = {}
        for o in plan.placements:   # zero3 and fsdp hold the same bytes: one row
            key = (o.placement.offload, o.placement.gpus, o.placement.nodes, gib(o.peak_bytes),
                   gib(o.host_bytes_per_node), o.phase)
            rows.setdefault(key, []).append(o.placement.strategy)
        out.append(tabulate([[" / ".join(names), *key] for key, names in rows.items()],
                            ["sharding", "offload", "GPUs", "nodes", "GiB per GPU", "host GiB per node", "peak phase"],
                            fmt))
    if plan.layouts:
        out.append("")
        out.append(f"Model-parallel layouts on {plan.layouts[0].layout.gpus} x {gpu.name} (the fewest whole nodes "
                   f"that hold the step; least model parallelism first){plan.placements_note}:")
        out.append(tabulate([[x.layout.tp, x.layout.pp, x.layout.cp, x.layout.ep, x.layout.dp, x.layout.strategy,
                              gib(x.peak_bytes), x.stage, x.phase] for x in plan.layouts],
                            ["TP", "PP", "CP", "EP", "DP", "sharding", "GiB per GPU", "worst stage", "peak phase"], fmt))
    if not plan.placements and plan.placements is not None and not plan.method.fits and not plan.layouts:
        out.append(f"No sharding, offload or model-parallel layout holds this step on {gpu.name} at any count up "
                   "to 4096 GPUs (1024 with model parallelism): enable --grad-ckpt, shorten the sequence or lower "
                   "the batch.")
    if plan.training is not None:
        t = plan.training
        cost = "" if t.cost_usd is None else f", about ${t.cost_usd:,.0f} at {gpu.name}'s indicative price ({gpu.price_date})"
        hours = "unknown (no bf16/fp16 peak in the catalog)" if t.hours is None else f"{t.hours:,.1f} h"
        out.append(f"Training {t.tokens:,} tokens on {t.gpus} x {gpu.name} at {100 * t.mfu:.0f}% of peak: {hours}{cost}")
    for name, value in (plan.largest or {}).items():
        what = "micro batch" if name == "batch_size" else "sequence length"
        if value is None:
            out.append(f"Largest {what} that fits one {gpu.name}: none (1 does not fit)")
        else:
            out.append(f"Largest {what} that fits one {gpu.name}: {value:,} (the next one up does not fit)")
    if plan.suggestions is not None:
        out += _suggestions(plan, fmt)
    rec = plan.recommendation
    if rec is not None:
        out.append("")
        if rec.method == "none":
            out.append(f"Recommended: no fine-tuning ({rec.reason})")
        else:
            out.append(f"Recommended: {rec.method}" + (f" r={rec.lora_rank}" if rec.lora_rank else "")
                       + f" ({rec.reason})")
        if rec.rules:
            out.append("  why this method: " + "; ".join(rec.rules) + (f" [{', '.join(rec.sources)}]" if rec.sources else ""))
    if plan.setup.device == "cuda" and (gpu is not None or plan.calibration is not None):
        if plan.calibration is not None:
            out.append(f"Calibration: {plan.calibration.describe()}")
        else:
            where = f"measured on {gpu.name}" if gpu is not None else "given"
            out.append(f"Calibration: none {where}; documented defaults (CUDA context 512 MiB, allocator reserve 5%), "
                       "band ±10% (uncalibrated)")
    for note in plan.notes:
        out.append(f"Note: {note}")
    if rec is not None and rec.method != "none":
        out.append("* the recommended method")
    if plan.assumed:
        out.append("Assumed, not chosen (change with the option named):")
        for i, k in enumerate(plan.assumed, 1):
            words, option = ASSUMED[k]
            out.append(f"  [{i}] {words} {getattr(plan.setup, k)} ({option})")
    return "\n".join(out)


def primary_csv(plan: Plan) -> str:
    """The answer's main table as CSV: the suggestions, else one method's phases, else the methods."""
    if plan.suggestions is not None:
        return _suggestions(plan, "csv")[2]
    if plan.single:
        r = plan.method
        spread = r.parallel or r.spread
        phases, peak = (spread.phases, spread.phase) if spread is not None else (r.phases, r.estimate.peak_phase)
        return phase_table(phases, peak, "csv")
    return plan_table(list(plan.methods.values()), plan.gpu, "csv")
