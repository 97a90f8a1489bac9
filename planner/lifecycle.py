"""Peaks beside the training step: loading the model, and saving a checkpoint.

The step is not the only moment a run can run out of memory. Both figures are per GPU, in the
step's own terms (tensors, plus the framework overhead on a CUDA device), so that the highest of the
three says where a run would fail first.

Model load (transformers ``from_pretrained`` from a bf16 checkpoint, one tensor at a time):

- a quantized base: bitsandbytes quantizes each linear weight on the GPU from its bf16 copy
  (``Params4bit`` / ``Int8Params`` ``.cuda()``), so the largest quantized matrix is alive in bf16
  beside everything loaded before it (torchtune's ``NF4Tensor.copy_`` re-quantizes the same way);
- a cast at load (fp32 weights from a bf16 checkpoint: ``bf16-mixed``, TRL's fp32 default, peft's
  ``prepare_model_for_kbit_training`` upcast, ``utils/other.py`` 203-209): ``param.data.to(fp32)``
  keeps the old copy until the new one is made, so the largest cast tensor is alive twice;
- the peak is the loaded model plus the largest of those transients.

Checkpoint save: on one GPU (or DDP), ``save_pretrained`` copies tensor by tensor to the host:
the weights and optimizer states with the gradients freed (``zero_grad(set_to_none=True)``).
Under FSDP / ZeRO-3 a full state dict is gathered unit by unit on rank 0
(``FullStateDictConfig(offload_to_cpu=True, rank0_only=True)`` in accelerate and Lightning Fabric):
the sharded steady state plus the largest layer's full weights. A whole-model gather on one GPU
(``offload_to_cpu=False``) would be the full model; the stacks read do not do that.

Known limitations: pre-quantized checkpoints (unsloth's ``-bnb-4bit`` repositories) load without
the bf16 transient; FSDP's sharded loading (``cpu_ram_efficient_loading``) is taken as each rank
materialising its shard; evaluation and generation inside training are not modelled.
"""

from __future__ import annotations

from fitplan.dtypes import nbytes
from fitplan.frozen import frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

_QUANTIZED = ("nf4", "fp4", "int8", "int4", "fp8")
CHECKPOINT_DTYPE = "bf16"   # what published checkpoints hold


@frozen
class Peaks:
    """The step's peak beside the model load's and the checkpoint save's, bytes per GPU."""

    step_bytes: int
    load_bytes: int
    load_how: str
    save_bytes: int
    save_how: str

    @property
    def highest(self) -> str:
        best = max((self.step_bytes, 0, "step"), (self.load_bytes, 1, "model_load"), (self.save_bytes, 2, "checkpoint_save"),
                   key=lambda x: (x[0], -x[1]))
        return best[2]

    def to_dict(self) -> dict[str, Any]:
        return {"step_bytes": self.step_bytes, "model_load_bytes": self.load_bytes, "model_load": self.load_how,
                "checkpoint_save_bytes": self.save_bytes, "checkpoint_save": self.save_how, "highest": self.highest}


def _quantized(storage: str) -> bool:
    return any(storage.startswith(q) for q in _QUANTIZED) or storage in ("gptq-int4", "gptq-int8", "awq", "hqq")


def peaks(est: Any, spread: Any = None) -> Peaks:
    """The three peaks of an ``Estimate`` (``spread``: its ``ShardedPeak`` when spread over GPUs)."""
    groups = [g for g in est.groups]
    base = [g for g in groups if not g.added]
    sharded_weights = False
    if spread is not None:
        p = spread.placement
        sharded_weights = p.strategy in ("zero3", "fsdp", "hybrid")
    peak = est.peak
    W, Q, S = peak.weights, peak.quantization_state, peak.optimizer_states
    if spread is not None:
        W, Q, S = spread.per_gpu.weights, spread.per_gpu.quantization_state, spread.per_gpu.optimizer_states
    ckpt = nbytes(1, CHECKPOINT_DTYPE)
    quant = [g.numel for g in base if _quantized(g.storage)]
    cast = [g.numel for g in base if not _quantized(g.storage) and nbytes(1, g.storage) != ckpt]
    transient, how = 0, "the weights loaded tensor by tensor in the checkpoint's dtype"
    if quant and ckpt * max(quant) >= transient:
        transient, how = ckpt * max(quant), "each linear weight quantized on the GPU from its bf16 copy"
    if cast and ckpt * max(cast) > transient:
        transient, how = ckpt * max(cast), "each tensor cast from the bf16 checkpoint (old copy alive until the new one)"
    load_w = est.peak.weights + est.peak.quantization_state
    if sharded_weights:
        load_w = W + Q
    load = load_w + transient
    if sharded_weights:
        unit = sum(g.data_bytes() // g.count for g in base if g.layered and g.count)   # one layer's weights
        save = W + Q + S + unit
        save_how = "a full state dict gathered unit by unit on rank 0 (FSDP / ZeRO-3)"
    else:
        save = W + Q + S
        save_how = "weights and optimizer states, gradients freed, copied tensor by tensor to the host"
    o = est.overhead
    cuda = est.setup.device == "cuda"
    step = spread.peak_bytes if spread is not None else est.peak_bytes
    return Peaks(step, o.device_used(load) if cuda else load, how, o.device_used(save) if cuda else save, save_how)
