"""Fine-tuning methods: one file per method, one protocol (``fitplan.methods.base.Method``).

Adding a method is one file and one line in ``REGISTRY``.
"""

from __future__ import annotations

from fitplan.errors import unknown_choice
from fitplan.methods.adapter import ADAPTER
from fitplan.methods.base import Method, TensorGroup
from fitplan.methods.full import FULL
from fitplan.methods.lora import LORA
from fitplan.methods.prefix import PREFIX
from fitplan.methods.prompt import PROMPT
from fitplan.methods.ptuning import PTUNING
from fitplan.methods.qlora import QLORA

# in the order tables show them
REGISTRY: dict[str, Method] = {m.name: m for m in (FULL, LORA, QLORA, ADAPTER, PREFIX, PTUNING, PROMPT)}
NAMES = tuple(REGISTRY)
# the short table `plan` shows without --method (the seeds' methods); `--method all` shows every one
SEEDS = ("full", "lora", "qlora", "adapter", "prefix", "ptuning", "prompt")
# every option some method reads (Method.options): given for a method that does not read it, refused
METHOD_OPTIONS = tuple(sorted({o for m in REGISTRY.values() for o in m.options}))


def method(name: str | Method) -> Method:
    """Look a method up by name; an unknown name is an error listing the valid ones."""
    if isinstance(name, Method):
        return name
    found = REGISTRY.get(str(name).strip().lower())
    if found is None:
        raise unknown_choice("method", name, NAMES)
    return found


__all__ = ["METHOD_OPTIONS", "NAMES", "REGISTRY", "SEEDS", "Method", "TensorGroup", "method"]
