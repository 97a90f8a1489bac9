"""Request: every option of a plan, as a person or a program gives it.

A field left at None takes its default (``DEFAULTS``); the plan records which of the defaults that
change the answer most were assumed rather than chosen (``ASSUMED``), so that nobody mistakes a
default for a fact. ``OPTIONS`` describes each field for the command line (flag, help, kind), so
that the command line is built from this one table.
"""

from __future__ import annotations

from fitplan.errors import PlanError
from fitplan.frozen import fields, frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

DEFAULTS: dict[str, Any] = {
    "method": None,              # every method of the short table
    "seq_len": 2048,
    "batch_size": 1,
    "precision": "bf16",
    "optimizer": "adamw",
    "attention": "sdpa",
    "grad_ckpt": None,           # the method's default (on for qlora)
    "lora_rank": 16,
    "lora_targets": "q,v",
    "lora_dropout": 0.0,
    "adapter_size": 64,
    "num_virtual_tokens": 20,
    "prefix_projection": False,
    "quant": "nf4",
    "double_quant": True,
    "kbit_upcast": True,
    "base": "none",              # the frozen base in the training dtype
    "ia3_targets": None,         # peft's IA3 mapping for the model type
    "vera_rank": 256,
    "lokr_decompose_both": False,
    "lokr_decompose_factor": -1,
    "oft_block_size": 32,
    "boft_block_size": 4,
    "boft_block_num": 0,
    "boft_n_butterfly_factor": 1,
    "init_r": 12,
    "target_r": 8,
    "num_token_indices": 16,
    "adapter_len": 10,
    "adapter_layers": 0,         # the top 30 (the LLaMA-Adapter paper's), or every layer of a shallower model
    "n_frequency": 1000,
    "waveft_n_frequency": 2592,
    "c3a_block_size": 256,
    "road_variant": "road_1",
    "road_group_size": 64,
    "gralora_k": 2,
    "transformers": 5,
    "device": "cuda",
    "gpus": 1,
    "sharding": "auto",
    "offload": "none",
    "gpus_per_node": 8,
    "tensor_parallel": 1,
    "pipeline_parallel": 1,
    "context_parallel": 1,
    "expert_parallel": 1,
    "pipeline_schedule": "1f1b",
    "virtual_stages": 1,
    "microbatches": None,        # twice the pipeline stages
    "sequence_parallel": True,
    "parallel_engine": "auto",   # megatron with zero1, torch otherwise
    "suggest": False,
    "max_batch": False,
    "max_seq_len": False,
    "tokens": None,
    "mfu": 0.40,
    "calibration": None,         # the GPU's own
    "task": None,                # moderate
    "examples": None,
    "dataset_tokens": None,
    "adapters": None,            # one task
    "stack": "hf",               # Trainer + peft (fitplan.stacks): what the planner models without a stack
    "loss": "standard",
    "compile": False,
    "optimizer_in_backward": False,
    "activation_offload": False,
    "adapter_dtype": "fp32",
    "lora_alpha": None,          # 2 x rank
    "modules_to_save": "",
    "packing": "none",
    "grad_accum": 1,
}

# defaults that the output lists as assumed when the user did not choose them: (words, option)
ASSUMED: dict[str, tuple[str, str]] = {
    "seq_len": ("sequence length", "--seq-len"),
    "batch_size": ("micro batch", "--batch-size"),
    "precision": ("precision", "--precision"),
    "optimizer": ("optimizer", "--optimizer"),
    "attention": ("attention kernel", "--attention"),
}


@frozen
class Option:
    """One field as the command line shows it."""

    field: str
    kind: str            # "str", "int", "float", "flag" (on only) or "switch" (--x/--no-x)
    help: str
    metavar: str | None = None
    bare: str | None = None   # the value of the option given without one (``--packing``: packed)


OPTIONS: tuple[Option, ...] = (
    Option("model", "str", "Preset or alias (see `plan models`), or a config.json / its folder.", "NAME|PATH"),
    Option("gpu", "str", "GPU to fit on (see `plan gpus`).", "NAME"),
    Option("method", "str", "full, lora, qlora, adapter, prefix, prompt, ptuning (the short table), dora, ia3, vera, "
                            "loha, lokr, adalora, oft, boft, ln-tuning, trainable-tokens, llama-adapter, fourierft, hra, "
                            "miss, c3a, road, shira, delora, gralora, waveft, or all [default: the short table].", "METHOD"),
    Option("lora_rank", "int", "LoRA / QLoRA rank [default: 16].", "R"),
    Option("lora_targets", "str", "Module names, roles (q,k,v,o,gate,up,down), lm_head (LoRA, QLoRA) or all-linear "
                                  "[default: q,v].", "T"),
    Option("lora_dropout", "float", "LoRA dropout: a saved mask per target [default: 0].", "P"),
    Option("adapter_size", "int", "Bottleneck width of Houlsby adapters [default: 64].", "N"),
    Option("num_virtual_tokens", "int", "Prefix, prompt and P-tuning tokens [default: 20].", "N"),
    Option("prefix_projection", "switch", "Prefix tuning's reparameterisation MLP [default: off]."),
    Option("base", "str", "LoRA-family methods: the frozen base's storage: none (the training dtype), gptq-int4, "
                          "gptq-int8, awq, hqq, fp8, bnb-int8, nf4 or fp4 [default: none].", "B"),
    Option("ia3_targets", "str", "IA3 target modules or roles [default: peft's mapping for the model type].", "T"),
    Option("vera_rank", "int", "VeRA rank of the shared projections [default: 256].", "R"),
    Option("lokr_decompose_both", "switch", "LoKr: factor the left Kronecker factor too [default: off]."),
    Option("lokr_decompose_factor", "int", "LoKr factorization target, -1 for the square root [default: -1].", "F"),
    Option("oft_block_size", "int", "OFT rotation block size [default: 32].", "B"),
    Option("boft_block_size", "int", "BOFT block size (0 with --boft-block-num) [default: 4].", "B"),
    Option("boft_block_num", "int", "BOFT number of blocks (0: from the block size) [default: 0].", "N"),
    Option("boft_n_butterfly_factor", "int", "BOFT butterfly factors (1 without peft's CUDA extension) [default: 1].", "N"),
    Option("init_r", "int", "AdaLoRA initial rank, kept in memory [default: 12].", "R"),
    Option("target_r", "int", "AdaLoRA average target rank [default: 8].", "R"),
    Option("num_token_indices", "int", "Trainable tokens: how many token ids train [default: 16].", "N"),
    Option("adapter_len", "int", "LLaMA-Adapter prompt length [default: 10].", "N"),
    Option("adapter_layers", "int", "LLaMA-Adapter layers from the top (0: the top 30, or all) [default: 0].", "N"),
    Option("n_frequency", "int", "FourierFT spectral coefficients per module [default: 1000].", "N"),
    Option("waveft_n_frequency", "int", "WaveFT wavelet coefficients per module [default: 2592].", "N"),
    Option("c3a_block_size", "int", "C3A circulant block size [default: 256].", "B"),
    Option("road_variant", "str", "RoAD variant: road_1, road_2 or road_4 [default: road_1].", "V"),
    Option("road_group_size", "int", "RoAD group size [default: 64].", "N"),
    Option("gralora_k", "int", "GraLoRA sub-blocks per side [default: 2].", "K"),
    Option("seq_len", "int", "Tokens per sequence [default: 2048].", "N"),
    Option("batch_size", "int", "Micro batch per GPU [default: 1].", "N"),
    Option("precision", "str", "fp32, bf16, fp16, bf16-mixed, fp16-mixed or bf16-master [default: bf16].", "P"),
    Option("optimizer", "str", "adamw, adamw-fused, adamw-8bit, paged-adamw, paged-adamw-8bit, sgd, sgd-momentum, "
                               "adafactor or lion [default: adamw].", "OPT"),
    Option("grad_ckpt", "switch", "Gradient checkpointing [default: on for qlora, off otherwise]."),
    Option("attention", "str", "eager, sdpa or flash [default: sdpa].", "IMPL"),
    Option("quant", "str", "QLoRA's 4-bit type: nf4 or fp4 [default: nf4].", "Q"),
    Option("double_quant", "switch", "bitsandbytes double quantization for qlora [default: on]."),
    Option("kbit_upcast", "switch", "qlora: peft's prepare_model_for_kbit_training keeps non-4-bit parameters "
                                    "(and so activations) in fp32 [default: on]."),
    Option("transformers", "int", "Major version of transformers to model: 4 (per-expert MoE linears, an extra "
                                  "fp32 logits copy) or 5 [default: 5].", "4|5"),
    Option("device", "str", "Kernels to model: cuda, or cpu (the validator's CPU runs) [default: cuda].", "D"),
    Option("gpus", "int", "GPUs the step is spread over (reported per GPU) [default: 1].", "N"),
    Option("sharding", "str", "auto, none, ddp, zero1, zero2, zero3, fsdp or hybrid (auto: fsdp when --gpus > 1) "
                              "[default: auto].", "S"),
    Option("offload", "str", "none, optimizer or params (to host memory) [default: none].", "O"),
    Option("gpus_per_node", "int", "GPUs per node, for nodes and hybrid sharding [default: 8].", "N"),
    Option("tensor_parallel", "int", "Tensor-parallel degree (Megatron / torchtitan column and row splits) "
                                     "[default: 1].", "T"),
    Option("pipeline_parallel", "int", "Pipeline-parallel stages [default: 1].", "P"),
    Option("context_parallel", "int", "Context-parallel degree: sequences split across GPUs (ring attention) "
                                      "[default: 1].", "C"),
    Option("expert_parallel", "int", "Expert-parallel degree for MoE experts, taken from the data ranks "
                                     "[default: 1].", "E"),
    Option("pipeline_schedule", "str", "1f1b, gpipe, interleaved or zbv (zero-bubble V) [default: 1f1b].", "S"),
    Option("virtual_stages", "int", "Pipeline stages per GPU (interleaved 1F1B) [default: 1].", "V"),
    Option("microbatches", "int", "Microbatches per step through the pipeline [default: twice the stages].", "M"),
    Option("sequence_parallel", "switch", "Sequence parallelism with tensor parallelism [default: on]."),
    Option("parallel_engine", "str", "megatron (Megatron-Core: gathers re-done in backward, fused vocab-parallel "
                                     "loss, a whole gradient buffer) or torch (DTensor, torch.distributed.pipelining, "
                                     "FSDP2: torchtitan) [default: auto: megatron with zero1, else torch].", "ENGINE"),
    Option("suggest", "flag", "Rank every catalog GPU by the cheapest configuration that holds the step."),
    Option("max_batch", "flag", "Find the largest micro batch that fits --gpu."),
    Option("max_seq_len", "flag", "Find the longest sequence that fits --gpu."),
    Option("tokens", "int", "Tokens to train on: adds time and cost estimates.", "N"),
    Option("mfu", "float", "Share of the GPU's bf16 peak reached, for --tokens [default: 0.40].", "F"),
    Option("calibration", "str", "A calibration file to apply, or 'none' for the defaults [default: the one "
                                 "measured on --gpu].", "FILE|none"),
    Option("task", "str", "What the fine-tuning must learn: simple (format, style, classification), moderate "
                          "(instructions in a known domain) or complex (a distant domain: code, mathematics, a new "
                          "language) [default: moderate].", "T"),
    Option("examples", "int", "Training examples you have (under 100: prompt instead).", "N"),
    Option("dataset_tokens", "int", "Tokens in the training data (sets the LoRA rank the evidence points to).", "N"),
    Option("adapters", "int", "Tasks one base model must serve (several: one LoRA adapter each).", "N"),
    Option("stack", "str", "The training stack whose defaults apply: hf (Trainer + peft), trl, torchtune, litgpt, "
                           "axolotl, unsloth, llama-factory or swift (data/stacks) [default: hf].", "NAME"),
    Option("loss", "str", "standard (full fp32 logits), chunked[:N] (N chunks upcast one at a time, torchtune's 8), "
                          "liger or unsloth (fused linear cross-entropy), cce (Cut Cross-Entropy) or trl (TRL's "
                          "fused LM head) [default: standard].", "L"),
    Option("compile", "switch", "torch.compile of the decoder layers and the loss [default: off]."),
    Option("optimizer_in_backward", "switch", "Step each parameter inside backward and free its gradient "
                                              "(torchtune's optimizer_in_bwd) [default: off]."),
    Option("activation_offload", "switch", "Offload the checkpointed layer inputs to host memory (needs "
                                           "checkpointing) [default: off]."),
    Option("adapter_dtype", "str", "LoRA weights' dtype: fp32 (peft's upcast), bf16 or fp16 (the model's, as "
                                   "torchtune and LitGPT keep them) [default: fp32].", "D"),
    Option("lora_alpha", "int", "LoRA alpha (scaling only: no memory) [default: 2 x rank].", "A"),
    Option("modules_to_save", "str", "Base modules trained as full copies beside LoRA: lm_head, embed_tokens "
                                     "[default: none].", "M"),
    Option("grad_accum", "int", "Micro batches accumulated per optimizer step: under FSDP they accumulate "
                                "unsharded gradients (no_sync) [default: 1].", "N"),
    Option("packing", "str", "none (batches padded to the longest: --seq-len is that length), packed (rows of "
                             "--seq-len packed sequences; --packing alone) or padding-free (one row, flash attention) "
                             "[default: none].", "P", bare="packed"),
)


@frozen
class Request:
    """Every option of a plan. None means "not given": the default applies (``DEFAULTS``).

    ``model`` is a preset or alias (``plan models``), or the path of a ``config.json`` or of a
    folder holding one; ``gpu`` a catalog name or alias (``plan gpus``). The rest are the
    command line's options under their field names (``--seq-len`` is ``seq_len``).
    """

    model: str | None = None
    gpu: str | None = None
    method: str | None = None
    lora_rank: int | None = None
    lora_targets: str | None = None
    lora_dropout: float | None = None
    adapter_size: int | None = None
    num_virtual_tokens: int | None = None
    prefix_projection: bool | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    precision: str | None = None
    optimizer: str | None = None
    grad_ckpt: bool | None = None
    attention: str | None = None
    quant: str | None = None
    double_quant: bool | None = None
    kbit_upcast: bool | None = None
    base: str | None = None
    ia3_targets: str | None = None
    vera_rank: int | None = None
    lokr_decompose_both: bool | None = None
    lokr_decompose_factor: int | None = None
    oft_block_size: int | None = None
    boft_block_size: int | None = None
    boft_block_num: int | None = None
    boft_n_butterfly_factor: int | None = None
    init_r: int | None = None
    target_r: int | None = None
    num_token_indices: int | None = None
    adapter_len: int | None = None
    adapter_layers: int | None = None
    n_frequency: int | None = None
    waveft_n_frequency: int | None = None
    c3a_block_size: int | None = None
    road_variant: str | None = None
    road_group_size: int | None = None
    gralora_k: int | None = None
    transformers: int | None = None
    device: str | None = None
    gpus: int | None = None
    sharding: str | None = None
    offload: str | None = None
    gpus_per_node: int | None = None
    tensor_parallel: int | None = None
    pipeline_parallel: int | None = None
    context_parallel: int | None = None
    expert_parallel: int | None = None
    pipeline_schedule: str | None = None
    virtual_stages: int | None = None
    microbatches: int | None = None
    sequence_parallel: bool | None = None
    parallel_engine: str | None = None
    suggest: bool | None = None
    max_batch: bool | None = None
    max_seq_len: bool | None = None
    tokens: int | None = None
    mfu: float | None = None
    calibration: str | None = None
    task: str | None = None
    examples: int | None = None
    dataset_tokens: int | None = None
    adapters: int | None = None
    stack: str | None = None
    loss: str | None = None
    compile: bool | None = None
    optimizer_in_backward: bool | None = None
    activation_offload: bool | None = None
    adapter_dtype: str | None = None
    lora_alpha: int | None = None
    modules_to_save: str | None = None
    packing: str | None = None
    grad_accum: int | None = None

    @classmethod
    def of(cls, **options: Any) -> Request:
        """A request from keyword arguments; an unknown keyword is bad input naming the valid ones."""
        names = set(fields(cls))
        unknown = sorted(set(options) - names)
        if unknown:
            raise PlanError(f"unknown option(s) {', '.join(unknown)}. Valid: {', '.join(sorted(names))}")
        return cls(**options)

    def given(self, name: str) -> bool:
        """Whether the user chose this option (rather than leaving its default)."""
        return getattr(self, name, None) is not None

    def value(self, name: str) -> Any:
        """The option's value: the user's, else the default."""
        v = getattr(self, name)
        return DEFAULTS.get(name) if v is None else v

    @property
    def assumed(self) -> tuple[str, ...]:
        """The influential options left at their defaults, in the order the output lists them."""
        return tuple(k for k in ASSUMED if not self.given(k))

    def to_dict(self) -> dict[str, Any]:
        """The options as given (None where not given)."""
        return {name: getattr(self, name) for name in fields(self)}
