"""The training step's loss as each stack computes it, for the validator's measured steps.

- ``standard``: the model's own loss (``model(input_ids, labels=...).loss``: transformers'
  ``ForCausalLMLoss``, what Trainer + peft, axolotl, LLaMA-Factory and ms-swift run).
- ``chunked:N``: torchtune's ``CEWithChunkedOutputLoss`` reproduced with plain torch: the backbone's
  hidden states cut into N chunks along the sequence, the head applied to each
  (``torchtune/modules/transformer.py`` 482-500), each chunk upcast and cross-entropied with
  ``reduction="sum"`` (``ce_chunked_output_loss.py`` 35-43, 66-88), labels shifted by appending the
  ignore index (``recipes/lora_finetune_single_device.py`` 645-657), the logits deleted before
  backward (658-659).
- ``litgpt``: LitGPT's ``lm_head_chunk_size=128`` and ``chunked_cross_entropy`` (``litgpt/utils.py``
  302-331): 128-token slices, no upcast, the logits list kept through backward.
- ``trl``: TRL's own fused LM head, as SFTTrainer installs and calls it (``add_fused_lm_head``,
  ``model(..., fused_lm_head=True)``, ``trl/trainer/sft_trainer.py`` 1142-1147, 1610-1618); needs trl.
- ``liger``, ``unsloth``, ``cce``: Triton kernels that need a CUDA device; they are modelled from
  their source (``fitplan.memory.logits``) and refused here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from fitplan.errors import PlanError
from fitplan.setup import TrainingSetup

IGNORE = -100
LITGPT_CHUNK = 128


def _parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the backbone returning hidden states, the output head) of a causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base.model, base.get_output_embeddings()


def prepare(model: torch.nn.Module, setup: TrainingSetup) -> None:
    """What a loss needs installed on the model before training (TRL's fused head)."""
    if setup.loss_kind in ("liger", "unsloth", "cce"):
        raise PlanError(f"--loss {setup.loss_kind} runs Triton kernels that need a CUDA device; it is modelled from "
                        "its source (fitplan.memory.logits), not measured on a CPU")
    if setup.loss_kind == "trl":
        try:
            from trl.trainer.utils import add_fused_lm_head
        except ImportError:
            raise PlanError("--loss trl measures TRL's own fused LM head: pip install trl") from None
        if not getattr(model, "_fitplan_fused_head", False):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            # SFTTrainer asks for the entropy and top-1 flags beside the log-probabilities (metrics)
            add_fused_lm_head(base, outputs=("log_probs", "entropy", "is_top1"))
            model._fitplan_fused_head = True


def training_loss(model: torch.nn.Module, ids: torch.Tensor, setup: TrainingSetup) -> torch.Tensor:
    """The step's scalar loss for ``ids`` (labels = the inputs), as ``setup.loss`` computes it."""
    kind = setup.loss_kind
    if kind == "standard":
        return model(input_ids=ids, labels=ids).loss
    if kind == "trl":
        return model(input_ids=ids, labels=ids, fused_lm_head=True).loss
    backbone, head = _parts(model)
    hidden = backbone(input_ids=ids).last_hidden_state
    labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], IGNORE)], dim=1)
    count = (labels != IGNORE).sum()
    if kind == "chunked":
        n = setup.loss_chunks
        logits = [head(h) for h in hidden.chunk(n, dim=1)]
        total = sum(F.cross_entropy(c.float().reshape(-1, c.size(-1)), t.reshape(-1), ignore_index=IGNORE,
                                    reduction="sum")
                    for c, t in zip(logits, labels.chunk(n, dim=1)))
        del logits
        return total / count
    if kind == "litgpt":
        logits = [head(h) for h in hidden.split(LITGPT_CHUNK, dim=1)]
        total = sum(F.cross_entropy(c.reshape(-1, c.size(-1)), t.reshape(-1), ignore_index=IGNORE, reduction="sum")
                    for c, t in zip(logits, labels.split(LITGPT_CHUNK, dim=1)))
        model._fitplan_kept_logits = logits   # LitGPT's local keeps them referenced through backward
        return total / count
    raise PlanError(f"--loss {kind} cannot be measured here")


def release(model: Any) -> None:
    """Drop what a loss kept referenced through backward (LitGPT's logits list)."""
    if hasattr(model, "_fitplan_kept_logits"):
        del model._fitplan_kept_logits
