"""MemoryBreakdown: bytes by category, for an estimate and a measurement alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# The planner's fine categories, in the order tables show them.
CATEGORIES = (
    "weights",
    "quantization_state",
    "gradients",
    "optimizer_states",
    "activations",
    "logits_loss",
    "temporaries",
    "overhead",
)

# The categories shared with the validator's measurements (PyTorch's mem_tracker vocabulary).
COARSE = {
    "parameters": ("weights", "quantization_state"),
    "gradients": ("gradients",),
    "optimizer_states": ("optimizer_states",),
    "activations": ("activations", "logits_loss"),
    "temporaries": ("temporaries",),
    "other": ("overhead",),
}


@dataclass(frozen=True)
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
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be an int of bytes, got {value!r}")
            if value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")

    @property
    def total(self) -> int:
        return sum(getattr(self, c) for c in CATEGORIES)

    @property
    def tensors(self) -> int:
        """Bytes in tensors (everything but the framework overhead)."""
        return self.total - self.overhead

    def coarse(self) -> dict[str, int]:
        return {k: sum(getattr(self, c) for c in cs) for k, cs in COARSE.items()}

    def to_dict_no_total(self) -> dict[str, int]:
        return asdict(self)

    def to_dict(self) -> dict[str, int]:
        out = asdict(self)
        out["total"] = self.total
        return out
