"""One validation run: the planner's estimate beside a measurement, as a record; and sweeps of them.

A sweep file (TOML) has ``[defaults]`` and one or more ``[[matrix]]`` tables whose list values are
expanded into every combination:

```toml
[defaults]
mode = "cpu"
precision = "fp32"
batch_size = 2

[[matrix]]
model = ["configs/tiny-llama.json", "configs/tiny-qwen2.json"]   # presets or paths (relative to the file)
method = ["full", "lora", "qlora", "adapter", "prefix", "prompt", "ptuning"]
seq_len = [32, 64]
grad_ckpt = [false, true]
```

Keys are the planner's option names (``method``, ``seq_len``, ``batch_size``, ``precision``,
``optimizer``, ``grad_ckpt``, ``attention``, ``lora_rank``, ``lora_targets``, ``adapter_size``,
``num_virtual_tokens``, ``prefix_projection``, ``quant``, ``double_quant``) plus ``model``,
``mode`` and ``steps``. A combination the method refuses (prefix tuning with checkpointing) is
recorded as ``skipped``; one that runs out of memory as ``oom``; any other failure as ``error``.
Re-running a sweep skips every combination whose record is already in the output file.
"""

from __future__ import annotations

import itertools
import time
import traceback
from pathlib import Path
from typing import Any

import tomllib
from fitplan.breakdown import errors_percent
from fitplan.catalog import ModelEntry, resolve_model
from fitplan.errors import PlanError
from fitplan.estimate import estimate
from fitplan.records import SCHEMA, append_record, now, read_records, settings_key
from fitplan.setup import METHOD_FIELDS, TrainingSetup
from fitplan.validate.env import device_info, library_versions

SETUP_KEYS = (
    "method", "seq_len", "batch_size", "precision", "optimizer", "grad_ckpt", "attention", "lora_rank",
    "lora_targets", "lora_dropout", "adapter_size", "num_virtual_tokens", "prefix_projection", "quant",
    "double_quant", "foreach", "kbit_upcast", "transformers_major", "loss", "adapter_dtype", "lora_alpha",
    "modules_to_save", "optimizer_in_backward", *METHOD_FIELDS,
)
RUN_KEYS = ("model", "mode", "steps", "nproc", "sharding")


def _raw_config(entry: ModelEntry) -> dict[str, Any]:
    import json

    from fitplan.catalog import data_dir, preset_info

    if entry.source == "preset":
        return json.loads((data_dir() / "models" / preset_info(entry.name)["file"]).read_text())
    return json.loads(Path(entry.source).read_text())


def setup_for(settings: dict[str, Any], mode: str) -> TrainingSetup:
    kwargs = {k: settings[k] for k in SETUP_KEYS if k in settings and settings[k] is not None}
    if "lora_targets" in kwargs and isinstance(kwargs["lora_targets"], str):
        kwargs["lora_targets"] = tuple(t for t in kwargs["lora_targets"].split(",") if t)
    elif "lora_targets" in kwargs:
        kwargs["lora_targets"] = tuple(kwargs["lora_targets"])
    if "modules_to_save" in kwargs:
        m = kwargs["modules_to_save"]
        kwargs["modules_to_save"] = tuple(t for t in m.split(",") if t) if isinstance(m, str) else tuple(m)
    # fake tensors and CPU runs take CPU kernels; the planner must model the kernel that runs
    kwargs["device"] = "cuda" if mode == "cuda" else "cpu"
    return TrainingSetup(**kwargs)


def _resolve(model: str, base: Path) -> ModelEntry:
    candidate = base / model
    if model.endswith(".json") or candidate.exists():
        return resolve_model(str(candidate if candidate.exists() else model))
    return resolve_model(model)


def validate_one(settings: dict[str, Any], base: str | Path = ".") -> dict[str, Any]:
    """Run one validation and return its record (never raises for a run that fails).

    ``settings["model"]`` is a preset, or a config path relative to ``base`` (a sweep's folder).
    """
    from fitplan.validate.measure import MeasurementError, choose_mode, is_oom, measure

    started = time.perf_counter()
    record: dict[str, Any] = {"schema": SCHEMA, "key": settings_key(settings), "settings": settings, "date": now(),
                              "versions": library_versions()}
    entry = _resolve(str(settings["model"]), Path(base))
    mode = settings.get("mode") or "auto"
    try:
        setup = setup_for(settings, "cpu" if mode in ("auto", "fake") else mode)
    except PlanError as exc:
        record.update(outcome="skipped", error=str(exc), device=device_info("cpu"))
        return record
    if mode == "auto":
        mode = choose_mode(entry.shape, setup)
        setup = setup_for(settings, mode)
    record["mode"] = mode
    record["device"] = device_info(mode)
    est = estimate(entry, setup)
    record["estimate"] = {
        "peak_bytes": est.peak_bytes,
        "tensor_peak_bytes": est.peak.tensors,
        "peak_phase": est.peak_phase,
        "categories": est.peak.shared(),
        "breakdown": est.peak.parts(),
    }
    nproc = int(settings.get("nproc") or 1)
    if nproc > 1:
        return _validate_sharded(record, entry, setup, mode, nproc, int(settings.get("steps", 2)), started)
    try:
        m = measure(_raw_config(entry), entry.shape, setup, mode, steps=int(settings.get("steps", 2)))
    except PlanError as exc:
        record.update(outcome="skipped", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a failed run is a recorded result, not a crash
        if is_oom(exc):
            record.update(outcome="oom", error=str(exc).splitlines()[0][:500])
        else:
            kind = "error" if not isinstance(exc, MeasurementError) else "unmeasurable"
            record.update(outcome=kind, error=f"{type(exc).__name__}: {exc}"[:500],
                          traceback=traceback.format_exc(limit=3)[-2000:])
    else:
        record.update(
            outcome="ok",
            measurement=m.to_dict(),
            errors_percent={
                "peak": round(100.0 * (est.peak.tensors - m.peak_bytes) / m.peak_bytes, 3) if m.peak_bytes else None,
                "categories": errors_percent(est.peak, m.breakdown),
            },
        )
    record["duration_s"] = round(time.perf_counter() - started, 3)
    return record


def _validate_sharded(record: dict[str, Any], entry: ModelEntry, setup: TrainingSetup, mode: str, nproc: int,
                      steps: int, started: float) -> dict[str, Any]:
    """FSDP2 over ``nproc`` local ranks beside the planner's per-GPU estimate for that placement."""
    from fitplan.sharding import Placement, per_gpu
    from fitplan.validate.distributed import measure_fsdp

    est = estimate(entry, setup)
    planned = per_gpu(est, Placement("fsdp", nproc))
    record["estimate"] = {"peak_bytes_per_rank": planned.per_gpu.tensors, "peak_phase": planned.phase,
                          "breakdown": planned.per_gpu.parts(), "placement": f"fsdp x{nproc}"}
    try:
        m = measure_fsdp(_raw_config(entry), entry.shape, setup, nproc, steps, use_cuda=mode == "cuda")
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        record.update(outcome="error", error=f"{type(exc).__name__}: {exc}"[:500])
    else:
        record.update(outcome="ok", measurement=m, errors_percent={
            "ranks": [round(100.0 * (planned.per_gpu.tensors - r["peak_bytes"]) / r["peak_bytes"], 3) for r in m["ranks"]],
        })
    record["duration_s"] = round(time.perf_counter() - started, 3)
    return record


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    """Expand a sweep file into the settings of every run, in order."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"sweep {path}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"sweep {path}: not valid TOML ({exc})") from None
    defaults = spec.get("defaults", {})
    matrices = spec.get("matrix", [])
    if not isinstance(defaults, dict) or not isinstance(matrices, list) or not matrices:
        raise PlanError(f"sweep {path}: needs a [defaults] table and at least one [[matrix]] table")
    allowed = set(SETUP_KEYS) | set(RUN_KEYS)
    runs: list[dict[str, Any]] = []
    for table in matrices:
        merged = {**defaults, **table}
        unknown = set(merged) - allowed
        if unknown:
            raise PlanError(f"sweep {path}: unknown key(s) {', '.join(sorted(unknown))}. Valid: {', '.join(sorted(allowed))}")
        if "model" not in merged:
            raise PlanError(f"sweep {path}: every matrix needs a model")
        # a list is an axis to expand; lora_targets is a comma-separated string ("q,v")
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in merged.items()}
        keys = list(axes)
        for values in itertools.product(*(axes[k] for k in keys)):
            runs.append(dict(zip(keys, values)))
    return runs


def run_sweep(path: str | Path, out: str | Path, progress: bool = True) -> tuple[int, int]:
    """Run every combination not yet in ``out``; returns (runs made, runs skipped as already present).

    A progress bar (tqdm, on standard error) names the run under way where ``progress`` is set.
    """
    runs = load_sweep(path)
    base = Path(path).parent
    for settings in runs:
        _resolve(str(settings["model"]), base)  # fail fast, before any run, on an unknown model
    done = {r.get("key") for r in read_records(out)}
    todo = [s for s in runs if settings_key(s) not in done]
    from tqdm import tqdm

    with tqdm(todo, desc=f"sweep {Path(path).name}", unit="run", disable=not progress, leave=False) as bar:
        for settings in bar:
            bar.set_postfix_str(f"{Path(str(settings['model'])).stem} {settings.get('method')}")
            append_record(out, validate_one(settings, base))
    return len(todo), len(runs) - len(todo)


def error_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per shared category and for the peak: the median and worst |error| (percent) over the
    successful single-process runs, and the run of the worst."""
    import statistics

    from fitplan.breakdown import SHARED_CATEGORIES

    ok = [r for r in records if r.get("outcome") == "ok" and "categories" in (r.get("errors_percent") or {})]
    out: dict[str, dict[str, Any]] = {}
    for name in ("peak", *SHARED_CATEGORIES):
        values = []
        for r in ok:
            err = r["errors_percent"]["peak"] if name == "peak" else r["errors_percent"]["categories"].get(name)
            if err is not None:
                values.append((abs(err), err, r.get("key")))
        if values:
            worst = max(values)
            out[name] = {"runs": len(values), "median_abs_error_percent": round(statistics.median(v[0] for v in values), 3),
                         "worst_error_percent": worst[1], "worst_key": worst[2]}
    return out
