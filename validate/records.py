"""Validation records: one JSON object per run, in a JSONL file that is never left half-written.

Each record holds the settings, the planner's estimate, the measurement (or the outcome that
prevented one: out of memory, an error, a setting the method refuses), the device, the library
versions and the date. Appending rewrites the file to a temporary neighbour, syncs it and renames
it over the original, so a sweep killed at any moment leaves the previous complete file; reading
skips a line that does not parse rather than failing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

SCHEMA = 1
SHARED = ("parameters", "gradients", "optimizer_states", "activations", "temporaries", "other")


def settings_key(settings: dict[str, Any]) -> str:
    """A stable identity for a run's settings: what a resumed sweep compares."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", None)
        except Exception:  # noqa: BLE001 - a missing or broken library is recorded as absent
            out[name] = None
    from planner import __version__

    out["fitplan"] = __version__
    return out


def device_info(mode: str) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": mode, "machine": platform.machine(), "python": platform.python_version()}
    if mode == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, total_memory_bytes=int(props.total_memory),
            cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}",
        )
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # noqa: BLE001
            info["driver"] = None
    else:
        info["cpu_count"] = os.cpu_count()
    return info


def errors_percent(estimate: dict[str, int], measured: dict[str, int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in SHARED:
        m, e = measured.get(k, 0), estimate.get(k, 0)
        out[k] = round(100.0 * (e - m) / m, 3) if m else (0.0 if e == 0 else None)
    return out


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file (a line that does not parse is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record atomically: write the whole file anew beside it, fsync, rename over it."""
    from planner.atomic import write_atomic

    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_atomic(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())
