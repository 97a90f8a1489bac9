"""LLaMA-Adapter (Zhang et al. 2023, zero-init attention; peft's ``AdaptionPromptConfig``) as peft
0.21 builds it: gated prompts in the attention of the top ``--adapter-layers`` layers.

Supported model types (``tuners/adaption_prompt/config.py`` 51-72, 81): llama and mistral (peft
also lists gpt2, whose attention has no ``k_proj`` for peft's ``AdaptedAttention.forward`` to read:
refused here); ``adapter_layers`` at most the model's layers (``model.py`` 76-80); peft has no default for it or
``adapter_len``: the planner takes the paper's (Zhang et al. 2023, section 4.1: the top 30 layers,
or every layer of a shallower model, and 10 prompt tokens).

Tensors per adapted layer (``layer.py`` 55-59, 146-150): ``adaption_prompt`` (1 x adapter_len x h)
and ``adaption_gate`` (1), in ``q_proj.weight``'s dtype (not upcast: ``AdaptionPromptModel`` is no
``BaseTuner``), zero-initialised gate.

Forward (``layer.py`` 164-220, ``utils.py`` 60-80): the wrapped attention runs unchanged; then
``k_proj`` and ``v_proj`` of the prompt (repeated over the batch and to every head), the query
recomputed on every token (``q_proj``, rotary), ``scores = q k_p^T / sqrt(d)``, an fp32 softmax,
``gate * softmax.to(dtype)``, ``@ v_p`` and ``o_proj``, added to the attention's output. Saved per
adapted layer: the rotated query (``T x h``, for ``k_p``'s gradient), the fp32 softmax output
(``heads x adapter_len`` per token), its cast (a bf16 model), the gated scores (for ``v_p``'s
gradient), the repeated prompt values and, where the query needs a gradient, keys
(``heads x adapter_len x head_dim`` per sequence each). The layers below the adapted ones get no
gradient at all: without checkpointing they save nothing (``frozen_layers``), and the lowest adapted
layer's own attention saves nothing either (its input needs no gradient).

Known limitations: one more ``q_proj`` and ``v_proj`` per adapted layer in FLOPs is not counted in
the time estimate.
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.memory.forms import Size
from fitplan.methods.base import Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup

SUPPORTED = ("llama", "mistral")
PAPER_LAYERS = 30   # Zhang et al. 2023, section 4.1: prompts in the top 30 of LLaMA-7B's 32 layers


def adapted_layers(shape: ModelShape, setup: TrainingSetup) -> int:
    """``adapter_layers``, checked as peft checks it.

    Raises:
        PlanError: a model type peft's adaption prompt does not run on, or more layers than the model has.
    """
    if shape.model_type not in SUPPORTED:
        raise PlanError(f"LLaMA-Adapter (peft's adaption prompt) supports {', '.join(SUPPORTED)}; "
                        f"not {shape.model_type}")
    if setup.adapter_layers > shape.num_layers:
        raise PlanError(f"--adapter-layers {setup.adapter_layers} is more than {shape.name}'s "
                        f"{shape.num_layers} layers (peft: 'Config specifies more adapter layers')")
    return setup.adapter_layers or min(PAPER_LAYERS, shape.num_layers)


class LlamaAdapter(Method):
    name = "llama-adapter"
    title = "LLaMA-Adapter"
    strength = 17
    options = frozenset({"adapter_len", "adapter_layers"})

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        k, n, h = adapted_layers(shape, setup), setup.adapter_len, shape.hidden_size
        w = setup.weight_dtype
        return [TensorGroup("adaption_prompt", k, n * h, w, True, True, n + h),
                TensorGroup("adaption_gate", k, 1, w, True, True)]

    def frozen_layers(self, shape: ModelShape, setup: TrainingSetup) -> int:
        return shape.num_layers - adapted_layers(shape, setup)

    def trace_attention_output(self, trace: Trace, x: TraceTensor, out: TraceTensor) -> TraceTensor:
        s, a = trace.shape, trace.a
        nh, d, n = s.num_heads, s.head_dim, trace.setup.adapter_len
        q = trace.tok(s.q_width, a, x.rg)                      # q_proj(hidden) recomputed, then rotated
        trace.save(q)                                          # q k_p^T: for k_p's gradient
        per_seq = nh * n * d * a                               # one repeated prompt key or value stack
        extra = Size(token=4 * nh * n + (a * nh * n if a != 4 else 0) + a * nh * n, batch=per_seq)
        if x.rg:
            extra = extra + Size(batch=per_seq)                # k_p, for q's gradient
        trace.save_size(extra)                                 # softmax (fp32), its cast, gated scores; v_p
        return trace.tok(s.hidden_size, a, True)               # output + adapter_output

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=setup.adapter_len,
                                         adapter_layers=adapted_layers(shape, setup))


LLAMA_ADAPTER = LlamaAdapter()
