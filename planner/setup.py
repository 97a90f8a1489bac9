"""TrainingSetup: everything about one method's training step that memory depends on, checked on creation."""

from __future__ import annotations

from fitplan.errors import PlanError, unknown_choice
from fitplan.frozen import field, fields, frozen, replace
from fitplan.methods import Method
from fitplan.methods import method as get_method
from fitplan.optimizers import NAMES as OPTIMIZERS

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed", "bf16-master")
ATTENTIONS = ("eager", "sdpa", "flash")
DEVICES = ("cuda", "cpu")
QUANTS = ("nf4", "fp4")

# Limits that catch typos and absurd input before any arithmetic (bytes stay well inside int64).
MAX_SEQ_LEN = 10_000_000
MAX_BATCH = 1_000_000
MAX_RANK = 65_536
MAX_GPUS = 100_000


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
        for name, limit in (
            ("seq_len", MAX_SEQ_LEN),
            ("batch_size", MAX_BATCH),
            ("lora_rank", MAX_RANK),
            ("adapter_size", MAX_RANK),
            ("num_virtual_tokens", MAX_SEQ_LEN),
            ("gpus", MAX_GPUS),
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
        if self.attention == "flash" and self.device == "cpu":
            raise PlanError("attention 'flash' (FlashAttention 2) needs a CUDA device; use 'sdpa' or 'eager' on cpu")
        if self.checkpointing and self.method.checkpointing_refused:
            raise PlanError(f"{self.method.checkpointing_refused}; drop --grad-ckpt")

    # ---- derived facts ----------------------------------------------------------------
    @property
    def checkpointing(self) -> bool:
        return self.method.checkpointing_default if self.grad_ckpt is None else self.grad_ckpt

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
        out["grad_ckpt"] = self.checkpointing
        out["foreach"] = self.uses_foreach
        return out
