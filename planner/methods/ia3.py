"""IA3 (Liu et al. 2022, "(IA)^3": infused adapter by inhibiting and amplifying inner activations) as
peft 0.21 builds it.

Targets (peft ``utils/constants.py`` 197-277): ``--ia3-targets``, else peft's mapping for the model
type (llama and mistral: k, v and down projections; qwen2, qwen3, gemma, gemma2 and phi: q, v and
down; gpt2 and gpt_bigcode: ``c_attn`` and ``mlp.c_proj``; gpt_neox and falcon:
``query_key_value`` and ``dense_4h_to_h``). The feed-forward modules are the targeted down
projections (peft's mapping names exactly those).

Tensors (``tuners/ia3/layer.py`` 63-65): one fp32 vector ``ia3_l`` per module, ``out`` long
(``out x 1``) on attention modules and ``in`` long (``1 x in``) on feed-forward ones.

Forward (``layer.py`` 180-198): ``ia3_scaling = 1 * l.flatten()`` (a new fp32 vector); a
feed-forward module scales its input, ``(x.to(fp32) * l).to(x.dtype)``, which saves the fp32 input
(``T x in x 4``) and, when the input needs a gradient, the vector; any other module scales its
output, ``(base(x) * l).to(dtype)``, which saves the base output (``T x out``, the activations'
dtype) and, when that needs a gradient, the vector. No weight-sized temporaries.

Known limitations: MoE experts (mixtral's ``w2`` is a fused 3-D tensor in transformers 5) cannot be
targeted; families without a peft mapping (phi3, stablelm, qwen2-moe) need ``--ia3-targets``.
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE
from fitplan.methods.targets import (
    LinearMethod,
    family_default,
    mlp_matrices,
    peft_names,
    resolve,
)

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import Matrix, ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup

# peft's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING (utils/constants.py 197-225), by role
IA3_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("k", "v", "down"),
    "mistral": ("k", "v", "down"),
    "gemma": ("q", "v", "down"),
    "gemma2": ("q", "v", "down"),
    "qwen2": ("q", "v", "down"),
    "qwen3": ("q", "v", "down"),
    "phi": ("q", "v", "down"),
    "gpt2": ("qkv", "down"),
    "gpt_bigcode": ("qkv", "down"),
    "gpt_neox": ("qkv", "down"),
    "falcon": ("qkv", "down"),
}
FEEDFORWARD_ROLES = ("down",)   # TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING (249-277)


class IA3(LinearMethod):
    name = "ia3"
    title = "IA3"
    strength = 8
    options = frozenset({"ia3_targets"})

    def targets(self, shape: ModelShape, setup: TrainingSetup) -> tuple[Matrix, ...]:
        if setup.ia3_targets:
            return self.checked(shape, resolve(shape, setup.ia3_targets))
        return self.checked(shape, family_default(shape, IA3_TARGETS, "IA3", "--ia3-targets"))

    @staticmethod
    def feedforward(m: Matrix) -> bool:
        return m.role in FEEDFORWARD_ROLES

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        """``ia3_l``: ``in`` elements on a feed-forward module, ``out`` on the others (layer.py 63-65)."""
        return [("ia3_l", m.in_features if self.feedforward(m) else m.out_features, ADAPTER_DTYPE)]

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        if self.feedforward(m):
            trace.save(trace.cast(x, 4, m.in_features))       # x.to(fp32) * l saves x for l's gradient
            if x.rg:
                trace.save_size(Size(const=4 * m.in_features))  # ... and 1 * l for x's
        else:
            trace.save(trace.tok(m.out_features, trace.a, x.rg))  # base(x) * l saves base(x)
            if x.rg:
                trace.save_size(Size(const=4 * m.out_features))

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        """A feed-forward module scales its input, so its vector's gradient comes after the module's own
        backward, past the MLP's backward peak (measured); an output-scaling MLP module's comes first."""
        return sum(4 * m.out_features for m in mlp_matrices(self.targets(shape, setup)) if not self.feedforward(m))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        targets = self.targets(shape, setup)
        return peft.IA3Config(task_type="CAUSAL_LM", target_modules=peft_names(shape, targets),
                              feedforward_modules=peft_names(shape, tuple(m for m in targets if self.feedforward(m))))


IA3_METHOD = IA3()
