"""Calibration: the framework overhead an analytic model cannot know, fitted from measurements.

Only these are fitted, never the component formulas: the kernel workspaces that go through
PyTorch's allocator (allocated minus the exact tensor peak), the caching allocator's reserve as a
linear law of the allocated peak (reserved = allocated x (1 + f) + b), and the CUDA context
(device used minus reserved). Fits are robust least squares (Huber weights, iteratively
reweighted), so one odd run does not move them. A calibration file (``data/calibration/*.json``)
is small and human-readable and keeps its residuals.

Which calibration applies: the GPU's own (the one whose torch version matches, else the newest),
else the documented defaults of ``fitplan.memory.overhead`` with their wider band, said so in the
output; another GPU's calibration only when asked for (``--calibration FILE``).

Observations come from the validator's ``cuda`` records (allocated, reserved, NVML used, CUDA
context and the exact tensor peak), or from published tables that report allocated memory beside
nvidia-smi's (``data/reference``), where the context and the reserve are fitted together as
device used = allocated x (1 + f) + c.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache

from fitplan.catalog import GPU
from fitplan.errors import PlanError
from fitplan.frozen import asdict, field, frozen
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any

SCHEMA = 1
MIN_RUNS = 3   # fewer successful GPU runs give no band worth the name
_FIELDS = {"schema", "gpu", "architecture", "torch", "transformers", "driver", "date", "source", "runs",
           "overhead", "fit", "residuals", "categories_off"}


@frozen
class Calibration:
    gpu: str
    architecture: str | None
    torch: str | None
    transformers: str | None
    driver: str | None
    date: str
    source: str
    runs: int
    overhead: Overhead
    fit: dict[str, Any] = field(default_factory=dict, compare=False)
    residuals: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    categories_off: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    path: str | None = None

    def describe(self) -> str:
        versions = ", ".join(f"{k} {v}" for k, v in (("torch", self.torch), ("transformers", self.transformers),
                                                       ("driver", self.driver)) if v)
        return f"{self.gpu} ({versions}; {self.runs} runs, {self.date}; {self.source})"

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "path"}
        out["schema"] = SCHEMA
        out["residuals"] = list(self.residuals)
        out["categories_off"] = list(self.categories_off)
        return out


def _from_json(raw: Any, path: str) -> Calibration:
    if not isinstance(raw, dict):
        raise PlanError(f"calibration {path}: must hold a JSON object")
    schema = raw.get("schema")
    if not isinstance(schema, int):
        raise PlanError(f"calibration {path}: missing or malformed 'schema'")
    if schema > SCHEMA:
        raise PlanError(f"calibration {path}: schema {schema} is newer than this fitplan reads ({SCHEMA}); upgrade fitplan")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise PlanError(f"calibration {path}: unknown field(s) {', '.join(sorted(unknown))}")
    def need(container: Any, key: str, kinds: tuple[type, ...], where: str = "") -> Any:
        if not isinstance(container, dict) or key not in container:
            raise PlanError(f"calibration {path}: missing field '{where}{key}'")
        value = container[key]
        if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and value != value):
            kind = " or ".join(k.__name__ for k in kinds)
            raise PlanError(f"calibration {path}: field '{where}{key}' must be {kind}, got {value!r}")
        return value

    o = need(raw, "overhead", (dict,))
    overhead = Overhead(
        workspace_bytes=need(o, "workspace_bytes", (int,), "overhead."),
        reserve_fraction=float(need(o, "reserve_fraction", (int, float), "overhead.")),
        reserve_bytes=need(o, "reserve_bytes", (int,), "overhead."),
        context_bytes=need(o, "context_bytes", (int,), "overhead."),
        band_fraction=float(need(o, "band_fraction", (int, float), "overhead.")),
    )
    for key in ("architecture", "torch", "transformers", "driver"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise PlanError(f"calibration {path}: field '{key}' must be a string or null, got {raw[key]!r}")
    runs = need(raw, "runs", (int,))
    if runs < 1:
        raise PlanError(f"calibration {path}: field 'runs' must be at least 1, got {runs}")
    cal = Calibration(
        gpu=need(raw, "gpu", (str,)), architecture=raw.get("architecture"), torch=raw.get("torch"),
        transformers=raw.get("transformers"), driver=raw.get("driver"), date=need(raw, "date", (str,)),
        source=need(raw, "source", (str,)), runs=runs, overhead=overhead,
        fit=dict(raw.get("fit") or {}) if isinstance(raw.get("fit") or {}, dict) else {},
        residuals=tuple(raw.get("residuals") or ()) if isinstance(raw.get("residuals") or [], list) else (),
        categories_off=tuple(raw.get("categories_off") or ()) if isinstance(raw.get("categories_off") or [], list)
        else (),
        path=str(path),
    )
    for name in ("workspace_bytes", "reserve_bytes", "context_bytes"):
        if getattr(overhead, name) < 0:
            raise PlanError(f"calibration {path}: {name} must not be negative")
    if not (0 <= overhead.reserve_fraction < 1 and 0 <= overhead.band_fraction < 1):
        raise PlanError(f"calibration {path}: reserve_fraction and band_fraction must lie in [0, 1)")
    return cal


def load_file(path: str | Path) -> Calibration:
    from fitplan.inputs import read_json

    return _from_json(read_json(os.fspath(path), "calibration"), os.fspath(path))


@lru_cache(maxsize=1)
def _found() -> tuple[tuple[Calibration, ...], tuple[str, ...]]:
    from fitplan.catalog import _data

    found, problems = [], []
    for folder in (_data("calibration"), user_dir()):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                try:
                    found.append(load_file(os.path.join(folder, name)))
                except PlanError as exc:
                    problems.append(f"{exc}; ignored")
    return tuple(found), tuple(problems)


def shipped() -> tuple[Calibration, ...]:
    """The calibrations shipped with fitplan and those ``plan calibrate`` wrote (``user_dir``)."""
    return _found()[0]


def problems() -> tuple[str, ...]:
    """Calibration files found but refused (each says why): they are ignored, and the plan says so."""
    return _found()[1]


shipped.cache_clear = _found.cache_clear  # type: ignore[attr-defined]


def _version_key(v: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in (v or "0").split(".")[:2])
    except ValueError:
        return (0,)


def pick(gpu: GPU | None, torch_version: str | None = None,
         candidates: Sequence[Calibration] | None = None) -> Calibration | None:
    """The calibration measured on ``gpu`` (matching torch major.minor if given, else the newest), or
    None: the defaults apply. Another GPU's calibration is never applied unasked, even of the same
    architecture (its CUDA context and allocator figures belong to that card and driver); give it with
    ``--calibration FILE`` to use it."""
    if gpu is None:
        return None
    same = [c for c in (shipped() if candidates is None else candidates) if c.gpu == gpu.name]
    if not same:
        return None
    if torch_version:
        want = _version_key(torch_version)
        exact = [c for c in same if _version_key(c.torch) == want]
        if exact:
            same = exact
    return max(same, key=lambda c: (_version_key(c.torch), c.date))


def overhead_for(gpu: GPU | None, torch_version: str | None = None) -> tuple[Overhead, Calibration | None]:
    cal = pick(gpu, torch_version)
    return (cal.overhead if cal else DEFAULT_OVERHEAD), cal


# ---- fitting ------------------------------------------------------------------------------


def huber_line(xs: Sequence[float], ys: Sequence[float], iterations: int = 50) -> tuple[float, float]:
    """Robust fit y = a + b x: least squares reweighted with Huber weights (k = 1.345 MAD units).

    With one point, the line through it with slope 0... returned as (y, 0).
    """
    import statistics

    n = len(xs)
    if n == 0:
        raise PlanError("nothing to fit: no usable observations")
    if n == 1 or len(set(xs)) == 1:
        return statistics.median(ys), 0.0
    w = [1.0] * n
    a = b = 0.0
    for _ in range(iterations):
        sw = sum(w)
        mx = sum(wi * x for wi, x in zip(w, xs)) / sw
        my = sum(wi * y for wi, y in zip(w, ys)) / sw
        sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(w, xs))
        sxy = sum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, xs, ys))
        b_new = sxy / sxx if sxx else 0.0
        a_new = my - b_new * mx
        residuals = [y - (a_new + b_new * x) for x, y in zip(xs, ys)]
        mad = statistics.median(abs(r) for r in residuals) or 1.0
        k = 1.345 * mad / 0.6745
        w = [1.0 if abs(r) <= k else k / abs(r) for r in residuals]
        if math.isclose(a_new, a, rel_tol=1e-12, abs_tol=1.0) and math.isclose(b_new, b, rel_tol=1e-12, abs_tol=1e-12):
            a, b = a_new, b_new
            break
        a, b = a_new, b_new
    return a, b


@frozen
class Observation:
    """One measured run: what a tool reported, in bytes (None where it did not)."""

    id: str
    tensors: int | None = None     # exact tensor peak (the validator's accounting)
    allocated: int | None = None
    reserved: int | None = None
    used: int | None = None        # device used, other processes excluded
    context: int | None = None
    categories_error: dict[str, float | None] = field(default_factory=dict)


_BYTE_FIELDS = {"tensors": "peak_bytes", "allocated": "allocated_peak_bytes", "reserved": "reserved_peak_bytes",
                "used": "nvml_peak_used_bytes", "context": "cuda_context_bytes"}


def observations_from_records(records: Iterable[dict[str, Any]], where: str = "records") -> list[Observation]:
    """The successful GPU runs of validator records as observations; every byte field checked.

    ``records`` may be (line, record) pairs, so that an error names the line.

    Raises:
        PlanError: a byte field that is not a non-negative whole number, naming the file, line and field.
    """
    out = []
    for item in records:
        line, r = item if isinstance(item, tuple) else (None, item)
        m = r.get("measurement") if isinstance(r.get("measurement"), dict) else {}
        if r.get("outcome") != "ok" or m.get("mode") != "cuda":
            continue
        at = f"{where} line {line}" if line is not None else where
        values = {}
        for name, key in _BYTE_FIELDS.items():
            v = m.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise PlanError(f"{at}: field 'measurement.{key}' must be a whole number of bytes, 0 or more, "
                                f"got {v!r}")
            values[name] = v
        if values["allocated"] is None:
            raise PlanError(f"{at}: a cuda run needs 'measurement.allocated_peak_bytes'")
        errors = (r.get("errors_percent") or {}).get("categories", {})
        out.append(Observation(id=str(r.get("key")), categories_error=errors if isinstance(errors, dict) else {},
                               **values))
    return out


def fit(observations: Sequence[Observation]) -> tuple[Overhead, dict[str, Any], list[dict[str, Any]]]:
    """Fit the overhead quantities; returns them, a description of the fit, and the residuals."""
    import statistics

    description: dict[str, Any] = {"method": "huber-irls"}
    workspace = 0
    pairs = [(o.allocated, o.tensors) for o in observations if o.allocated is not None and o.tensors is not None]
    if pairs:
        workspace = max(0, int(statistics.median(a - t for a, t in pairs)))
        description["workspace_from"] = len(pairs)
    with_reserved = [o for o in observations if o.allocated is not None and o.reserved is not None]
    with_used = [o for o in observations if o.allocated is not None and o.used is not None]
    residuals: list[dict[str, Any]] = []
    if with_reserved:
        a, b = huber_line([o.allocated for o in with_reserved], [o.reserved for o in with_reserved])
        reserve_fraction, reserve_bytes = max(0.0, b - 1.0), max(0, int(a))
        contexts = [o.context for o in observations if o.context is not None]
        if contexts:
            context = int(statistics.median(contexts))
        else:
            pairs_ctx = [o.used - o.reserved for o in observations if o.used is not None and o.reserved is not None]
            context = int(statistics.median(pairs_ctx)) if pairs_ctx else DEFAULT_OVERHEAD.context_bytes
        description.update(law="reserved = allocated * (1 + f) + b; used = reserved + context", reserve_from=len(with_reserved))
    elif with_used:
        # only allocated and device used are known: fit the reserve and the context together
        a, b = huber_line([o.allocated for o in with_used], [o.used for o in with_used])
        reserve_fraction, reserve_bytes, context = max(0.0, b - 1.0), 0, max(0, int(a))
        description.update(law="used = allocated * (1 + f) + context (reserve and context fitted together)",
                           used_from=len(with_used))
    else:
        raise PlanError("no observation has both an allocated and a reserved or device-used figure to fit")
    overhead = Overhead(workspace_bytes=workspace, reserve_fraction=round(reserve_fraction, 6),
                        reserve_bytes=reserve_bytes, context_bytes=context)
    rel = []
    for o in observations:
        if o.allocated is None:
            continue
        tensors = o.allocated - overhead.workspace_bytes
        for kind, measured in (("reserved", o.reserved), ("used", o.used)):
            if measured is None:
                continue
            predicted = overhead.reserved(tensors) if kind == "reserved" else overhead.device_used(tensors)
            err = 100.0 * (predicted - measured) / measured
            rel.append(abs(err) / 100.0)
            residuals.append({"id": o.id, "kind": kind, "measured_bytes": measured, "predicted_bytes": predicted,
                              "error_percent": round(err, 3)})
    band = sorted(rel)[max(0, math.ceil(0.9 * len(rel)) - 1)] if rel else DEFAULT_OVERHEAD.band_fraction
    overhead = Overhead(workspace_bytes=overhead.workspace_bytes, reserve_fraction=overhead.reserve_fraction,
                        reserve_bytes=overhead.reserve_bytes, context_bytes=overhead.context_bytes,
                        band_fraction=round(min(max(band, 0.01), 0.99), 4))
    return overhead, description, residuals


def categories_off(observations: Sequence[Observation], limit: float = 5.0) -> list[dict[str, Any]]:
    """Runs whose planner categories miss the measurement by more than ``limit`` percent: planner
    bugs to fix, reported rather than absorbed into the calibration."""
    out = []
    for o in observations:
        bad = {k: v for k, v in o.categories_error.items() if v is None or abs(v) > limit}
        if bad:
            out.append({"id": o.id, "categories_error_percent": bad})
    return out


def write(cal: Calibration, path: str | Path) -> Path:
    """Write a calibration file atomically (temporary file, fsync, rename), after reading it back as
    the planner will: a file the planner would refuse is never written."""
    from fitplan.atomic import write_atomic

    data = cal.to_json()
    _from_json(json.loads(json.dumps(data)), os.fspath(path))   # raises PlanError: nothing is written
    if os.path.isdir(os.fspath(path)):
        raise PlanError(f"--out {path}: is a folder; give the calibration file's name")
    try:
        path = write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    except OSError as exc:
        raise PlanError(f"calibration {path}: cannot be written ({exc.strerror or exc})") from None
    shipped.cache_clear()
    return path


def user_dir() -> str:
    """Where ``plan calibrate`` writes and ``plan`` also looks: ``$FITPLAN_HOME/calibration``, else
    ``$XDG_DATA_HOME/fitplan/calibration``, else ``~/.local/share/fitplan/calibration`` (never the
    installed package unless ``--out`` says so)."""
    home = os.environ.get("FITPLAN_HOME")
    if home:
        return os.path.join(home, "calibration")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "fitplan", "calibration")


def calibrate(records: Sequence[str], use_reference: bool = False, gpu_name: str | None = None,
              out: str | Path | None = None) -> tuple[Calibration, Path]:
    """Fit a calibration from validator records (JSONL files of ``cuda`` runs) or, with
    ``use_reference``, from the published rows; write it to ``out`` (default:
    ``data/calibration/<gpu>-torch<version>.json``). Returns the calibration and where it went."""
    import datetime as dt
    from pathlib import Path

    from fitplan import reference
    from fitplan.catalog import resolve_gpu
    from fitplan.records import cuda_runs, read_lines

    if not records and not use_reference:
        raise PlanError("give validator records (JSONL files from `plan validate --mode cuda`) or --reference")
    off: list[dict[str, Any]] = []
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
        observations, cuda = [], []
        for path in records:
            lines = read_lines(path, strict=True)
            observations += observations_from_records(lines, f"records file {path}")
            cuda += cuda_runs([r for _, r in lines])
        if not cuda:
            raise PlanError("the records hold no successful cuda-mode run to fit (cpu and fake runs have no allocator)")
        if len(cuda) < MIN_RUNS:
            raise PlanError(f"the records hold {len(cuda)} successful cuda run(s); a fit needs at least {MIN_RUNS} "
                            "(run the calibration sweep)")
        gpu = resolve_gpu(gpu_name) if gpu_name else gpu_from_device_names(
            {(r.get("device") or {}).get("gpu") for r in cuda})
        off = categories_off(observations)
        versions = cuda[0].get("versions") or {}
        provenance = {"torch": versions.get("torch"), "transformers": versions.get("transformers"),
                      "driver": (cuda[0].get("device") or {}).get("driver"), "source": ", ".join(records)}
    overhead, description, residuals = fit(observations)
    cal = Calibration(
        gpu=gpu.name, architecture=gpu.architecture, torch=provenance["torch"], transformers=provenance["transformers"],
        driver=provenance["driver"], date=dt.date.today().isoformat(), source=provenance["source"],
        runs=len(observations), overhead=overhead, fit=description, residuals=tuple(residuals),
        categories_off=tuple(off),
    )
    torch_tag = (provenance["torch"] or "unknown").split("+")[0]
    path = Path(out) if out else Path(user_dir()) / f"{gpu.name}-torch{torch_tag}.json"
    return cal, write(cal, path)


def gpu_from_device_names(names: set) -> GPU:
    """The catalog GPU whose display name best matches what torch reported."""
    from fitplan.catalog import gpu_catalog

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


def summary_text(cal: Calibration, path: Path) -> str:
    """What ``plan calibrate`` prints."""
    from fitplan.units import MIB

    o = cal.overhead
    lines = [f"Calibration for {cal.gpu} from {cal.runs} runs written to {path}",
             f"  workspaces {o.workspace_bytes / MIB:,.0f} MiB; reserve {100 * o.reserve_fraction:.1f}% + "
             f"{o.reserve_bytes / MIB:,.0f} MiB; CUDA context {o.context_bytes / MIB:,.0f} MiB; "
             f"band ±{100 * o.band_fraction:.1f}% ({cal.fit.get('law')})"]
    errs = sorted(abs(r["error_percent"]) for r in cal.residuals)
    if errs:
        lines.append(f"  residuals: median {errs[len(errs) // 2]:.1f}%, worst {max(errs):.1f}%")
    if cal.categories_off:
        lines.append(f"  {len(cal.categories_off)} runs have planner categories off by more than 5% "
                     "(planner bugs, not absorbed):")
        for item in cal.categories_off[:10]:
            lines.append(f"    {item['id']}: {item['categories_error_percent']}")
    return "\n".join(lines)
