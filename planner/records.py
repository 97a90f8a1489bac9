"""Validation records: the one owner of their format, which the validator writes and calibration,
pictures and reports read.

One JSON object per run, in a JSONL file that is never left half-written. Each record holds the
settings, the planner's estimate, the measurement (or the outcome that prevented one: out of
memory, an error, a setting the method refuses), the device, the library versions and the date.
Appending rewrites the file to a temporary neighbour, syncs it and renames it over the original,
so a run killed at any moment leaves the previous complete file; reading skips a line that does
not parse rather than failing.

Fields (schema 1): ``schema``, ``key`` (a hash of the settings), ``settings``, ``date``,
``versions``, ``mode``, ``device``, ``outcome`` (``ok``, ``oom``, ``skipped``, ``error``,
``unmeasurable``), ``error``, ``estimate`` (``peak_bytes``, ``tensor_peak_bytes``, ``peak_phase``,
``categories`` by shared category, ``breakdown`` by fine category), ``measurement`` (``mode``,
``peak_bytes``, ``peak_phase``, ``categories``, ``steps``, ``duration_s``; on a GPU also
``allocated_peak_bytes``, ``reserved_peak_bytes``, ``nvml_peak_used_bytes``,
``cuda_context_bytes``), ``errors_percent`` (``peak``, ``categories``), ``duration_s``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

SCHEMA = 1


def settings_key(settings: dict[str, Any]) -> str:
    """A stable identity for a run's settings: what a resumed sweep compares."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    from fitplan.atomic import write_atomic

    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_atomic(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())


def cuda_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The successful GPU measurements among ``records``."""
    return [r for r in records if (r.get("measurement") or {}).get("mode") == "cuda" and r.get("outcome") == "ok"]
