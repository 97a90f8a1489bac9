"""Training stacks: the defaults each library really uses, read from ``data/stacks/NAME.json``.

A stack file names the library, the version it describes and what was read, and sets planner
options to the values that library uses when the user does not say otherwise, each with the
source file and line it comes from::

    {"name": "torchtune", "title": "torchtune", "version": "0.6.1", "read": "...",
     "defaults": {"loss": {"value": "chunked:8", "source": "recipes/configs/...yaml:71"},
                  "adapter_dtype": {"value": "bf16", "source": "...", "methods": {"qlora": "bf16"}}},
     "notes": ["..."]}

``methods`` gives a value for some methods only (TRL keeps LoRA adapters in fp32 but casts a
quantized model's to bf16). A user's option always wins over a stack's default; the plan's notes
say what the stack set and from where, and ``--json`` carries it as ``stack``.

Files are read lazily (never at import), bounded, and checked on load: an unknown key, an option a
stack may not set, or a value of the wrong type is an error naming the file and the field.
"""

from __future__ import annotations

import os

from fitplan.errors import PlanError, unknown_choice
from fitplan.frozen import frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

NAMES = ("hf", "trl", "torchtune", "litgpt", "axolotl", "unsloth", "llama-factory", "swift")
DEFAULT = "hf"   # Trainer + peft: what the planner modelled before stacks

# the options a stack may set, with the JSON type of their values
SETTABLE: dict[str, tuple[type, ...]] = {
    "precision": (str,),
    "optimizer": (str,),
    "grad_ckpt": (bool,),
    "attention": (str,),
    "lora_rank": (int,),
    "lora_alpha": (int,),
    "lora_dropout": (int, float),
    "lora_targets": (str,),
    "adapter_dtype": (str,),
    "modules_to_save": (str,),
    "quant": (str,),
    "double_quant": (bool,),
    "kbit_upcast": (bool,),
    "loss": (str,),
    "compile": (bool,),
    "optimizer_in_backward": (bool,),
    "activation_offload": (bool,),
    "packing": (str,),
}
_TOP = {"name", "title", "version", "read", "defaults", "notes"}
_DEFAULT_KEYS = {"value", "source", "methods"}


@frozen
class Default:
    """One option a stack sets: its value (per method where ``methods`` says so) and its source."""

    option: str
    value: Any
    source: str
    methods: tuple[tuple[str, Any], ...] = ()

    def for_method(self, method: str) -> Any:
        return dict(self.methods).get(method, self.value)


@frozen
class Stack:
    name: str
    title: str
    version: str
    read: str
    defaults: tuple[Default, ...]
    notes: tuple[str, ...] = ()

    def sets(self, option: str) -> bool:
        return any(d.option == option for d in self.defaults)

    def default(self, option: str) -> Default | None:
        return next((d for d in self.defaults if d.option == option), None)

    def describe(self) -> str:
        return f"{self.title} {self.version}"

    def to_dict(self, applied: dict[str, Any] | None = None) -> dict[str, Any]:
        """The stack as ``--json`` shows it; ``applied``: what it set in this plan (option -> value)."""
        return {
            "name": self.name, "title": self.title, "version": self.version, "read": self.read,
            "defaults": {d.option: {"value": d.value, "source": d.source,
                                    **({"methods": dict(d.methods)} if d.methods else {})} for d in self.defaults},
            "applied": dict(applied or {}),
            "notes": list(self.notes),
        }


def _path(name: str) -> str:
    import fitplan.data

    return os.path.join(os.path.dirname(fitplan.data.__file__), "stacks", f"{name}.json")


def _check_value(where: str, option: str, value: Any) -> None:
    kinds = SETTABLE[option]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join({str: "a string", int: "a whole number", float: "a number", bool: "true or false"}[k]
                            for k in kinds)
        raise PlanError(f"{where}: must be {names}, got {value!r}")


def parse(raw: Any, where: str) -> Stack:
    """A stack from a parsed JSON document (``where`` names it in messages)."""
    if not isinstance(raw, dict):
        raise PlanError(f"stack file {where}: must hold a JSON object")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise PlanError(f"stack file {where}: unknown key(s) {', '.join(unknown)}. Valid: {', '.join(sorted(_TOP))}")
    for key in ("name", "title", "version", "read"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise PlanError(f"stack file {where}: field {key!r} must be a non-empty string")
    defaults = raw.get("defaults")
    if not isinstance(defaults, dict):
        raise PlanError(f"stack file {where}: field 'defaults' must be an object of option -> {{value, source}}")
    out = []
    for option, entry in defaults.items():
        field_where = f"stack file {where}: defaults.{option}"
        if option not in SETTABLE:
            raise PlanError(f"{field_where}: not an option a stack sets. Valid: {', '.join(sorted(SETTABLE))}")
        if not isinstance(entry, dict) or "value" not in entry or not isinstance(entry.get("source"), str) \
                or not entry["source"].strip():
            raise PlanError(f"{field_where}: must be an object with 'value' and a non-empty 'source'")
        bad = sorted(set(entry) - _DEFAULT_KEYS)
        if bad:
            raise PlanError(f"{field_where}: unknown key(s) {', '.join(bad)}. Valid: {', '.join(sorted(_DEFAULT_KEYS))}")
        _check_value(field_where + ".value", option, entry["value"])
        methods = entry.get("methods", {})
        if not isinstance(methods, dict):
            raise PlanError(f"{field_where}.methods: must be an object of method -> value")
        for m, v in methods.items():
            _check_value(f"{field_where}.methods.{m}", option, v)
        out.append(Default(option, entry["value"], entry["source"].strip(), tuple(sorted(methods.items()))))
    notes = raw.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise PlanError(f"stack file {where}: field 'notes' must be a list of strings")
    return Stack(raw["name"], raw["title"], raw["version"], raw["read"], tuple(out), tuple(notes))


_CACHE: dict[str, Stack] = {}


def load(name: str) -> Stack:
    """The stack called ``name`` (``NAMES``); an unknown name is an error listing the valid ones."""
    key = str(name).strip().lower()
    if key not in NAMES:
        raise unknown_choice("stack", name, NAMES)
    found = _CACHE.get(key)
    if found is not None:
        return found
    from fitplan.inputs import read_json

    path = _path(key)
    stack = parse(read_json(path, "stack file"), path)
    if stack.name != key:
        raise PlanError(f"stack file {path}: field 'name' is {stack.name!r}, not {key!r} as the file name says")
    _CACHE[key] = stack
    return stack
