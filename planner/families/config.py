"""Typed reads of a config.json, each failure a PlanError naming the field; helpers the families share."""

from __future__ import annotations

import math
from collections.abc import Mapping

from fitplan.errors import PlanError

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

_MISSING = object()


class Config:
    """Typed reads of a config dict, each failure a PlanError naming the field."""

    def __init__(self, raw: Mapping[str, Any], source: str):
        self.raw = raw
        self.source = source

    def int(self, *names: str, default: Any = _MISSING, allow_zero: bool = False) -> int:
        for name in names:
            if name in self.raw and self.raw[name] is not None:
                value = self.raw[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise PlanError(f"{self.source}: field {name!r} must be a positive integer, got {value!r}")
                if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
                    raise PlanError(f"{self.source}: field {name!r} must be a positive integer, got {value!r}")
                value = int(value)
                if value < 0 or (value == 0 and not allow_zero):
                    raise PlanError(f"{self.source}: field {name!r} must be a positive integer, got {value}")
                if value > 10**9:
                    raise PlanError(f"{self.source}: field {name!r} is absurdly large ({value})")
                return value
        if default is _MISSING:
            raise PlanError(f"{self.source}: missing required field {' or '.join(repr(n) for n in names)}")
        return default

    def float(self, name: str, default: float | None) -> float | None:
        value = self.raw.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlanError(f"{self.source}: field {name!r} must be a number, got {value!r}")
        return float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise PlanError(f"{self.source}: field {name!r} must be true or false, got {value!r}")
        return value


def max_positions(c: Config) -> int | None:
    """The longest sequence a RoPE model's config covers: ``max_position_embeddings``, times the
    ``rope_scaling`` factor where the config states the original length apart (YaRN and linear
    scaling leave ``max_position_embeddings`` at the pre-trained length; Llama 3's type already
    states the extended one)."""
    n = c.int("max_position_embeddings", "n_positions", "max_sequence_length", default=None)
    scaling = c.raw.get("rope_scaling") or {}
    if n is None or not isinstance(scaling, Mapping):
        return n
    factor = scaling.get("factor")
    kind = scaling.get("rope_type") or scaling.get("type")
    if isinstance(factor, (int, float)) and factor > 1 and kind in ("yarn", "linear", "dynamic") \
            and not scaling.get("original_max_position_embeddings"):
        return int(n * factor)
    return n


def divide(c: Config, total: int, parts: int, what: str) -> int:
    if total % parts:
        raise PlanError(f"{c.source}: {what}: {total} is not divisible by {parts}")
    return total // parts


def heads_of(c: Config, hidden: int) -> tuple[int, int, int]:
    heads = c.int("num_attention_heads", "n_head")
    kv_heads = c.int("num_key_value_heads", default=heads)
    if kv_heads > heads:
        raise PlanError(f"{c.source}: num_key_value_heads ({kv_heads}) cannot exceed num_attention_heads ({heads})")
    if heads % kv_heads:
        raise PlanError(
            f"{c.source}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
        )
    head_dim = c.int("head_dim", default=0, allow_zero=True) or divide(c, hidden, heads, "hidden_size / heads")
    return heads, kv_heads, head_dim




def layer_types(c: Config, layers: int, default: Any) -> list[str]:
    """The config's ``layer_types`` (one entry per layer), else ``default(i)`` for each layer."""
    given = c.raw.get("layer_types")
    if given is not None:
        if not isinstance(given, list) or len(given) != layers or not all(isinstance(t, str) for t in given):
            raise PlanError(f"{c.source}: field 'layer_types' must list one string per layer ({layers})")
        return list(given)
    return [default(i) for i in range(layers)]
