"""The model and GPU catalogs in ``data/``: loaded lazily, checked on load, looked up by name or alias.

Model presets are Hugging Face ``config.json`` files kept verbatim (``data/models/<name>.json``)
plus ``data/models/index.json`` (source repository, reference parameter count, aliases). A user's
own config file goes through the same reader as a preset.
"""

from __future__ import annotations

import os
from functools import lru_cache

from fitplan.architecture import ModelShape, shape_from_config
from fitplan.errors import PlanError, unknown_choice
from fitplan.frozen import frozen, replace
from fitplan.inputs import read_json

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any


def data_dir() -> Path:
    """The installed data folder (package ``fitplan.data``, the repository's ``data/``), as a Path."""
    from pathlib import Path

    return Path(_data())


def _data(*parts: str) -> str:
    """A path inside the data folder, as a string (the planner's start does not import pathlib)."""
    import fitplan.data

    return os.path.join(os.path.dirname(fitplan.data.__file__), *parts)


def _read_json(path: str | os.PathLike, what: str) -> Any:
    return read_json(os.fspath(path), what)


# ---- models -----------------------------------------------------------------------------


@frozen
class ModelEntry:
    """A resolved model: the name shown to the user, where it came from, and its shape."""

    name: str
    source: str          # "preset" or the path of the user's config.json
    hf_id: str | None
    shape: ModelShape
    reference_parameters: int | None = None
    resolved_from: str | None = None   # the name given, where it is another checkpoint of this preset's architecture


@lru_cache(maxsize=1)
def _model_index() -> dict[str, Any]:
    path = _data("models", "index.json")
    index = _read_json(path, "model index")
    presets, aliases = index.get("presets"), index.get("aliases", {})
    if not isinstance(presets, dict) or not isinstance(aliases, dict):
        raise PlanError(f"model index {path}: needs objects 'presets' and 'aliases'")
    for alias, target in aliases.items():
        if alias in presets:
            raise PlanError(f"model index {path}: alias {alias!r} shadows a preset")
        if target not in presets:
            raise PlanError(f"model index {path}: alias {alias!r} points to unknown preset {target!r}")
    return index


def model_names() -> list[str]:
    return sorted(_model_index()["presets"])


def model_aliases() -> dict[str, str]:
    return dict(_model_index()["aliases"])


def preset_info(name: str) -> dict[str, Any]:
    return dict(_model_index()["presets"][name])


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or text.startswith((".", "/", "~")) or os.sep in text and os.path.exists(text)


def resolve_model(name_or_path: str) -> ModelEntry:
    """Find a model by preset name, alias (case-insensitive), or path to a config.json or its folder.

    Raises:
        PlanError: an unknown name (with close matches), or a path that holds no usable config.
    """
    text = str(name_or_path).strip()
    if not text:
        raise PlanError("--model is empty; give a preset name (see `plan models`) or a path to a config.json")
    index = _model_index()
    key = text.lower()
    preset = key if key in index["presets"] else index["aliases"].get(key)
    if preset is not None and not os.path.exists(text):
        entry = load_preset(preset)
        if "/" in text and text.lower() != (entry.hf_id or "").lower():
            # a Hugging Face id of another checkpoint (an instruct or distilled variant) with this architecture
            return replace(entry, resolved_from=text)
        return entry
    if text == "-" or _looks_like_path(text) or os.path.exists(text):
        return load_config_path(os.path.expanduser(text))
    if "/" in text and not os.path.exists(text):
        # a Hugging Face id the presets do not know: the planner reads no network
        import difflib

        close = difflib.get_close_matches(key, sorted(index["aliases"]), n=3, cutoff=0.6)
        hint = f" Close presets: {', '.join(close)}." if close else ""
        raise PlanError(f"unknown model {text!r}: not a preset's Hugging Face id, and fitplan downloads nothing; "
                        f"save its config.json (huggingface-cli download {text} config.json) and pass that "
                        f"path.{hint} See `plan models`.")
    raise unknown_choice("model", text, index["presets"], limit=60, also_matching=index["aliases"])


@lru_cache(maxsize=None)
def load_preset(name: str) -> ModelEntry:
    info = _model_index()["presets"][name]
    raw = _read_json(_data("models", info["file"]), f"preset {name}:")
    return ModelEntry(
        name=name,
        source="preset",
        hf_id=info.get("hf_id"),
        shape=shape_from_config(raw, name),
        reference_parameters=info.get("parameters"),
    )


def load_config_path(path: str) -> ModelEntry:
    """A model from the path of a ``config.json`` or of a folder holding one."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, "config.json")
        if not os.path.exists(candidate):
            raise PlanError(f"model folder {path} holds no config.json")
        path = candidate
    elif not os.path.lexists(path) and path != "-":
        raise PlanError(f"model config {path}: no such file (and no preset of that name; see `plan models`)")
    raw = read_json(path, "model config")
    name = raw.get("_name_or_path") if isinstance(raw, dict) else None
    name = name if isinstance(name, str) and name else path
    return ModelEntry(name=name, source=path, hf_id=None, shape=shape_from_config(raw, path))


# ---- GPUs -------------------------------------------------------------------------------

_GPU_FIELDS = {
    "name": str,
    "display_name": str,
    "vendor": str,
    "architecture": str,
    "compute_capability": (str, type(None)),
    "memory_bytes": int,
    "usable_memory_bytes": int,
    "usable_memory_source": str,
    "bf16_tflops": (int, float, type(None)),
    "fp16_tflops": (int, float, type(None)),
    "fp8_tflops": (int, float, type(None)),
    "hbm_gbps": (int, float),
    "interconnect": str,
    "interconnect_gbps": (int, float, type(None)),
    "pcie": (str, type(None)),
    "supports_bf16": bool,
    "supports_fp8": bool,
    "tdp_watts": (int, float, type(None)),
    "sources": list,
    "notes": str,
}
_GPU_OPTIONAL = {
    "price_usd_per_hour": (int, float, type(None)),
    "price_date": (str, type(None)),
    "price_source": (str, type(None)),
}


@frozen
class GPU:
    name: str
    display_name: str
    vendor: str
    architecture: str
    compute_capability: str | None
    memory_bytes: int
    usable_memory_bytes: int
    usable_memory_source: str
    bf16_tflops: float | None
    fp16_tflops: float | None
    fp8_tflops: float | None
    hbm_gbps: float
    interconnect: str
    interconnect_gbps: float | None
    pcie: str | None
    supports_bf16: bool
    supports_fp8: bool
    tdp_watts: float | None
    sources: tuple[str, ...]
    notes: str
    price_usd_per_hour: float | None = None   # indicative, on-demand, one GPU
    price_date: str | None = None
    price_source: str | None = None


def _gpu_from(raw: Any, path: str | os.PathLike) -> GPU:
    if not isinstance(raw, dict):
        raise PlanError(f"GPU file {path}: must hold a JSON object")
    unknown = set(raw) - set(_GPU_FIELDS) - set(_GPU_OPTIONAL)
    if unknown:
        raise PlanError(f"GPU file {path}: unknown field(s) {', '.join(sorted(unknown))}")
    missing = set(_GPU_FIELDS) - set(raw)
    if missing:
        raise PlanError(f"GPU file {path}: missing field(s) {', '.join(sorted(missing))}")
    for key, types in {**_GPU_FIELDS, **{k: v for k, v in _GPU_OPTIONAL.items() if k in raw}}.items():
        value = raw[key]
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise PlanError(f"GPU file {path}: field {key!r} has the wrong type ({value!r})")
    if raw.get("price_usd_per_hour") is not None and raw["price_usd_per_hour"] <= 0:
        raise PlanError(f"GPU file {path}: field 'price_usd_per_hour' must be positive or null")
    for key in ("memory_bytes", "usable_memory_bytes", "hbm_gbps"):
        if raw[key] <= 0:
            raise PlanError(f"GPU file {path}: field {key!r} must be positive")
    if raw["usable_memory_bytes"] > raw["memory_bytes"]:
        raise PlanError(f"GPU file {path}: usable_memory_bytes exceeds memory_bytes")
    if raw["name"] != os.path.splitext(os.path.basename(path))[0]:
        raise PlanError(f"GPU file {path}: name {raw['name']!r} does not match the file name")
    return GPU(**{**raw, "sources": tuple(raw["sources"])})


@lru_cache(maxsize=None)
def _gpu_file(file: str) -> GPU:
    path = _data("gpus", file)
    return _gpu_from(_read_json(path, "GPU file"), path)


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GPU]:
    out = {}
    for name in sorted(os.listdir(_data("gpus"))):
        if not name.endswith(".json") or name == "aliases.json":
            continue
        gpu = _gpu_file(name)
        out[gpu.name] = gpu
    return out


@lru_cache(maxsize=1)
def _alias_targets() -> dict[str, str]:
    """aliases.json read alone (``gpu_aliases`` checks it against the whole catalog)."""
    path = _data("gpus", "aliases.json")
    raw = _read_json(path, "GPU aliases")
    aliases = raw.get("aliases") if isinstance(raw, dict) else None
    if not isinstance(aliases, dict):
        raise PlanError(f"GPU aliases {path}: needs an object 'aliases'")
    return aliases


@lru_cache(maxsize=1)
def gpu_aliases() -> dict[str, str]:
    path = _data("gpus", "aliases.json")
    aliases = _alias_targets()
    catalog = gpu_catalog()
    for alias, target in aliases.items():
        if alias in catalog:
            raise PlanError(f"GPU aliases {path}: alias {alias!r} shadows a GPU")
        if target not in catalog:
            raise PlanError(f"GPU aliases {path}: alias {alias!r} points to unknown GPU {target!r}")
    return aliases


def resolve_gpu(name: str) -> GPU:
    """Find a GPU by catalog name or alias (case-insensitive).

    Raises:
        PlanError: an unknown name, with close matches and the list.
    """
    key = str(name).strip().lower()
    # the one file a catalog name or alias names, read alone (the cold start); the whole catalog otherwise
    target = _alias_targets().get(key, key)
    if target.replace("-", "").isalnum() and target != "aliases" and os.path.isfile(_data("gpus", f"{target}.json")):
        gpu = _gpu_file(f"{target}.json")
        if gpu.name == target:
            return gpu
    catalog = gpu_catalog()
    key = gpu_aliases().get(key, key)
    if key not in catalog:
        raise unknown_choice("GPU", name, catalog, also_matching=gpu_aliases())
    return catalog[key]


def model_listing() -> list[dict[str, Any]]:
    """Every preset with its Hugging Face id, type, parameter count and its shortest aliases."""
    by_target: dict[str, list[str]] = {}
    for alias, target in model_aliases().items():
        by_target.setdefault(target, []).append(alias)
    rows = []
    for name in model_names():
        info = preset_info(name)
        short = sorted((a for a in by_target.get(name, []) if "/" not in a), key=len)[:3]
        rows.append({"name": name, "hf_id": info.get("hf_id"), "model_type": info.get("model_type"),
                     "parameters": info.get("parameters"), "aliases": short})
    return rows


def gpu_listing() -> list[dict[str, Any]]:
    """Every catalog GPU with its memory, speed and aliases."""
    aliases = gpu_aliases()
    return [{"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes,
             "usable_memory_bytes": g.usable_memory_bytes, "bf16_tflops": g.bf16_tflops, "hbm_gbps": g.hbm_gbps,
             "interconnect": g.interconnect, "supports_bf16": g.supports_bf16, "supports_fp8": g.supports_fp8,
             "aliases": sorted(a for a, t in aliases.items() if t == g.name)} for g in gpu_catalog().values()]
