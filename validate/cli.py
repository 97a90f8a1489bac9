"""`plan validate`: one run, estimate beside measurement; or a sweep of runs into a JSONL file.

Imported only when the subcommand runs: this is where torch comes in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from fitplan.breakdown import SHARED_CATEGORIES
from fitplan.errors import PlanError
from fitplan.render import tabulate
from fitplan.units import mib as _mib
from fitplan.validate.env import quiet_libraries

MODES = ("auto", "cuda", "cpu", "fake")


def render(record: dict[str, Any]) -> str:
    s = record["settings"]
    lines = [f"Validated {s['model']}: {s.get('method')}, seq {s.get('seq_len')}, batch {s.get('batch_size')}, "
             f"{s.get('precision')}, {s.get('optimizer')}, attention {s.get('attention')}, "
             f"checkpointing {'on' if s.get('grad_ckpt') else 'off' if s.get('grad_ckpt') is not None else 'default'}"]
    outcome = record["outcome"]
    if outcome != "ok":
        lines.append(f"Outcome: {outcome}: {record.get('error')}")
        return "\n".join(lines)
    m, e, err = record["measurement"], record["estimate"], record["errors_percent"]
    if "ranks" in m:
        lines.append(f"Measured on {len(m['ranks'])} ranks with FSDP2 ({m['mode']}), {m['steps']} steps, in "
                     f"{m['duration_s']:.1f} s; the planner's estimate for {e['placement']}, per rank")
        rows = [[r["rank"], _mib(e["peak_bytes_per_rank"]), _mib(r["peak_bytes"]), f"{pct:+.2f}%"]
                for r, pct in zip(m["ranks"], err["ranks"])]
        lines.append(tabulate(rows, ["rank", "estimate MiB", "measured MiB", "error"]))
        return "\n".join(lines)
    how = {"cuda": "on the GPU (allocator statistics and NVML)", "cpu": "on the CPU, real tensors, exact accounting",
           "fake": "on fake tensors (CPU kernels), no memory used"}[m["mode"]]
    lines.append(f"Measured {how}, {m['steps']} steps, in {m['duration_s']:.1f} s" +
                 (f"; {m['notes'][0]}" if m.get("notes") else ""))
    rows = []
    for k in SHARED_CATEGORIES:
        pct = err["categories"].get(k)
        rows.append([k.replace("_", " "), _mib(e["categories"].get(k, 0)), _mib(m["categories"].get(k, 0)),
                     "-" if pct is None else f"{pct:+.1f}%"])
    rows.append(["peak (tensors)", f"{_mib(e['tensor_peak_bytes'])} ({e['peak_phase']})",
                 f"{_mib(m['peak_bytes'])} ({m['peak_phase']})", f"{err['peak']:+.2f}%"])
    lines.append(tabulate(rows, ["MiB (2**20 bytes)", "estimate", "measured", "error"]))
    if m["mode"] == "cuda":
        lines.append(f"GPU: max allocated {_mib(m['allocated_peak_bytes'])} MiB, max reserved {_mib(m['reserved_peak_bytes'])} MiB, "
                     f"NVML used {_mib(m['nvml_peak_used_bytes'])} MiB (CUDA context {_mib(m['cuda_context_bytes'])} MiB)")
    return "\n".join(lines)


# what `plan validate` runs where an option is not given (its --help says the same)
DEFAULTS = {"method": "lora", "seq_len": 512, "batch_size": 1, "optimizer": "adamw", "attention": "sdpa"}


def settings_from(values: dict[str, Any], mode: str, steps: int, nproc: int, sharding: str | None) -> dict[str, Any]:
    """The run's settings (a record's ``settings``) from the command line's values, checked."""
    from fitplan.methods import NAMES
    from fitplan.optimizers import NAMES as OPTIMIZERS
    from fitplan.planning import _choice
    from fitplan.setup import ATTENTIONS, PRECISIONS, QUANTS

    mode = _choice("mode", mode, MODES)
    if steps < 2:
        raise PlanError("--steps must be at least 2: the optimizer's state appears at the first")
    if nproc < 1:
        raise PlanError(f"nproc must be positive, got {nproc}")
    for name in ("seq_len", "batch_size", "lora_rank", "adapter_size", "num_virtual_tokens"):
        if values.get(name) is not None and values[name] <= 0:
            raise PlanError(f"--{name.replace('_', '-')} must be positive, got {values[name]}")
    v = {k: (DEFAULTS.get(k) if values.get(k) is None else values[k]) for k in set(values) | set(DEFAULTS)}
    settings: dict[str, Any] = {
        "model": v.get("model"), "method": _choice("method", v["method"], NAMES),
        "seq_len": v["seq_len"], "batch_size": v["batch_size"],
        "precision": _choice("precision", v.get("precision") or ("fp32" if mode == "cpu" else "bf16"), PRECISIONS),
        "optimizer": _choice("optimizer", v["optimizer"], OPTIMIZERS), "grad_ckpt": v.get("grad_ckpt"),
        "attention": _choice("attention implementation", v["attention"], ATTENTIONS), "steps": steps,
    }
    optional = {"lora_rank": None, "lora_targets": None, "lora_dropout": None, "adapter_size": None,
                "num_virtual_tokens": None, "prefix_projection": None, "double_quant": None, "kbit_upcast": None,
                "loss": None, "adapter_dtype": None, "lora_alpha": None, "modules_to_save": None,
                "optimizer_in_backward": None}
    for k in optional:
        if v.get(k) is not None:
            settings[k] = v[k]
    if v.get("quant") is not None:
        settings["quant"] = _choice("quantization", v["quant"], QUANTS)
    if v.get("transformers") is not None:
        settings["transformers_major"] = v["transformers"]
    if nproc > 1:
        if mode not in ("auto", "cpu", "cuda"):
            raise PlanError("--nproc runs real ranks: use --mode cpu (gloo) or cuda (NCCL)")
        settings.update(nproc=nproc, sharding=_choice("sharding", sharding or "fsdp", ("fsdp",)))
    elif sharding:
        raise PlanError("--sharding needs --nproc 2 or more")
    return settings


def validate_command(values: dict[str, Any], mode: str, steps: int = 2, nproc: int = 1, sharding: str | None = None,
                     sweep: str | None = None, out: str | None = None, as_json: bool = False,
                     plot_path: str | None = None) -> None:
    """`plan validate`: one run (estimate beside measurement), or a sweep into a JSONL file."""
    settings = settings_from(values, mode, steps, nproc, sharding)
    mode = mode.strip().lower()
    if settings.get("model") is not None and not sweep:
        from fitplan.catalog import resolve_model

        resolve_model(str(settings["model"]))   # an unknown model fails before torch is imported
    if sweep and not out:
        raise PlanError("--sweep needs --out FILE.jsonl for the records")
    from fitplan.validate import run as runner
    from fitplan.validate.measure import cuda_available

    quiet_libraries()
    if mode == "cuda" and not cuda_available():
        raise PlanError("--mode cuda needs an NVIDIA GPU with CUDA, and torch sees none here; use --mode cpu or fake")
    if sweep:
        if not out:
            raise PlanError("--sweep needs --out FILE.jsonl for the records")
        made, skipped = runner.run_sweep(sweep, out, progress=not as_json)
        records = runner.read_records(out)
        errors = runner.error_summary(records)
        summary = {"sweep": sweep, "out": out, "runs_made": made, "runs_already_present": skipped,
                   "records": len(records), "errors": errors}
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            from collections import Counter

            counts = Counter(r.get("outcome") for r in records)
            click.echo(f"{made} runs made, {skipped} already in {out}; outcomes: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            if errors:
                click.echo("Estimate against measurement, |error| in percent:")
                click.echo(tabulate([[k.replace("_", " "), v["runs"], f"{v['median_abs_error_percent']:.2f}",
                                      f"{v['worst_error_percent']:+.2f}", v["worst_key"]] for k, v in errors.items()],
                                    ["category", "runs", "median", "worst", "worst run (key)"]))
        return
    if settings.get("model") is None:
        raise PlanError("missing --model (or --sweep FILE): e.g. plan validate --model llama-3.2-1b --method lora")
    settings["mode"] = mode
    if plot_path:
        from fitplan.plot import check_path

        check_path(plot_path)  # a bad name fails before the run, not after
    record = runner.validate_one(settings, Path.cwd())
    if out:
        runner.append_record(out, record)
    if plot_path:
        from fitplan.plot import validation_chart

        validation_chart(record, plot_path)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        click.echo(render(record))
