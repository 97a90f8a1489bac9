"""`plan validate`: one run, estimate beside measurement; or a sweep of runs into a JSONL file.

Imported only when the subcommand runs: this is where torch comes in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from planner.errors import PlanError
from planner.render import tabulate
from validate.records import SHARED

MIB = 2**20
MODES = ("auto", "cuda", "cpu", "fake")


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


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
    for k in SHARED:
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


def validate_command(settings: dict[str, Any], mode: str, sweep: str | None, out: str | None, as_json: bool,
                     plot_path: str | None = None) -> None:
    from validate import run as runner
    from validate.measure import cuda_available

    _quiet_libraries()
    if mode == "cuda" and not cuda_available():
        raise PlanError("--mode cuda needs an NVIDIA GPU with CUDA, and torch sees none here; use --mode cpu or fake")
    if sweep:
        if not out:
            raise PlanError("--sweep needs --out FILE.jsonl for the records")
        made, skipped = runner.run_sweep(sweep, out, progress=not as_json)
        records = runner.read_records(out)
        summary = {"sweep": sweep, "out": out, "runs_made": made, "runs_already_present": skipped,
                   "records": len(records)}
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            from collections import Counter

            counts = Counter(r.get("outcome") for r in records)
            click.echo(f"{made} runs made, {skipped} already in {out}; outcomes: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return
    if settings.get("model") is None:
        raise PlanError("missing --model (or --sweep FILE): e.g. plan validate --model llama-3.2-1b --method lora")
    settings["mode"] = mode
    if plot_path:
        from planner.plot import _check_path

        _check_path(plot_path)  # a bad name fails before the run, not after
    record = runner.validate_one(settings, Path.cwd())
    if out:
        runner.append_record(out, record)
    if plot_path:
        from planner.plot import validation_chart

        validation_chart(record, plot_path)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        click.echo(render(record))
