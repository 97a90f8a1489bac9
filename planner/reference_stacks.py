"""The rows of ``data/reference/published_memory_stacks.csv`` as a careful user would plan them.

Each row is written out as the options a user would type for its published settings, read from
the row's own columns and notes (the config it quotes, the stack's documented defaults), never
from its measured value: ``BEFORE`` with only the options the planner had before the stacks
(precision, optimizer, checkpointing, rank, targets, batch, sequence, attention, quantization,
sharding), ``AFTER`` adding ``--stack`` and the options the stacks brought (loss, compile,
optimizer in backward, activation offload, adapter dtype, alpha, packing). A row the planner cannot
express gives the reason instead.

Sequence lengths: a packed or fixed length is that length; a cap over batches padded to the
longest is the dataset's longest sample under the cap (the peak is at the batch that holds it):
Alpaca's longest is 1,304 Llama-2 tokens (LitGPT's tables), 1,034-1,044 for 50k-vocabulary
tokenizers, so about 1,040 for the 128k and 151k vocabularies of Llama 3 and Qwen; Alpaca-cleaned
truncated at 512 is 512; chat and reasoning sets whose samples exceed the cap (FineTome,
OpenMathReasoning, Multilingual-Thinking) reach it.

Measured kinds: torchtune's ``peak_memory_active`` and an unstated torchtune counter are compared
with allocated, LitGPT's and Liger's ``max_memory_allocated`` with allocated, unsloth's, axolotl's
and torchtitan's reserved with reserved, the PEFT docs' screenshots with device used.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

ALPACA_L3 = 1040      # Alpaca's longest sample, Llama-3 / Qwen tokens (see the module docstring)
ALPACA_L2 = 1304      # Llama-2 tokens (LitGPT's resource tables)

_TT = dict(precision="bf16", attention="sdpa")
_ALL7 = "q,k,v,o,gate,up,down"
_TT_LORA = "q,v,o,gate,up,down"       # torchtune's q_proj, v_proj, output_proj + MLP


def _ladder(**changes: Any) -> dict[str, Any]:
    return {"model": "llama-3.2-3b", "method": "full", "batch_size": 2, "optimizer": "adamw", **_TT, **changes}


# id -> (stack, before options, options the stacks added, GPU or None, measured kind) or the reason
ROWS: dict[str, Any] = {
    # torchtune README "Optimization flags" (Llama-3.2-3B, A100, batch 2, max 4096, bf16), each lever on top
    "TTUNE-01": ("torchtune", _ladder(seq_len=ALPACA_L3, grad_ckpt=False),
                 dict(loss="standard", optimizer_in_backward=False), "a100-80", "allocated"),
    "TTUNE-02": ("torchtune", _ladder(seq_len=4096, grad_ckpt=False),
                 dict(loss="standard", optimizer_in_backward=False, packing="packed"), "a100-80", "allocated"),
    "TTUNE-03": ("torchtune", _ladder(seq_len=4096, grad_ckpt=False),
                 dict(loss="standard", optimizer_in_backward=False, packing="packed", compile=True), "a100-80", "allocated"),
    "TTUNE-04": ("torchtune", _ladder(seq_len=4096, grad_ckpt=False),
                 dict(loss="chunked:8", optimizer_in_backward=False, packing="packed", compile=True), "a100-80", "allocated"),
    "TTUNE-05": ("torchtune", _ladder(seq_len=4096, grad_ckpt=True),
                 dict(loss="chunked:8", optimizer_in_backward=False, packing="packed", compile=True), "a100-80", "allocated"),
    "TTUNE-06": ("torchtune", _ladder(seq_len=4096, grad_ckpt=True),
                 dict(loss="chunked:8", optimizer_in_backward=True, packing="packed", compile=True), "a100-80", "allocated"),
    "TTUNE-07": ("torchtune", _ladder(seq_len=4096, grad_ckpt=True),
                 dict(loss="chunked:8", optimizer_in_backward=True, packing="packed", compile=True,
                      activation_offload=True), "a100-80", "allocated"),
    # "+ 8-bit AdamW": the linked tutorial's (memory_optimizations.rst 171-189) torchao AdamW8bit, whose
    # states the allocator sees (not bitsandbytes' paged one); bitsandbytes' 8-bit AdamW is the nearest
    # the planner has (torchao's fp32 moment copies in its step are not modelled)
    "TTUNE-08": ("torchtune", _ladder(seq_len=4096, grad_ckpt=True, optimizer="adamw-8bit"),
                 dict(loss="chunked:8", optimizer_in_backward=True, packing="packed", compile=True,
                      activation_offload=True), "a100-80", "allocated"),
    "TTUNE-09": ("torchtune", _ladder(method="lora", seq_len=4096, grad_ckpt=True, lora_rank=64, lora_targets=_TT_LORA),
                 dict(optimizer="adamw-fused", loss="chunked:8", packing="packed", compile=True, activation_offload=True,
                      lora_alpha=128), "a100-80", "allocated"),
    "TTUNE-10": ("torchtune", _ladder(method="qlora", seq_len=4096, grad_ckpt=True, lora_rank=64, lora_targets=_TT_LORA,
                                      kbit_upcast=False, double_quant=True),
                 dict(optimizer="adamw-fused", loss="chunked:8", packing="packed", compile=True, activation_offload=True,
                      lora_alpha=128), "a100-80", "allocated"),
    # README "Memory and training speed" (batch 2, packed 2048, compile on; the configs' defaults)
    "TTUNE-11": ("torchtune", dict(model="llama-3.1-8b", method="full", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   optimizer="paged-adamw-8bit", **_TT),
                 dict(packing="packed", compile=True, optimizer_in_backward=True), "a6000", "allocated"),
    "TTUNE-12": ("torchtune", dict(model="llama-3.1-8b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=8, lora_targets=_ALL7, kbit_upcast=False, double_quant=True, **_TT),
                 dict(optimizer="adamw-fused", packing="packed", compile=True, lora_alpha=16), "rtx-4090", "allocated"),
    "TTUNE-13": ("torchtune", dict(model="llama-3.1-70b", method="lora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=16, lora_targets="q,k,v", gpus=8, sharding="fsdp", **_TT),
                 dict(optimizer="adamw-fused", packing="packed", compile=True, lora_alpha=32), "a100-80", "allocated"),
    "TTUNE-14": ("torchtune", dict(model="llama-3.1-405b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=16, lora_targets=_ALL7, kbit_upcast=False, double_quant=True, gpus=8,
                                   sharding="fsdp", **_TT),
                 dict(optimizer="adamw-fused", packing="packed", compile=True, lora_alpha=32), "a100-80", "allocated"),
    # v0.1 tutorials (Llama-2-7B, alpaca-cleaned truncated at 512, batch 2, CrossEntropyLoss, AC on)
    "TTUNE-15": ("torchtune", dict(model="llama-2-7b", method="lora", batch_size=2, seq_len=512, grad_ckpt=True,
                                   lora_rank=8, lora_targets="q,v", optimizer="adamw", **_TT),
                 dict(loss="standard", lora_alpha=16), None, "reserved"),
    "TTUNE-16": ("torchtune", dict(model="llama-2-7b", method="lora", batch_size=2, seq_len=512, grad_ckpt=True,
                                   lora_rank=64, lora_targets=_ALL7 + ",lm_head", optimizer="adamw", **_TT),
                 dict(loss="standard", lora_alpha=128), None, "reserved"),
    "TTUNE-17": ("torchtune", dict(model="llama-2-7b", method="qlora", batch_size=2, seq_len=512, grad_ckpt=True,
                                   lora_rank=8, lora_targets=_ALL7, optimizer="adamw", kbit_upcast=False,
                                   double_quant=True, **_TT),
                 dict(loss="standard", lora_alpha=16, compile=False), None, "reserved"),
    # LitGPT resource tables (lit-gpt 8641822, A100-40GB, bf16-true, LoRA r8 alpha 16 q,v on the fused qkv)
    "LITGPT-01": "microsoft/phi-1_5 has no preset (phi-2's config differs)",
    "LITGPT-02": "stabilityai/stablelm-base-alpha-3b (gpt_neox) has no preset (stablelm-3b is StableLM-3B-4E1T)",
    "LITGPT-03": "stabilityai/stablelm-base-alpha-3b has no preset",
    "LITGPT-04": ("litgpt", dict(model="llama-2-7b", method="lora", batch_size=1, seq_len=ALPACA_L2, grad_ckpt=False,
                                 lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", **_TT),
                  dict(lora_alpha=16), "a100-40", "allocated"),
    "LITGPT-05": ("litgpt", dict(model="llama-2-7b", method="qlora", batch_size=1, seq_len=ALPACA_L2, grad_ckpt=False,
                                 lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="paged-adamw",
                                 kbit_upcast=False, double_quant=False, **_TT),
                  dict(lora_alpha=16), "a100-40", "allocated"),
    "LITGPT-06": ("litgpt", dict(model="llama-2-7b", method="lora", batch_size=2, seq_len=ALPACA_L2, grad_ckpt=False,
                                 lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", **_TT),
                  dict(lora_alpha=16), "a100-40", "allocated"),
    "LITGPT-07": ("litgpt", dict(model="llama-2-13b", method="lora", batch_size=1, seq_len=ALPACA_L2, grad_ckpt=False,
                                 lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", **_TT),
                  dict(lora_alpha=16), "a100-40", "allocated"),
    "LITGPT-09": ("litgpt", dict(model="llama-2-7b", method="llama-adapter", batch_size=1, seq_len=ALPACA_L2,
                                 grad_ckpt=False, adapter_len=10, adapter_layers=30, optimizer="adamw", **_TT),
                  dict(), "a100-40", "allocated"),
    "LITGPT-10": ("litgpt", dict(model="llama-2-7b", method="lora", batch_size=1, seq_len=ALPACA_L2, grad_ckpt=True,
                                 lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", gpus=2,
                                 sharding="fsdp", **_TT),
                  # Fabric's FSDPStrategy wraps each Block (frozen and LoRA weights in one flat parameter);
                  # a minibatch of 128 over 2 ranks at micro batch 1: 64 accumulated under no_backward_sync
                  dict(lora_alpha=16, sharding="fsdp1", grad_accum=64), "a100-40", "allocated"),
    "LITGPT-11": ("litgpt", dict(model="llama-2-13b", method="lora", batch_size=1, seq_len=ALPACA_L2, grad_ckpt=True,
                                 lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", gpus=4,
                                 sharding="fsdp", **_TT),
                  dict(lora_alpha=16, sharding="fsdp1", grad_accum=32), "a100-40", "allocated"),
    "LITGPT-12": "stabilityai/stablelm-base-alpha-3b has no preset",
    # config hub benchmarks (Alpaca2k truncated at 512, A10G)
    "LITGPT-13": ("litgpt", dict(model="llama-3.1-8b", method="lora", batch_size=1, seq_len=512, grad_ckpt=False,
                                 lora_rank=32, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", **_TT),
                  dict(lora_alpha=16), "a10g", "allocated"),
    "LITGPT-14": ("litgpt", dict(model="llama-3.1-8b", method="qlora", batch_size=2, seq_len=512, grad_ckpt=False,
                                 lora_rank=32, lora_targets="q,v", lora_dropout=0.05, optimizer="paged-adamw",
                                 kbit_upcast=False, double_quant=False, **_TT),
                  dict(lora_alpha=16), "a10g", "allocated"),
    "LITGPT-15": ("litgpt", dict(model="gemma-2-9b", method="qlora", batch_size=1, seq_len=512, grad_ckpt=False,
                                 lora_rank=16, lora_targets=_ALL7 + ",lm_head", lora_dropout=0.05,
                                 optimizer="paged-adamw", kbit_upcast=False, double_quant=False, precision="bf16"),
                  dict(lora_alpha=16), "a10g", "allocated"),
    # unsloth's executed notebooks (QLoRA unless stated, all seven projections, adamw_8bit, 'unsloth' checkpointing);
# gpt-oss has no gate/up/down linears (fused experts): its notebooks' targets land on q, k, v, o (the trainable
# counts in the notes, 3,981,312 at r8, are exactly that); its notebooks ran transformers 4.55-4.56 with the experts
# quantized to 4 bits (--transformers 4: per-expert linears, quantized) and unsloth's flex attention, which keeps no
# scores (as flash)
    "UNSLOTH-01": ("unsloth", dict(model="llama-3.1-8b", method="qlora", batch_size=2, seq_len=ALPACA_L3, grad_ckpt=True,
                                   lora_rank=16, lora_targets=_ALL7, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="fp16"),
                   dict(lora_alpha=16), "t4", "reserved"),
    "UNSLOTH-02": ("unsloth", dict(model="llama-3.2-3b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=16, lora_targets=_ALL7, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="fp16"),
                   dict(lora_alpha=16), "t4", "reserved"),
    "UNSLOTH-03": ("unsloth", dict(model="llama-3.3-70b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=16, lora_targets=_ALL7, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="bf16"),
                   dict(lora_alpha=16), "a100-80", "reserved"),
    "UNSLOTH-04": ("unsloth", dict(model="qwen3-14b", method="qlora", batch_size=2, seq_len=ALPACA_L3, grad_ckpt=True,
                                   lora_rank=16, lora_targets=_ALL7, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="fp16"),
                   dict(lora_alpha=16), "t4", "reserved"),
    "UNSLOTH-05": ("unsloth", dict(model="qwen3-32b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=32, lora_targets=_ALL7, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="bf16"),
                   dict(lora_alpha=32), "a100-40", "reserved"),
    "UNSLOTH-06": ("unsloth", dict(model="gemma-3-27b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                                   lora_rank=8, lora_targets="all-linear", optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="bf16"),
                   dict(lora_alpha=8), "a100-40", "reserved"),
    "UNSLOTH-07": "google/gemma-4-12b-it has no preset",
    "UNSLOTH-08": "google/gemma-4-26B-A4B-it has no preset",
    "UNSLOTH-09": "google/gemma-4-31B-it has no preset",
    "UNSLOTH-10": ("unsloth", dict(model="gpt-oss-20b", method="qlora", batch_size=1, seq_len=1024, grad_ckpt=True,
                                   lora_rank=8, lora_targets="q,k,v,o", attention="flash", transformers=4, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="fp16"),
                   dict(lora_alpha=16), "t4", "reserved"),
    "UNSLOTH-11": ("unsloth", dict(model="gpt-oss-120b", method="qlora", batch_size=4, seq_len=4096, grad_ckpt=True,
                                   lora_rank=16, lora_targets="q,k,v,o", attention="flash", transformers=4, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="bf16"),
                   dict(lora_alpha=32), "a100-80", "reserved"),
    "UNSLOTH-12": ("unsloth", dict(model="gpt-oss-20b", method="qlora", batch_size=1, seq_len=486_607, grad_ckpt=True,
                                   lora_rank=8, lora_targets="q,k,v,o", attention="flash", transformers=4, optimizer="adamw-8bit", kbit_upcast=False,
                                   double_quant=True, precision="bf16"),
                   dict(lora_alpha=16), "a100-80", "reserved"),
    "UNSLOTH-13": "zai-org/GLM-4.7-Flash has no preset",
    "UNSLOTH-14": "baidu/ERNIE-4.5-21B-A3B-PT has no preset",
    "UNSLOTH-15": ("unsloth", dict(model="qwen3.5-27b", method="lora", batch_size=4, seq_len=2048, grad_ckpt=True,
                                   lora_rank=8, lora_targets=_ALL7 + ",out_proj", optimizer="adamw-8bit",
                                   precision="bf16"),
                   dict(lora_alpha=16), "a100-80", "reserved"),
    "UNSLOTH-17": ("unsloth", dict(model="qwen3-0.6b", method="full", batch_size=2, seq_len=1024, grad_ckpt=True,
                                   optimizer="adamw-8bit", precision="fp16"),
                   dict(precision="fp16-mixed"), "t4", "reserved"),   # full fine-tuning upcasts to fp32 (unsloth.json)
    # axolotl example READMEs (gpt-oss: FA3, packed 4096, CCE plugin, activation offloading)
    "AXO-01": "LoRA on the experts of layers 22-23 only (lora_target_parameters) is not expressible",
    "AXO-02": ("axolotl", dict(model="gpt-oss-20b", method="full", batch_size=1, seq_len=4096, grad_ckpt=True,
                               optimizer="adamw", attention="flash", precision="bf16", gpus=2, sharding="fsdp",
                               offload="params"),
               dict(packing="packed", activation_offload=True, loss="cce"), None, "reserved"),
    "AXO-03": ("axolotl", dict(model="gpt-oss-20b", method="full", batch_size=1, seq_len=4096, grad_ckpt=True,
                               optimizer="adamw-8bit", attention="flash", precision="bf16", gpus=8, sharding="fsdp"),
               dict(packing="packed", activation_offload=True, loss="cce"), None, "reserved"),
    "AXO-04": ("axolotl", dict(model="gpt-oss-20b", method="full", batch_size=1, seq_len=4096, grad_ckpt=True,
                               optimizer="adamw-8bit", attention="flash", precision="bf16", gpus=4, sharding="fsdp"),
               dict(packing="packed", activation_offload=True, loss="cce"), None, "reserved"),
    "AXO-05": ("axolotl", dict(model="gpt-oss-120b", method="full", batch_size=1, seq_len=4096, grad_ckpt=True,
                               optimizer="adamw", attention="flash", precision="bf16", gpus=8, sharding="fsdp",
                               offload="params"),
               dict(packing="packed", activation_offload=True, loss="cce"), "h100-80", "reserved"),
    "AXO-06": "torchao's 4-bit AdamW (adamw_torch_4bit) is not in the optimizer table",
    "AXO-07": "torchao's 4-bit AdamW (adamw_torch_4bit) is not in the optimizer table",
    "AXO-08": "torchao's 4-bit AdamW (adamw_torch_4bit) is not in the optimizer table",
    "AXO-09": "quantize_moe_experts (4-bit fused routed experts) is not modelled: transformers 5 keeps them unquantized",
    "AXO-10": "quantize_moe_experts (4-bit fused routed experts) is not modelled",
    "AXO-11": "ByteDance-Seed/Seed-OSS-36B-Instruct has no preset",
    "AXO-12": "ibm-granite/granite-4.0-tiny-preview (hybrid Mamba2) has no preset",
    "AXO-13": "moonshotai/Kimi-Linear-48B-A3B-Instruct has no preset",
    "AXO-14": "google/gemma-4-31B has no preset",
    "AXO-15": "zai-org/GLM-4.7-Flash has no preset",
    # torchtitan: pre-training recipes
    "TITAN-01": "selective (per-op) activation checkpointing is not modelled",
    "TITAN-03": "selective (per-op) activation checkpointing is not modelled",
    "TITAN-04": "Float8 linears (torchao) are not modelled",
    "TITAN-05": "context parallelism with Float8 linears is not modelled here",
    "TITAN-06": "tensor parallelism with Float8 linears is not modelled here",
    "TITAN-07": "pipeline and tensor parallelism with Float8 linears are not modelled here",
    "TITAN-08": "selective activation checkpointing and Float8 linears are not modelled",
    "TITAN-09": "the recipe's checkpointing is not stated",
    # Liger's HF Trainer example (TRL SFTTrainer on transformers 4.43, FSDP1 x4 with AC, alpaca <= 512)
    "LIGER-01": ("hf", dict(model="llama-3.1-8b", method="full", batch_size=32, seq_len=512, grad_ckpt=True,
                            optimizer="adamw", precision="bf16", gpus=4, sharding="fsdp", transformers=4),
                 dict(loss="standard"), "a100-80", "allocated"),
    "LIGER-02": ("hf", dict(model="llama-3.1-8b", method="full", batch_size=32, seq_len=512, grad_ckpt=True,
                            optimizer="adamw", precision="bf16", gpus=4, sharding="fsdp", transformers=4),
                 dict(loss="liger"), "a100-80", "allocated"),
    "LIGER-04": ("hf", dict(model="qwen2.5-7b", method="full", batch_size=32, seq_len=512, grad_ckpt=True,
                            optimizer="adamw", precision="bf16", gpus=4, sharding="fsdp", transformers=4),
                 dict(loss="standard"), "a100-80", "allocated"),
    "LIGER-05": ("hf", dict(model="qwen2.5-7b", method="full", batch_size=32, seq_len=512, grad_ckpt=True,
                            optimizer="adamw", precision="bf16", gpus=4, sharding="fsdp", transformers=4),
                 dict(loss="liger"), "a100-80", "allocated"),
    "LIGER-06": ("hf", dict(model="qwen2.5-7b", method="full", batch_size=64, seq_len=512, grad_ckpt=True,
                            optimizer="adamw", precision="bf16", gpus=4, sharding="fsdp", transformers=4),
                 dict(loss="liger"), "a100-80", "allocated"),
    # the PEFT docs' multi-GPU Llama-2-70B runs (TRL SFTTrainer, packed 2048, FA2, GC, LoRA r8 all-linear)
    "PEFTDOC-01": ("hf", dict(model="llama-2-70b", method="lora", batch_size=8, seq_len=2048, grad_ckpt=True,
                              lora_rank=8, lora_targets="all-linear", lora_dropout=0.1, optimizer="adamw",
                              precision="bf16", attention="flash", gpus=8, sharding="fsdp", transformers=4),
                   dict(packing="packed", lora_alpha=16), "h100-80", "device_used"),
    "PEFTDOC-02": ("hf", dict(model="llama-2-70b", method="lora", batch_size=8, seq_len=2048, grad_ckpt=True,
                              lora_rank=8, lora_targets="all-linear", lora_dropout=0.1, optimizer="adamw",
                              precision="bf16", attention="flash", gpus=8, sharding="zero3", transformers=4),
                   dict(packing="packed", lora_alpha=16), "h100-80", "device_used"),
    "PEFTDOC-03": ("hf", dict(model="llama-2-70b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                              lora_rank=8, lora_targets="all-linear", lora_dropout=0.1, optimizer="adamw",
                              precision="bf16", attention="flash", gpus=2, sharding="fsdp", offload="params",
                              kbit_upcast=False, double_quant=True, transformers=4),
                   dict(packing="packed", lora_alpha=16), None, "device_used"),
    "PEFTDOC-04": ("hf", dict(model="llama-2-70b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                              lora_rank=8, lora_targets="all-linear", lora_dropout=0.1, optimizer="adamw",
                              precision="bf16", attention="flash", gpus=2, sharding="fsdp", kbit_upcast=False,
                              double_quant=True, transformers=4),
                   dict(packing="packed", lora_alpha=16), None, "device_used"),
    "PEFTDOC-05": ("hf", dict(model="llama-2-70b", method="qlora", batch_size=2, seq_len=2048, grad_ckpt=True,
                              lora_rank=8, lora_targets="all-linear", lora_dropout=0.1, optimizer="adamw",
                              precision="bf16", attention="flash", gpus=2, sharding="zero3", kbit_upcast=False,
                              double_quant=True, transformers=4),
                   dict(packing="packed", lora_alpha=16), None, "device_used"),
    # torchtune PR #961: 7B_full_low_memory (PagedAdamW + optimizer_in_bwd), batch 4 x 2048, CrossEntropyLoss
    "ISSUE-01": ("torchtune", dict(model="llama-2-7b", method="full", batch_size=4, seq_len=2048, grad_ckpt=True,
                                   optimizer="paged-adamw", **_TT),
                 dict(loss="standard", optimizer_in_backward=True), None, "allocated"),
    "ISSUE-02": ("torchtune", dict(model="llama-2-7b", method="full", batch_size=4, seq_len=2048, grad_ckpt=True,
                                   optimizer="paged-adamw", **_TT),
                 dict(loss="standard", optimizer_in_backward=True), None, "allocated"),
    # llama-recipes PR #41: FSDP pure bf16 LoRA r8 q,v (peft of 2023: adapters in the model's dtype), eager
    "ISSUE-03": ("hf", dict(model="llama-2-7b", method="lora", batch_size=4, seq_len=2048, grad_ckpt=True,
                            lora_rank=8, lora_targets="q,v", lora_dropout=0.05, optimizer="adamw", precision="bf16",
                            attention="eager", gpus=4, sharding="fsdp", transformers=4),
                 dict(adapter_dtype="bf16", lora_alpha=32), "a100-40", "reserved"),
}

# what the stacks brought: dropped for the "before" figure
NEW_OPTIONS = ("stack", "loss", "compile", "optimizer_in_backward", "activation_offload", "adapter_dtype", "lora_alpha",
               "modules_to_save", "packing", "grad_accum")


def options_for(row_id: str, with_stacks: bool = True) -> tuple[str, dict[str, Any], str | None, str] | str:
    """(stack, the request's options, GPU or None, measured kind) for a stacks row, or why it is not
    expressible. ``with_stacks=False``: the options the planner had before the stacks."""
    entry = ROWS.get(row_id)
    if entry is None:
        return "not mapped"
    if isinstance(entry, str):
        return entry
    stack, before, new, gpu, kind = entry
    options = dict(before)
    if with_stacks:
        options.update(new)
        options["stack"] = stack
    return stack, options, gpu, kind
