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
import os

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any

SCHEMA = 1


def settings_key(settings: dict[str, Any]) -> str:
    """A stable identity for a run's settings: what a resumed sweep compares."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_lines(path: str | Path, strict: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every record of a JSONL file (bounded in size).

    ``strict``: a line that is not a JSON object is an error naming the file and the line (what
    calibration reads); otherwise it is skipped (a sweep resuming after a torn last line).
    """
    from fitplan.errors import PlanError
    from fitplan.inputs import MAX_TABLE_BYTES, parse_json, read_text

    text = read_text(os.fspath(path), "records file", MAX_TABLE_BYTES)
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line, "records file", f"{os.fspath(path)} line {n}")
        except PlanError as exc:
            if strict:
                raise PlanError(f"{exc} (records are JSON Lines: one JSON object per line)") from None
            continue
        if isinstance(record, dict):
            out.append((n, record))
        elif strict:
            raise PlanError(f"records file {os.fspath(path)} line {n}: a record is a JSON object, got "
                            f"{type(record).__name__} (records are JSON Lines: one object per line)")
    return out


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file; none if it does not exist (a line that does not parse
    is skipped)."""
    if not os.path.exists(os.fspath(path)):
        return []
    return [r for _, r in read_lines(path)]


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record atomically: write the whole file anew beside it, fsync, rename over it."""
    from pathlib import Path

    from fitplan.atomic import write_atomic

    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_atomic(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())


def cuda_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The successful GPU measurements among ``records``."""
    return [r for r in records if (r.get("measurement") or {}).get("mode") == "cuda" and r.get("outcome") == "ok"]
