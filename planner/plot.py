"""Pictures: the breakdown as stacked bars against the GPU's memory (needs ``pip install ".[plot]"``).

matplotlib is imported here only, and only when a picture is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fitplan.breakdown import CATEGORIES as STACK
from fitplan.errors import PlanError
from fitplan.units import GIB, MIB

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

LABELS = {"weights": "weights", "quantization_state": "quantization state", "gradients": "gradients",
          "optimizer_states": "optimizer states", "activations": "activations", "logits_loss": "logits / loss",
          "temporaries": "temporaries", "overhead": "overhead"}
COLORS = ("#4c72b0", "#8172b2", "#dd8452", "#c44e52", "#55a868", "#64b5cd", "#ccb974", "#8c8c8c")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlanError('--plot needs matplotlib: pip install "fitplan[plot]"') from None
    return plt


def check_path(path: str | Path) -> Path:
    """A picture's path, checked before any work: its type, its folder, that it can be written."""
    import os

    path = Path(path)
    if path.is_dir():
        raise PlanError(f"--plot {path}: is a folder; give the picture's file name (.png, .svg or .pdf)")
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise PlanError(f"--plot {path}: the picture's name must end in .png, .svg or .pdf")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PlanError(f"--plot {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PlanError(f"--plot {path}: cannot be written (no permission)")
    return path


def _save(fig: Any, path: Path) -> None:
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise PlanError(f"--plot {path}: cannot be written ({exc.strerror or exc})") from None


def breakdown_chart(bars: Sequence[tuple[str, dict[str, int]]], title: str, limit_bytes: int | None,
                    limit_label: str | None, path: str | Path) -> Path:
    """One stacked bar per (label, bytes by category), with a line at the GPU's usable memory."""
    path = check_path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(bars) + 3), 4.8))
    bottoms = [0.0] * len(bars)
    x = range(len(bars))
    for category, color in zip(STACK, COLORS):
        heights = [b.get(category, 0) / GIB for _, b in bars]
        if not any(heights):
            continue
        ax.bar(x, heights, bottom=bottoms, color=color, label=LABELS[category], width=0.7)
        bottoms = [lo + h for lo, h in zip(bottoms, heights)]
    if limit_bytes:
        ax.axhline(limit_bytes / GIB, color="black", linestyle="--", linewidth=1)
        ax.text(len(bars) - 0.5, limit_bytes / GIB, f" {limit_label}", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels([label for label, _ in bars], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("GiB (2**30 bytes) per GPU")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plan_chart(plan: Any, path: str | Path) -> Path:
    """The picture of a Plan: one bar per GPU count and sharding for one method across GPUs, else one
    bar per method, against the GPU's usable memory."""
    gpu = plan.gpu
    if plan.single and plan.placements:
        bars, seen = [], set()
        for o in sorted(plan.placements, key=lambda o: o.placement.gpus):
            key = (o.placement.gpus, o.placement.offload)
            if key not in seen:
                seen.add(key)
                label = f"{o.placement.gpus} x {o.placement.strategy}" + (
                    f" +{o.placement.offload}" if o.placement.offload != "none" else "")
                bars.append((label, o.per_gpu.parts()))
        title = f"{plan.model.name}, {plan.method.method.title}: memory per GPU"
    else:
        bars = [(("★ " if r.recommended else "") + r.method.name, r.estimate.peak.parts())
                for r in plan.methods.values() if r.estimate is not None]
        title = f"{plan.model.name}: peak memory per GPU by method"
    limit = gpu.usable_memory_bytes if gpu else None
    return breakdown_chart(bars, title, limit, f"{gpu.name} usable" if gpu else None, path)


def validation_chart(record: dict[str, Any], path: str | Path) -> Path:
    """Estimate beside measurement, by the shared categories."""
    path = check_path(path)
    plt = _pyplot()
    if record.get("outcome") != "ok" or "categories" not in record.get("measurement", {}):
        raise PlanError("--plot draws a single-process validation that measured something")
    cats = list(record["measurement"]["categories"])
    est = [record["estimate"]["categories"].get(c, 0) / MIB for c in cats]
    meas = [record["measurement"]["categories"].get(c, 0) / MIB for c in cats]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(cats))
    ax.bar([i - 0.2 for i in xs], est, width=0.4, label="estimate", color="#4c72b0")
    ax.bar([i + 0.2 for i in xs], meas, width=0.4, label=f"measured ({record['measurement']['mode']})", color="#dd8452")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([c.replace("_", " ") for c in cats], rotation=20, ha="right")
    ax.set_ylabel("MiB (2**20 bytes)")
    s = record["settings"]
    ax.set_title(f"{Path(str(s['model'])).stem}, {s.get('method')}: estimate beside measurement", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
