"""One vocabulary for an estimate and a measurement: the categories and ``MemoryBreakdown``.

The planner's estimate and the validator's measurement are both a ``MemoryBreakdown``, so comparing
them is a subtraction, category by category. The fine categories are the planner's; the shared
(coarse) categories are what a live-tensor tracker can tell apart without knowing the model, in
PyTorch's ``mem_tracker`` vocabulary (parameters, gradients, optimizer states, activations,
temporaries, other).
"""

from __future__ import annotations

from enum import Enum

from fitplan.frozen import asdict, frozen


class Category(str, Enum):
    """The fine categories, in the order tables show them."""

    WEIGHTS = "weights"
    QUANTIZATION_STATE = "quantization_state"
    GRADIENTS = "gradients"
    OPTIMIZER_STATES = "optimizer_states"
    ACTIVATIONS = "activations"
    LOGITS_LOSS = "logits_loss"
    TEMPORARIES = "temporaries"
    OVERHEAD = "overhead"


CATEGORIES = tuple(c.value for c in Category)

# shared (coarse) category -> the fine categories it sums
SHARED: dict[str, tuple[str, ...]] = {
    "parameters": ("weights", "quantization_state"),
    "gradients": ("gradients",),
    "optimizer_states": ("optimizer_states",),
    "activations": ("activations", "logits_loss"),
    "temporaries": ("temporaries",),
    "other": ("overhead",),
}
SHARED_CATEGORIES = tuple(SHARED)

# labels for tables and pictures
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


@frozen
class MemoryBreakdown:
    """Bytes live at one moment of a training step, by category. Every field is an int of bytes.

    ``activations``: tensors saved for backward by the decoder layers (and embeddings).
    ``logits_loss``: what the loss saves for backward (the fp32 log_softmax, the labels).
    ``temporaries``: short-lived tensors: the logits and their gradients, a recomputed layer, the
    optimizer step's buffers.
    ``overhead``: what the framework holds beyond tensors (CUDA context, allocator reserve).
    """

    weights: int = 0
    quantization_state: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    activations: int = 0
    logits_loss: int = 0
    temporaries: int = 0
    overhead: int = 0

    def __post_init__(self) -> None:
        for name in CATEGORIES:
            value = getattr(self, name)
            if type(value) is not int:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise TypeError(f"{name} must be an int of bytes, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")

    @property
    def total(self) -> int:
        return sum(getattr(self, c) for c in CATEGORIES)

    @property
    def tensors(self) -> int:
        """Bytes in tensors (everything but the framework overhead)."""
        return self.total - self.overhead

    def shared(self) -> dict[str, int]:
        """Bytes by shared category (what the validator's tracker tells apart)."""
        return {k: sum(getattr(self, c) for c in cs) for k, cs in SHARED.items()}

    def parts(self) -> dict[str, int]:
        """Bytes by fine category, without the total."""
        return asdict(self)

    def to_dict(self) -> dict[str, int]:
        """Bytes by fine category, with ``total``."""
        out = asdict(self)
        out["total"] = self.total
        return out


def errors_percent(estimate: MemoryBreakdown, measured: MemoryBreakdown) -> dict[str, float | None]:
    """(estimate - measured) / measured in percent per shared category; None where nothing was
    measured but something was estimated, 0 where both are 0."""
    e, m = estimate.shared(), measured.shared()
    out: dict[str, float | None] = {}
    for k in SHARED_CATEGORIES:
        out[k] = round(100.0 * (e[k] - m[k]) / m[k], 3) if m[k] else (0.0 if e[k] == 0 else None)
    return out
