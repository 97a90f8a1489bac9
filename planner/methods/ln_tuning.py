"""LN tuning (Zhao et al. 2023, "Tuning LayerNorm in attention") as peft 0.21 builds it: the norms
train, nothing else.

Targets (peft ``utils/constants.py`` 155-192): llama, mistral and gemma ``input_layernorm``,
``post_attention_layernorm`` and the final ``norm``; qwen2 and qwen3 ``post_attention_layernorm``
only; gemma2 and gemma3 also ``pre_feedforward_layernorm`` and ``post_feedforward_layernorm``;
gpt2 ``ln_1``, ``ln_2``, ``ln_f``; falcon ``input_layernorm``, ``post_attention_layernorm``,
``ln_f``; phi ``input_layernorm``, ``final_layernorm``.

Tensors: ``LNTuningLayer`` deep-copies each targeted norm (``tuners/ln_tuning/layer.py`` 48) and
trains the copy in the base's dtype (``LNTuningModel._cast_adapter_dtype`` is a no-op,
``model.py`` 131-135: no fp32 upcast), beside the frozen original: ``h`` per RMSNorm, ``2 h`` per
LayerNorm with a bias.

Saved: a norm whose weight trains saves the normalised input of the weight's product (``T x h``,
the activations' dtype) and makes its output need a gradient, so even layer 0, whose input is the
frozen embedding, saves its attention's tensors when its ``input_layernorm`` trains (traced:
``Trace.norm`` asks ``trains_norm``).

Known limitations: families without a peft mapping need peft's ``target_modules`` (not an option
here); the planner refuses them.
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.methods.base import Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.setup import TrainingSetup

# TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING (utils/constants.py 155-192); "norm", "ln_f"
# and "final_layernorm" are the final norm
LN_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("input_layernorm", "post_attention_layernorm", "norm"),
    "mistral": ("input_layernorm", "post_attention_layernorm", "norm"),
    "gemma": ("input_layernorm", "post_attention_layernorm", "norm"),
    "gemma2": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
               "post_feedforward_layernorm", "norm"),
    "gemma3_text": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                    "post_feedforward_layernorm", "norm"),
    "qwen2": ("post_attention_layernorm",),
    "qwen3": ("post_attention_layernorm",),
    "gpt2": ("ln_1", "ln_2", "ln_f"),
    "falcon": ("input_layernorm", "post_attention_layernorm", "ln_f"),
    "phi": ("input_layernorm", "final_layernorm"),
}


def ln_targets(shape: ModelShape) -> tuple[str, ...]:
    names = LN_TARGETS.get(shape.model_type)
    if names is None:
        raise PlanError(f"peft has no LN-tuning targets for {shape.model_type} (known: {', '.join(sorted(LN_TARGETS))})")
    return names


class LNTuning(Method):
    name = "ln-tuning"
    title = "LN tuning"
    strength = 15

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        names, w = ln_targets(shape), setup.weight_dtype
        out = []
        for n in shape.norms:
            if n.name in names:
                out.append(TensorGroup(f"{n.name}.ln_tuning.weight", shape.held_by(n) * n.copies, n.size, w, True,
                                       True))
                if n.bias:
                    out.append(TensorGroup(f"{n.name}.ln_tuning.bias", shape.held_by(n) * n.copies, n.size, w, True,
                                           True))
        fn = shape.final_norm
        if fn.name in names:
            # labelled under the final norm's name: its gradient is made before the layers'
            out.append(TensorGroup(f"{fn.name}.ln_tuning.weight", 1, fn.size, w, True, True))
            if fn.bias:
                out.append(TensorGroup(f"{fn.name}.ln_tuning.bias", 1, fn.size, w, True, True))
        return out

    def trains_norm(self, shape: ModelShape, setup: TrainingSetup, name: str) -> bool:
        return name in ln_targets(shape)

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        """A tuned norm after the MLP (Gemma-2's ``post_feedforward_layernorm``) makes its gradient before
        the MLP's backward peaks."""
        if not shape.post_mlp_norm:
            return 0
        blocks = [n for n in shape.norms if n.name not in ("q_norm", "k_norm", "sinks")]
        last = blocks[-1] if blocks else None
        if last is None or last.name not in ln_targets(shape):
            return 0
        return last.copies * last.size * (2 if last.bias else 1) * (4 if setup.weight_dtype == "fp32" else 2)

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        names = ln_targets(shape)
        present = {n.name for n in shape.norms} | {shape.final_norm.name}
        return peft.LNTuningConfig(task_type="CAUSAL_LM", target_modules=[n for n in names if n in present])


LN_TUNING = LNTuning()
