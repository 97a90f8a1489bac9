"""Fine-tuning methods: one file per method, one protocol (``fitplan.methods.base.Method``).

Adding a method is one file and one line in ``REGISTRY``.
"""

from __future__ import annotations

from fitplan.errors import unknown_choice
from fitplan.methods.adalora import ADALORA
from fitplan.methods.adapter import ADAPTER
from fitplan.methods.base import Method, TensorGroup
from fitplan.methods.boft import BOFT_METHOD
from fitplan.methods.c3a import C3A_METHOD
from fitplan.methods.delora import DELORA
from fitplan.methods.dora import DORA
from fitplan.methods.fourierft import FOURIERFT
from fitplan.methods.full import FULL
from fitplan.methods.gralora import GRALORA
from fitplan.methods.hra import HRA_METHOD
from fitplan.methods.ia3 import IA3_METHOD
from fitplan.methods.llama_adapter import LLAMA_ADAPTER
from fitplan.methods.ln_tuning import LN_TUNING
from fitplan.methods.loha import LOHA
from fitplan.methods.lokr import LOKR
from fitplan.methods.lora import LORA
from fitplan.methods.miss import MISS
from fitplan.methods.oft import OFT_METHOD
from fitplan.methods.prefix import PREFIX
from fitplan.methods.prompt import PROMPT
from fitplan.methods.ptuning import PTUNING
from fitplan.methods.qlora import QLORA
from fitplan.methods.road import ROAD
from fitplan.methods.shira import SHIRA
from fitplan.methods.trainable_tokens import TRAINABLE_TOKENS
from fitplan.methods.vera import VERA
from fitplan.methods.waveft import WAVEFT

# in the order tables show them
REGISTRY: dict[str, Method] = {m.name: m for m in (
    FULL, LORA, QLORA, ADAPTER, PREFIX, PTUNING, PROMPT,
    DORA,
    IA3_METHOD,
    VERA,
    LOHA,
    LOKR,
    ADALORA,
    OFT_METHOD,
    BOFT_METHOD,
    LN_TUNING,
    TRAINABLE_TOKENS,
    LLAMA_ADAPTER,
    FOURIERFT, HRA_METHOD, MISS, C3A_METHOD, ROAD, SHIRA, DELORA, GRALORA, WAVEFT,
)}
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
