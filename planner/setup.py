"""TrainingSetup: everything about one method's training step that memory depends on, checked on creation."""

from __future__ import annotations

from fitplan.errors import PlanError, unknown_choice
from fitplan.frozen import field, fields, frozen, replace
from fitplan.methods import METHOD_FIELDS, Method
from fitplan.methods import method as get_method
from fitplan.optimizers import NAMES as OPTIMIZERS

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed", "bf16-master")
ATTENTIONS = ("eager", "sdpa", "flash")
DEVICES = ("cuda", "cpu")
QUANTS = ("nf4", "fp4")
# the frozen base of LoRA-family methods: "none" keeps it in the training dtype; the rest are the
# quantized layouts of fitplan.dtypes.QUANTIZED_BASES (nf4 and fp4 as QLoRA stores them)
BASES = ("none", "gptq-int4", "gptq-int8", "awq", "hqq", "fp8", "bnb-int8", "nf4", "fp4")

# the options of the peft methods beyond the seeds' (TrainingSetup fields under the request's names)


def method_fields(value: Any) -> dict[str, Any]:
    """The ``TrainingSetup`` keywords of ``METHOD_FIELDS`` from a request's ``value(name)`` (a comma list
    of IA3 targets becomes a tuple; text choices are lower-cased)."""
    out: dict[str, Any] = {}
    for name in METHOD_FIELDS:
        v = value(name)
        if v is None:
            continue
        if name == "ia3_targets":
            v = tuple(p.strip() for p in str(v).replace(" ", ",").split(",") if p.strip())
        elif name in ("base", "road_variant"):
            v = str(v).strip().lower()
        out[name] = v
    return out


# Limits that catch typos and absurd input before any arithmetic (bytes stay well inside int64).
MAX_SEQ_LEN = 10_000_000
MAX_BATCH = 1_000_000
MAX_RANK = 65_536
MAX_GPUS = 100_000
MAX_LAYERS = 10_000
ROAD_VARIANTS = ("road_1", "road_2", "road_4")
LOSSES = ("standard", "chunked", "litgpt", "liger", "cce", "trl", "unsloth")
DEFAULT_CHUNKS = 8                   # torchtune's CEWithChunkedOutputLoss(num_output_chunks=8)
MAX_CHUNKS = 65_536
ADAPTER_DTYPES = ("fp32", "bf16", "fp16")
PACKINGS = ("none", "packed", "padding-free")
MODULES_TO_SAVE = ("lm_head", "embed_tokens")


def loss_parts(text: str) -> tuple[str, int]:
    """(kind, chunks) of a ``--loss`` value: ``chunked`` is torchtune's 8 chunks, ``chunked:N`` N.

    Raises:
        PlanError: an unknown kind, or chunks that are not a positive whole number.
    """
    kind, _, n = str(text).strip().lower().partition(":")
    if kind not in LOSSES:
        raise unknown_choice("loss", text, LOSSES)
    if kind != "chunked":
        if n:
            raise PlanError(f"loss {text!r}: only 'chunked' takes a number of chunks (chunked:N)")
        return kind, 1
    if not n:
        return kind, DEFAULT_CHUNKS
    if not n.isdigit() or not 0 < int(n) <= MAX_CHUNKS:
        raise PlanError(f"loss {text!r}: the chunks must be a whole number from 1 to {MAX_CHUNKS}, e.g. chunked:8")
    return kind, int(n)


@frozen
class TrainingSetup:
    """One training configuration of one method. Sizes in elements or tokens; nothing here is in bytes.

    ``method``: a method of the registry (a name is looked up on creation).
    ``precision``: ``bf16``/``fp16``/``fp32`` keep weights, gradients and optimizer states in that
    type (pure low-precision training); ``bf16-mixed``/``fp16-mixed`` keep fp32 weights and states
    and run matrix products under autocast (torch AMP); ``bf16-master`` keeps bf16 weights with an
    fp32 master copy, fp32 gradients and fp32 states (DeepSpeed / Megatron mixed precision).
    ``device``: ``cuda`` picks CUDA kernels (flash / memory-efficient SDPA, foreach AdamW);
    ``cpu`` picks the CPU kernels that run on this project's CI (the validator's CPU mode).
    ``grad_ckpt``: ``None`` means the method's usual default (on for QLoRA, whose
    ``prepare_model_for_kbit_training`` enables it; off otherwise).
    ``kbit_upcast``: QLoRA through peft's ``prepare_model_for_kbit_training`` keeps every parameter
    that is not 4-bit in fp32, which makes the whole forward pass fp32; stacks that skip it (FSDP,
    which needs one dtype, or plugins that load the 4-bit model themselves) keep them in bf16.
    ``transformers_major``: 5 (fused 3-D MoE experts that bitsandbytes leaves unquantized; one fp32
    copy of the logits) or 4 (per-expert ``nn.Linear`` experts, quantized; the loss also makes a
    contiguous fp32 copy of the shifted logits).
    """

    method: Method = "lora"  # type: ignore[assignment]  # a name is accepted and looked up
    seq_len: int = 2048
    batch_size: int = 1
    precision: str = "bf16"
    optimizer: str = "adamw"
    grad_ckpt: bool | None = None
    attention: str = "sdpa"
    device: str = "cuda"
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("q", "v")
    lora_dropout: float = 0.0
    adapter_size: int = 64
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    quant: str = "nf4"
    double_quant: bool = True
    gpus: int = 1
    foreach: bool | None = None  # None: the device's default (foreach on CUDA, single-tensor on CPU)
    kbit_upcast: bool = True     # qlora: prepare_model_for_kbit_training upcasts non-4-bit parameters to fp32
    transformers_major: int = 5  # 4: the transformers 4 stack (per-expert Linear MoE, an extra fp32 logits copy)
    # ---- what the training stack does (``fitplan.stacks`` sets these from data/stacks; each is an option too)
    loss: str = "standard"           # LOSSES, "chunked:N" for N chunks (fitplan.memory.logits)
    compile: bool = False            # torch.compile of the decoder layers and the loss (Inductor's partitioner)
    optimizer_in_backward: bool = False  # each parameter stepped, its gradient freed, inside backward (torchtune)
    activation_offload: bool = False     # checkpointed layer inputs to pinned host memory (torchtune, TRL, axolotl)
    adapter_dtype: str = "fp32"      # LoRA weights: peft's fp32 upcast, or the model's dtype (torchtune, LitGPT)
    lora_alpha: int | None = None    # no memory: peft's scaling (None: 2 x rank, as the validator builds it)
    grad_accum: int = 1              # micro batches per optimizer step (FSDP keeps their gradients unsharded)
    modules_to_save: tuple[str, ...] = ()  # base modules trained as full copies (peft's ModulesToSaveWrapper)
    packing: str = "none"            # PACKINGS: pad to the longest, packed rows, or one padding-free row
    # ---- options of the other peft methods, under peft's names (each read by the methods naming
    # it in Method.options; defaults are peft 0.21's own)
    base: str = "none"             # LoRA-family methods: the frozen base's storage (BASES)
    ia3_targets: tuple[str, ...] = ()  # IA3's target_modules; () = peft's mapping for the model type
    vera_rank: int = 256           # VeraConfig.r
    lokr_decompose_both: bool = False  # LoKrConfig.decompose_both
    lokr_decompose_factor: int = -1    # LoKrConfig.decompose_factor
    oft_block_size: int = 32       # OFTConfig.oft_block_size
    boft_block_size: int = 4       # BOFTConfig.boft_block_size
    boft_block_num: int = 0        # BOFTConfig.boft_block_num (0: from the block size)
    boft_n_butterfly_factor: int = 1   # BOFTConfig.boft_n_butterfly_factor
    init_r: int = 12               # AdaLoraConfig.init_r (the rank kept in memory)
    target_r: int = 8              # AdaLoraConfig.target_r (the average rank saved)
    num_token_indices: int = 16    # len(TrainableTokensConfig.token_indices)
    adapter_len: int = 10          # AdaptionPromptConfig.adapter_len (LLaMA-Adapter)
    adapter_layers: int = 0        # AdaptionPromptConfig.adapter_layers; 0: the paper's top 30, or every layer of a shallower model
    n_frequency: int = 1000        # FourierFTConfig.n_frequency
    waveft_n_frequency: int = 2592 # WaveFTConfig.n_frequency
    c3a_block_size: int = 256      # C3AConfig.block_size
    road_variant: str = "road_1"   # RoadConfig.variant
    road_group_size: int = 64      # RoadConfig.group_size
    gralora_k: int = 2             # GraloraConfig.gralora_k
    assumed: tuple[str, ...] = field(default=(), compare=False)  # options the user did not set

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", get_method(self.method))
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.attention not in ATTENTIONS:
            raise unknown_choice("attention implementation", self.attention, ATTENTIONS)
        if self.device not in DEVICES:
            raise unknown_choice("device", self.device, DEVICES)
        if self.quant not in QUANTS:
            raise unknown_choice("quantization", self.quant, QUANTS)
        if self.base not in BASES:
            raise unknown_choice("base", self.base, BASES)
        if self.road_variant not in ROAD_VARIANTS:
            raise unknown_choice("road variant", self.road_variant, ROAD_VARIANTS)
        for name, limit in (
            ("seq_len", MAX_SEQ_LEN),
            ("batch_size", MAX_BATCH),
            ("lora_rank", MAX_RANK),
            ("adapter_size", MAX_RANK),
            ("num_virtual_tokens", MAX_SEQ_LEN),
            ("gpus", MAX_GPUS),
            ("vera_rank", MAX_RANK),
            ("oft_block_size", MAX_RANK),
            ("boft_block_size", MAX_RANK),
            ("boft_n_butterfly_factor", 64),
            ("init_r", MAX_RANK),
            ("target_r", MAX_RANK),
            ("num_token_indices", MAX_SEQ_LEN),
            ("adapter_len", MAX_SEQ_LEN),
            ("n_frequency", MAX_SEQ_LEN),
            ("waveft_n_frequency", MAX_SEQ_LEN),
            ("c3a_block_size", MAX_RANK),
            ("road_group_size", MAX_RANK),
            ("gralora_k", MAX_RANK),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PlanError(f"{name.replace('_', '-')} must be a whole number, got {value!r}")
            if value <= 0:
                raise PlanError(f"{name.replace('_', '-')} must be positive, got {value}")
            if value > limit:
                raise PlanError(f"{name.replace('_', '-')} of {value} is beyond the supported maximum of {limit}")
        if self.transformers_major not in (4, 5):
            raise PlanError(f"transformers major version must be 4 or 5, got {self.transformers_major}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise PlanError(f"lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise PlanError("lora-targets must name at least one module (or 'all-linear')")
        if isinstance(self.boft_block_num, bool) or not isinstance(self.boft_block_num, int) or self.boft_block_num < 0:
            raise PlanError(f"boft-block-num must be a whole number, 0 or more, got {self.boft_block_num!r}")
        if not isinstance(self.lokr_decompose_factor, int) or isinstance(self.lokr_decompose_factor, bool) \
                or (self.lokr_decompose_factor < 1 and self.lokr_decompose_factor != -1):
            raise PlanError(f"lokr-decompose-factor must be -1 (none) or a positive whole number, "
                            f"got {self.lokr_decompose_factor!r}")
        if isinstance(self.adapter_layers, bool) or not isinstance(self.adapter_layers, int) \
                or not 0 <= self.adapter_layers <= MAX_LAYERS:
            raise PlanError(f"adapter-layers must be a whole number from 0 (the default: the top 30) to {MAX_LAYERS}, "
                            f"got {self.adapter_layers!r}")
        if self.target_r > self.init_r:
            raise PlanError(f"target-r ({self.target_r}) must not exceed init-r ({self.init_r}): AdaLoRA only prunes")
        if self.attention == "flash" and self.device == "cpu":
            raise PlanError("attention 'flash' (FlashAttention 2) needs a CUDA device; use 'sdpa' or 'eager' on cpu")
        if self.checkpointing and self.method.checkpointing_refused:
            raise PlanError(f"{self.method.checkpointing_refused}; drop --grad-ckpt")
        kind, chunks = loss_parts(self.loss)
        object.__setattr__(self, "loss", kind if kind != "chunked" else f"chunked:{chunks}")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise unknown_choice("adapter dtype", self.adapter_dtype, ADAPTER_DTYPES)
        if self.packing not in PACKINGS:
            raise unknown_choice("packing", self.packing, PACKINGS)
        for name in self.modules_to_save:
            if name not in MODULES_TO_SAVE:
                raise unknown_choice("module to save", name, MODULES_TO_SAVE)
        if isinstance(self.grad_accum, bool) or not isinstance(self.grad_accum, int) or not 0 < self.grad_accum <= 1_000_000:
            raise PlanError(f"grad-accum must be a whole number from 1 to 1000000, got {self.grad_accum!r}")
        if self.lora_alpha is not None and (isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, int)
                                            or not 0 < self.lora_alpha <= MAX_RANK):
            raise PlanError(f"lora-alpha must be a whole number from 1 to {MAX_RANK}, got {self.lora_alpha!r}")
        if self.packing == "padding-free" and self.attention != "flash":
            raise PlanError("padding-free batches (one row of every sequence, position ids restarting) need "
                            "--attention flash: with sdpa or eager transformers builds a mask over the whole row")
        if self.activation_offload and not self.checkpointing:
            if self.method.checkpointing_refused:
                raise PlanError(f"--activation-offload moves the checkpointed layer inputs to host memory, and "
                                f"{self.method.name} cannot checkpoint ({self.method.checkpointing_refused}): "
                                "drop --activation-offload")
            raise PlanError("--activation-offload moves the checkpointed layer inputs to host memory (torchtune and "
                            "axolotl refuse it without checkpointing): add --grad-ckpt")
        if self.optimizer_in_backward and self.master_weights:
            raise PlanError("--optimizer-in-backward steps each bf16 parameter as its gradient is made; "
                            "--precision bf16-master keeps fp32 master weights that DeepSpeed steps after backward")

    # ---- derived facts ----------------------------------------------------------------
    @property
    def checkpointing(self) -> bool:
        return self.method.default_checkpointing(self) if self.grad_ckpt is None else self.grad_ckpt

    @property
    def mixed(self) -> bool:
        return self.precision.endswith("-mixed")

    @property
    def compute_dtype(self) -> str:
        """The dtype matrix products run in."""
        return self.precision.split("-")[0]

    @property
    def weight_dtype(self) -> str:
        """The dtype the (unquantized) model weights are stored in."""
        return "fp32" if self.mixed else self.compute_dtype

    @property
    def master_weights(self) -> bool:
        """bf16 weights with an fp32 master copy, fp32 gradients and fp32 optimizer states, as
        DeepSpeed's and Megatron's mixed precision keep them (18 bytes per trained parameter)."""
        return self.precision == "bf16-master"

    @property
    def loss_kind(self) -> str:
        return self.loss.partition(":")[0]

    @property
    def loss_chunks(self) -> int:
        return loss_parts(self.loss)[1]

    @property
    def adapter_storage(self) -> str:
        """The dtype LoRA's weights are kept in: fp32 (peft's upcast), or the one given."""
        return self.adapter_dtype

    @property
    def uses_foreach(self) -> bool:
        return self.device == "cuda" if self.foreach is None else self.foreach

    @property
    def activation_bytes(self) -> int:
        """Bytes per element of the activations the layers compute."""
        return self.method.activation_bytes(self)

    @property
    def virtual_tokens(self) -> int:
        """Tokens the method prepends to every sequence (prompt tuning and P-tuning)."""
        return self.method.virtual_tokens(self)

    @property
    def prefix_tokens(self) -> int:
        """Tokens the method prepends to every layer's keys and values (prefix tuning)."""
        return self.method.prefix_tokens(self)

    def with_(self, **changes: Any) -> TrainingSetup:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in fields(self) if name != "assumed"}
        out["method"] = self.method.name
        out["lora_targets"] = list(self.lora_targets)
        out["ia3_targets"] = list(self.ia3_targets)
        out["modules_to_save"] = list(self.modules_to_save)
        out["grad_ckpt"] = self.checkpointing
        out["foreach"] = self.uses_foreach
        return out
