"""Tables for people and JSON for programs, from the same result objects.

Bytes stay ints until here; tables print GiB (2**30 bytes) with one decimal and say so.
"""

from __future__ import annotations

import json
from typing import Any

from planner.breakdown import CATEGORIES
from planner.catalog import GPU, ModelEntry
from planner.estimate import PHASES, Estimate

GIB = 2**30
LABELS = {
    "weights": "weights",
    "quantization_state": "quant state",
    "gradients": "gradients",
    "optimizer_states": "optimizer",
    "activations": "activations",
    "logits_loss": "logits/loss",
    "temporaries": "temporaries",
    "overhead": "overhead",
}


def tabulate(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain text table: left-aligned columns, a dashed rule under the headers.

    (Written here rather than imported: tabulate 0.10 pulls in importlib.metadata, a quarter of the
    planner's cold-start budget.)
    """
    import click

    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    # pad by the visible width: ANSI colour codes take no room on the screen
    widths = [max(len(click.unstyle(r[i])) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c + " " * (w - len(click.unstyle(c))) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def model_line(model: ModelEntry) -> str:
    s = model.shape
    src = f" ({model.hf_id})" if model.hf_id else f" (from {model.source})" if model.source != "preset" else ""
    return (
        f"Model: {model.name}{src}, {s.model_type}, {s.parameter_count:,} parameters, "
        f"{s.num_layers} layers, hidden {s.hidden_size}, vocab {s.vocab_size}"
    )


def setup_line(est: Estimate) -> str:
    st = est.setup
    if st.grad_ckpt is None and st.method == "qlora":
        ckpt = "on (peft's prepare_model_for_kbit_training enables it)"
    elif st.grad_ckpt is None:
        ckpt = "off (on for qlora, as peft's prepare_model_for_kbit_training does)"
    else:
        ckpt = "on" if st.grad_ckpt else "off"
    gpus = f", {st.gpus} GPUs with fully sharded states" if st.gpus > 1 else ""
    return (
        f"Setup: seq {st.seq_len}, batch {st.batch_size}, {st.precision}, {st.optimizer}, attention {st.attention} "
        f"({st.device}), gradient checkpointing {ckpt}{gpus}"
    )


def _styled() -> bool:
    """Colour only for a terminal, and never where NO_COLOR is set (no-color.org)."""
    import os
    import sys

    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def fit_cell(fits: bool, needs: int | None) -> str:
    text = "✓" if fits else (f"needs {needs}" if needs else "✗")
    if not _styled():
        return text
    import click

    return click.style(text, fg="green" if fits else ("yellow" if needs else "red"))


def plan_table(rows: list[dict[str, Any]], gpu: GPU | None) -> str:
    headers = ["method", "trainable", "weights", "quant", "grads", "optim", "activ", "logits", "temps", "overhead", "peak/GPU", "saves"]
    if gpu is not None:
        headers.append(f"fits {gpu.name}")
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["method"], "-", *(["-"] * 10), *(["n/a"] if gpu else [])][: len(headers)])
            continue
        b = r["peak_breakdown"]
        line = [
            ("* " if r.get("recommended") else "") + r["method"],
            f"{count(r['trainable_parameters'])} ({r['trainable_percent']:.2f}%)",
            gib(b["weights"]), gib(b["quantization_state"]), gib(b["gradients"]), gib(b["optimizer_states"]),
            gib(b["activations"]), gib(b["logits_loss"]), gib(b["temporaries"]), gib(b["overhead"]),
            gib(r["peak_bytes_per_gpu"]), gib(r["saved_bytes"]),
        ]
        if gpu is not None:
            line.append(fit_cell(r["fits"], r["gpus_needed"]))
        table.append(line)
    return tabulate(table, headers)


def phase_table(est: Estimate) -> str:
    rows = []
    for c in CATEGORIES:
        rows.append([LABELS[c], *(gib(getattr(est.phases[p], c)) for p in PHASES)])
    rows.append(["total", *(gib(est.phases[p].total) for p in PHASES)])
    headers = ["GiB", *(p + (" (peak)" if p == est.peak_phase else "") for p in PHASES)]
    return tabulate(rows, headers)


def to_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=False)
