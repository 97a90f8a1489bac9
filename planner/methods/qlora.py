"""QLoRA (Dettmers et al. 2023): LoRA on a base whose linear weights are 4-bit, as peft 0.21 and
bitsandbytes 0.50 build it.

bitsandbytes quantizes the decoder's ``nn.Linear`` weights (not embeddings, not the head, not MoE
routers, not the fused 3-D expert tensors of transformers 5); peft's
``prepare_model_for_kbit_training`` upcasts every other parameter to fp32 and turns gradient
checkpointing on. That upcast has a cost people miss: the embedding then returns fp32 and
``Linear4bit`` returns its input's dtype, so the whole forward pass runs on fp32 tensors (measured
on CPU, transformers 5.23, peft 0.21, bitsandbytes 0.50: every saved tensor and the logits are
fp32). ``kbit_upcast=False`` models stacks that skip the upcast (FSDP, which needs one dtype, or
plugins that load the 4-bit model themselves).

In backward, ``MatMul4Bit`` dequantizes each weight to the compute dtype for the input's gradient,
one matrix at a time.
"""

from __future__ import annotations

from fitplan.architecture import EXPERT_DOWN, EXPERT_GATE_UP, ROUTER, ModelShape
from fitplan.memory.forms import Size
from fitplan.methods.base import StorageOf
from fitplan.methods.bases import four_bit
from fitplan.methods.lora import LoRA

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.setup import TrainingSetup


def quantized(role: str, is_linear: bool, transformers_major: int = 5) -> bool:
    """Whether bitsandbytes 4-bit loading quantizes a decoder matrix.

    transformers 5 (with bitsandbytes 0.50) quantizes ``nn.Linear`` modules but not MoE routers or
    the fused 3-D expert tensors; transformers 4 kept each expert as ``nn.Linear``s, quantized too.
    """
    if role in (EXPERT_GATE_UP, EXPERT_DOWN):
        return transformers_major < 5
    return is_linear and role != ROUTER


def dequant_temporaries(shape: ModelShape, setup: TrainingSetup, gated: Size, compute: int) -> tuple[Size, ...]:
    """What a layer's MLP backward keeps on a quantized base: the plain layer's (``gated``), or the
    largest dequantized weight (``compute`` bytes per element) at the down projection, the MLP's
    first, beside the incoming gradient and the gradient of the projection's input."""
    a = setup.activation_bytes
    h, i = shape.hidden_size, shape.intermediate_size
    largest = max(m.in_features * m.out_features for m in shape.matrices if m.is_linear)
    # dropout after the MLP adds its own gradient of the hidden size
    hidden_grads = 2 if shape.dropout > 0 else 1
    saves_after_down = shape.post_mlp_norm or shape.dropout > 0   # a norm or a dropout mask
    if setup.checkpointing and not saves_after_down:
        # a frozen quantized down projection saves nothing, so a checkpointed layer is recomputed only
        # at the MLP's product, after the down projection's backward; the peak is at the gate/up
        # projection, where the product's saved tensors have been consumed and their gradients made
        return (gated, Size(token=a * hidden_grads * h, const=compute * largest))
    return (gated, Size(token=a * (hidden_grads * h + i), const=compute * largest))


class QLoRA(LoRA):
    name = "qlora"
    title = "QLoRA"
    strength = 4
    options = frozenset({"lora_rank", "lora_targets", "lora_dropout", "quant", "double_quant", "kbit_upcast",
                         "adapter_dtype", "lora_alpha", "modules_to_save"})
    checkpointing_default = True
    quantized_base = True

    def base_storage(self, setup: TrainingSetup) -> StorageOf:
        def storage(kind: str, role: str, is_linear: bool) -> str:
            if kind == "weight" and quantized(role, is_linear, setup.transformers_major):
                return setup.quant
            # prepare_model_for_kbit_training upcasts every non-4-bit parameter
            return "fp32" if setup.kbit_upcast else setup.weight_dtype

        return storage

    def activation_bytes(self, setup: TrainingSetup) -> int:
        return 4 if setup.kbit_upcast else super().activation_bytes(setup)

    def layer_backward_temporaries(self, shape: ModelShape, setup: TrainingSetup, gated: Size) -> tuple[Size, ...]:
        return dequant_temporaries(shape, setup, gated, 4 if setup.compute_dtype == "fp32" else 2)

    def quantization_config(self, setup: TrainingSetup) -> Any:
        return four_bit(setup.quant, setup)

    def build(self, model: Any, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=setup.checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return peft.get_peft_model(model, self.peft_config(shape, setup))


QLORA = QLoRA()
