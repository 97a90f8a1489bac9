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

# the TrainingSetup fields of the methods beyond the seeds (their own settings: validated by the setup)
METHOD_FIELDS = (
    "base", "ia3_targets", "vera_rank", "lokr_decompose_both", "lokr_decompose_factor", "oft_block_size",
    "boft_block_size", "boft_block_num", "boft_n_butterfly_factor", "init_r", "target_r", "num_token_indices",
    "adapter_len", "adapter_layers", "n_frequency", "waveft_n_frequency", "c3a_block_size", "road_variant",
    "road_group_size", "gralora_k",
)


class _Registry(dict):
    """Name -> Method; a method beyond the seeds is imported when first looked up (the cold start),
    from the (module, object) its registry line names."""

    def __getitem__(self, name: str) -> Method:
        value = dict.__getitem__(self, name)
        if isinstance(value, tuple):
            module, attr = value
            value = getattr(__import__(f"fitplan.methods.{module}", fromlist=[attr]), attr)
            if value.name != name:
                raise RuntimeError(f"fitplan.methods.{module}.{attr} is {value.name!r}, registered as {name!r}")
            dict.__setitem__(self, name, value)
        return value

    def get(self, name: str, default: Method | None = None) -> Method | None:  # type: ignore[override]
        return self[name] if name in self else default

    def values(self) -> list[Method]:  # type: ignore[override]
        return [self[n] for n in self]

    def items(self) -> list[tuple[str, Method]]:  # type: ignore[override]
        return [(n, self[n]) for n in self]


# in the order tables show them
REGISTRY: dict[str, Method] = _Registry({m.name: m for m in (FULL, LORA, QLORA, ADAPTER, PREFIX, PTUNING, PROMPT)})
REGISTRY.update({
    "dora": ("dora", "DORA"),
    "ia3": ("ia3", "IA3_METHOD"),
    "vera": ("vera", "VERA"),
    "loha": ("loha", "LOHA"),
    "lokr": ("lokr", "LOKR"),
    "adalora": ("adalora", "ADALORA"),
    "oft": ("oft", "OFT_METHOD"),
    "boft": ("boft", "BOFT_METHOD"),
    "ln-tuning": ("ln_tuning", "LN_TUNING"),
    "trainable-tokens": ("trainable_tokens", "TRAINABLE_TOKENS"),
    "llama-adapter": ("llama_adapter", "LLAMA_ADAPTER"),
    "fourierft": ("fourierft", "FOURIERFT"),
    "hra": ("hra", "HRA_METHOD"),
    "miss": ("miss", "MISS"),
    "c3a": ("c3a", "C3A_METHOD"),
    "road": ("road", "ROAD"),
    "shira": ("shira", "SHIRA"),
    "delora": ("delora", "DELORA"),
    "gralora": ("gralora", "GRALORA"),
    "waveft": ("waveft", "WAVEFT"),
})
NAMES = tuple(REGISTRY)
# the short table `plan` shows without --method (the seeds' methods); `--method all` shows every one
SEEDS = ("full", "lora", "qlora", "adapter", "prefix", "ptuning", "prompt")
# every option some method reads (Method.options): given for a method that does not read it, refused. The
# methods beyond the seeds read the seeds' options and the setup's METHOD_FIELDS (tests/planner/methods
# hold this equal to the union of every method's options)
METHOD_OPTIONS = tuple(sorted({o for n in SEEDS for o in REGISTRY[n].options} | set(METHOD_FIELDS)))


def method(name: str | Method) -> Method:
    """Look a method up by name; an unknown name is an error listing the valid ones."""
    if isinstance(name, Method):
        return name
    found = REGISTRY.get(str(name).strip().lower())
    if found is None:
        raise unknown_choice("method", name, NAMES)
    return found


__all__ = ["METHOD_OPTIONS", "NAMES", "REGISTRY", "SEEDS", "Method", "TensorGroup", "method"]
