"""The method protocol: what a fine-tuning method is, to the planner and to the validator.

A method says which tensors the trained model holds (the base model's, in which storage type, and
the ones it adds) and which of them train; what it adds to each decoder layer's saved activations
(through hooks the layer trace calls) and to what lives outside the layers; whether the input needs
a gradient; the virtual or prefix tokens it adds; whether gradient checkpointing is allowed; what
training saves; and how the validator builds it (a peft config, or the project's own module).

One file per method holds all of this; ``fitplan.methods.REGISTRY`` lists them. Nothing outside a
method's own file compares method names.
"""

from __future__ import annotations

from collections.abc import Callable

from fitplan.architecture import ModelShape
from fitplan.dtypes import four_bit_bytes, nbytes, quantized_state_bytes
from fitplan.frozen import frozen
from fitplan.memory.forms import Size

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, ClassVar

    from fitplan.architecture import Matrix
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup

ADAPTER_DTYPE = "fp32"  # peft keeps adapter weights in fp32 (autocast_adapter_dtype=True)


@frozen
class TensorGroup:
    """``count`` tensors of ``numel`` elements each, stored alike."""

    label: str
    count: int
    numel: int
    storage: str          # a dtype name: fp32, bf16, fp16, nf4, fp4
    trainable: bool
    added: bool = False   # added by the method (what an adapter file holds, unless in_file is off)
    factored: int = 0     # elements of Adafactor's row + column statistics; 0 for 1-D tensors
    layered: bool = False  # held by decoder layers (some of them, where layers differ)
    in_file: bool = True  # an added tensor the adapter file holds (off: a non-persistent buffer)
    in_features: int = 0  # a linear weight's input width (quantized layouts group along it)

    @property
    def elements(self) -> int:
        return self.count * self.numel

    def data_bytes(self) -> int:
        """Bytes of the values themselves (packed 4-bit for quantized weights)."""
        return self.count * nbytes(self.numel, self.storage)

    def quant_state_bytes(self, double_quant: bool) -> int:
        """Bytes of the quantization state: bitsandbytes' 4-bit absmax, nested absmax and code books, or
        a quantized base's scales, zeros and indices (``fitplan.dtypes.quantized_state_bytes``)."""
        if self.storage in ("nf4", "fp4"):
            return self.count * (four_bit_bytes(self.numel, double_quant=double_quant) - nbytes(self.numel, self.storage))
        return self.count * quantized_state_bytes(self.storage, self.numel, self.in_features)

    def per_layer(self, layers: int) -> bool:
        """Whether the group sits in the decoder layers (every layer's, or some layers' where they differ)."""
        return self.layered or (self.count >= layers and self.count % layers == 0)


StorageOf = Callable[[str, str, bool], str]


def base_groups(shape: ModelShape, storage_of: StorageOf, trainable: bool) -> list[TensorGroup]:
    """The base model's parameter tensors, grouped by shape.

    ``storage_of(kind, role, is_linear)`` picks each group's storage type; kind is one of
    ``embedding``, ``position``, ``weight``, ``bias``, ``norm``, ``head``.
    """
    h, V = shape.hidden_size, shape.vocab_size
    groups = [
        TensorGroup("embed_tokens", 1, shape.embedding_params, storage_of("embedding", "", False), trainable, factored=V + h)
    ]
    if shape.position_embeddings:
        groups.append(
            TensorGroup(
                "position_embeddings", 1, shape.position_params, storage_of("position", "", False), trainable,
                factored=shape.position_embeddings + h,
            )
        )
    for m in shape.matrices:
        n_layers = shape.held_by(m)
        groups.append(
            TensorGroup(
                f"{m.name}.weight", n_layers, m.weight_numel, m.dtype or storage_of("weight", m.role, m.is_linear),
                trainable, factored=m.copies * (m.in_features + m.out_features), layered=True,
                in_features=m.in_features,
            )
        )
        if m.bias:
            groups.append(TensorGroup(f"{m.name}.bias", n_layers, m.bias_numel,
                                      m.dtype or storage_of("bias", m.role, m.is_linear), trainable, layered=True))
    for n in shape.norms:
        storage = storage_of("norm", "", False)
        groups.append(TensorGroup(f"{n.name}.weight", shape.held_by(n) * n.copies, n.size, storage, trainable,
                                  layered=True))
        if n.bias:
            groups.append(TensorGroup(f"{n.name}.bias", shape.held_by(n) * n.copies, n.size, storage, trainable,
                                      layered=True))
    if shape.embedding_norm is not None:
        en = shape.embedding_norm
        groups.append(TensorGroup(f"{en.name}.weight", 1, en.size, storage_of("norm", "", False), trainable))
        if en.bias:
            groups.append(TensorGroup(f"{en.name}.bias", 1, en.size, storage_of("norm", "", False), trainable))
    fn = shape.final_norm
    groups.append(TensorGroup(f"{fn.name}.weight", 1, fn.size, storage_of("norm", "", False), trainable))
    if fn.bias:
        groups.append(TensorGroup(f"{fn.name}.bias", 1, fn.size, storage_of("norm", "", False), trainable))
    if not shape.tie_word_embeddings:
        groups.append(
            TensorGroup("lm_head.weight", 1, shape.embedding_params, storage_of("head", "", False), trainable, factored=V + h)
        )
    if shape.lm_head_bias:
        groups.append(TensorGroup("lm_head.bias", 1, shape.vocab_size, storage_of("head", "", False), trainable))
    if shape.vision_parameters:
        # a loaded vision tower (fitplan.families: Gemma 3's SigLIP), stored as the other weights
        groups.append(TensorGroup("vision_tower", 1, shape.vision_parameters, storage_of("norm", "", False), trainable))
    return groups


class Method:
    """A fine-tuning method. Subclasses set the class attributes and override the hooks they need.

    Class attributes:
        name, title: the command-line name and the name people read.
        strength: order of preference where several fit (higher is more expressive).
        options: the ``TrainingSetup`` fields this method reads beyond the common ones (an option
            given for a method that does not read it is refused by the planner).
        trains_base: every base parameter trains (full fine-tuning).
        input_requires_grad: layer 0's input needs a gradient (the embedding trains, or trained
            virtual tokens are prepended to it).
        checkpointing_default: gradient checkpointing is on unless the user says otherwise.
        checkpointing_refused: why the method cannot checkpoint, or None.
        trains_embedding: the input embedding's output depends on trained tensors (it has a grad_fn,
            so checkpointing keeps no separate leaf of it).
        quantized_base: the frozen base is loaded quantized (the validator saves a random model and
            reloads it quantized; fake tensors cannot run it).
        saved_kind: what training writes.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    strength: ClassVar[int]
    options: ClassVar[frozenset[str]] = frozenset()
    trains_base: ClassVar[bool] = False
    input_requires_grad: ClassVar[bool] = False
    checkpointing_default: ClassVar[bool] = False
    checkpointing_refused: ClassVar[str | None] = None
    quantized_base: ClassVar[bool] = False
    trains_embedding: ClassVar[bool] = False
    saved_kind: ClassVar[str] = "adapter file"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<method {self.name}>"

    # ---- tensors ---------------------------------------------------------------------------
    def base_storage(self, setup: TrainingSetup) -> StorageOf:
        """The storage type of each base tensor (the training dtype unless the method quantizes)."""
        storage = setup.weight_dtype
        return lambda kind, role, is_linear: storage

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        """The tensors the method adds (trainable unless it says otherwise)."""
        return []

    def tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        """Every tensor of the trained model: the base's, then the method's."""
        return base_groups(shape, self.base_storage(setup), trainable=self.trains_base) + self.added_tensors(shape, setup)

    def trainable_params(self, shape: ModelShape, setup: TrainingSetup) -> int:
        return sum(g.elements for g in self.tensors(shape, setup) if g.trainable)

    # ---- the forward pass ------------------------------------------------------------------
    def extra_file_bytes(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """Bytes the adapter file holds beyond the added tensors (copies of base weights, index tables)."""
        return 0

    def notes(self, shape: ModelShape, setup: TrainingSetup) -> tuple[str, ...]:
        """Lines the output should show about this method's figures (where a layout comes from)."""
        return ()

    def input_grad(self, setup: TrainingSetup) -> bool:
        """Whether layer 0's input needs a gradient (``input_requires_grad``, or a trained copy of the
        embedding a setup adds)."""
        return self.input_requires_grad

    def embedding_trains(self, setup: TrainingSetup) -> bool:
        """Whether the input embedding's output depends on trained tensors (``trains_embedding``)."""
        return self.trains_embedding

    def default_checkpointing(self, setup: TrainingSetup) -> bool:
        """Gradient checkpointing unless the user says otherwise (a quantized base's loader may turn it on)."""
        return self.checkpointing_default

    def activation_bytes(self, setup: TrainingSetup) -> int:
        """Bytes per element of the activations the layers compute (the compute dtype's)."""
        return 4 if setup.compute_dtype == "fp32" else 2

    def virtual_tokens(self, setup: TrainingSetup) -> int:
        """Tokens prepended to every sequence (they lengthen every activation and the logits)."""
        return 0

    def prefix_tokens(self, setup: TrainingSetup) -> int:
        """Tokens prepended to every layer's keys and values (not to the queries)."""
        return 0

    def trace_linear(self, trace: Trace, x: TraceTensor, m: Matrix) -> bool:
        """Save what the method adds around linear ``m`` (input ``x``); True if it makes the
        output need a gradient."""
        return False

    def trace_attention_output(self, trace: Trace, x: TraceTensor, out: TraceTensor) -> TraceTensor:
        """What follows the attention's output projection (input ``x``: the attention block's normed
        input): LLaMA-Adapter's gated prompt attention."""
        return out

    def frozen_layers(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """Bottom decoder layers that no gradient reaches (they save nothing without checkpointing);
        the lowest layer the method reaches is then traced as layer 0 (its input needs no gradient)."""
        return 0

    def trace_head(self, trace: Trace, y: TraceTensor) -> None:
        """Save what the method adds at the output head (input ``y``, the final norm's output); freed
        by the head's backward, at the start of backward."""

    def head_backward_temporaries(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """What the output head's backward makes beyond the logits' gradient (a trained head weight's
        gradient), beside every saved activation; nothing for a frozen head."""
        return Size()

    def trains_norm(self, shape: ModelShape, setup: TrainingSetup, name: str) -> bool:
        """Whether the method trains the weight of the norm called ``name`` (a decoder layer's, as
        ``ModelShape.norms`` names them, or the final norm's)."""
        return False

    def trace_block_output(self, trace: Trace, out: TraceTensor) -> TraceTensor:
        """What follows an attention or MLP block's output (an adapter, for instance)."""
        return out

    # ---- outside the layers ----------------------------------------------------------------
    def output_holds(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """What the model's output keeps alive while the loss is computed, beyond the hidden states."""
        return Size()

    def encoder_form(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """Activations of a method's own encoder run once per step, saved until the end of backward."""
        return Size()

    def early_gradients(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """Bytes of gradients made at the very start of backward, before any layer's, and kept to its
        end (a loss term computed from the adapter weights themselves: AdaLoRA's regulariser)."""
        return 0

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        """Gradient bytes a layer makes before its MLP backward peaks (of ``layer_gradient_bytes``)."""
        return 0

    def mlp_tail(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """What the method saves after the MLP, freed before the MLP's backward peaks."""
        return Size()

    def trace_experts(self, trace: Trace, gate_up: Matrix, down: Matrix, x_rg: bool) -> tuple[bool, bool]:
        """Whether the method makes a MoE layer's fused expert weights need a gradient (LoRA's
        ParamWrapper), saving what that adds (``x_rg``: the experts' input needs a gradient); the
        base's own training is the trace's."""
        return False, False

    def layer_backward_temporaries(self, shape: ModelShape, setup: TrainingSetup, gated: Size) -> tuple[Size, ...]:
        """Alternatives for what is alive inside one layer's MLP backward; ``gated`` is the plain
        layer's. The largest is the peak."""
        return (gated,)

    def flops_per_token(self, parameters: int) -> int:
        """Training FLOPs per token without checkpointing: 2P forward, 2P for the input's gradient
        (a frozen base computes no weight gradients; Kaplan et al. 2020, section 2.1)."""
        return 4 * parameters

    # ---- the validator ---------------------------------------------------------------------
    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        """The peft config that builds the method, or None (imports peft: the validator only)."""
        return None

    def quantization_config(self, setup: TrainingSetup) -> Any:
        """The bitsandbytes settings the validator loads the base with, or None: ``{"bits": 4, "quant_type",
        "double_quant", "compute_dtype"}`` or ``{"bits": 8}`` (``fitplan.validate.build`` makes the
        transformers config: the planner never imports torch)."""
        return None

    def build(self, model: Any, shape: ModelShape, setup: TrainingSetup) -> Any:
        """Apply the method to a freshly built base model (the validator; imports torch and peft)."""
        from fitplan.validate.build import enable_checkpointing

        if setup.checkpointing:
            enable_checkpointing(model)
        config = self.peft_config(shape, setup)
        if config is None:
            return model
        import peft

        return peft.get_peft_model(model, config)
