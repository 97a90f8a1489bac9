"""Build a transformers model from a config with random weights, with a fine-tuning method applied.

The same ``TrainingSetup`` the planner takes decides everything: dtype, attention implementation,
method, LoRA rank and targets, virtual tokens, quantization, checkpointing. Three kinds of build:

- ``real``: ordinary tensors on the CPU or a CUDA device;
- ``fake``: the model is built on the meta device, then every parameter and buffer is swapped for
  a fake CPU tensor (``Module.to()`` fails on fake parameters in torch 2.13), so full-size models
  step without memory; rotary tables get their real values;
- QLoRA cannot use ``from_config`` with a quantization config: the random model is saved to a
  temporary folder and reloaded with ``BitsAndBytesConfig`` (bitsandbytes 0.50 quantizes on CPU).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from typing import Any

import torch
from fitplan.architecture import ModelShape
from fitplan.dtypes import dtype
from fitplan.errors import PlanError
from fitplan.setup import TrainingSetup
from torch import nn


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a storage-type name of the planner's table (``bf16`` -> ``torch.bfloat16``)."""
    return getattr(torch, dtype(name).torch_name)


def hf_config(raw: dict[str, Any], num_layers: int | None = None):
    from transformers import AutoConfig

    cfg = {k: v for k, v in raw.items() if not k.startswith("_")}
    model_type = cfg.pop("model_type")
    if num_layers is not None:
        for key in ("num_hidden_layers", "n_layer"):
            if key in cfg or key == "num_hidden_layers":
                cfg[key] = num_layers
    cfg["use_cache"] = False
    return AutoConfig.for_model(model_type, **cfg)


def enable_checkpointing(model: nn.Module) -> None:
    """transformers' non-reentrant gradient checkpointing of every decoder layer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def apply_method(model: nn.Module, shape: ModelShape, setup: TrainingSetup) -> nn.Module:
    """Make the method's parameters trainable (and only those), adding adapters where it has them."""
    return cast_adapters(setup.method.build(model, shape, setup), setup)


def cast_adapters(model: nn.Module, setup: TrainingSetup) -> nn.Module:
    """The model with its LoRA weights in ``--adapter-dtype`` (as TRL casts a quantized model's,
    ``trl/trainer/sft_trainer.py`` 908-911; peft then casts each adapter's input to it)."""
    if setup.adapter_storage == "fp32":
        return model
    target = torch_dtype(setup.adapter_storage)
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_" in name:
            p.data = p.data.to(target)
    return model


def bnb_config(spec: dict[str, Any]) -> Any:
    """transformers' ``BitsAndBytesConfig`` for a method's ``quantization_config`` settings."""
    from transformers import BitsAndBytesConfig

    if spec["bits"] == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec["quant_type"],
                              bnb_4bit_use_double_quant=spec["double_quant"],
                              bnb_4bit_compute_dtype=torch_dtype(spec["compute_dtype"]))


_SAVED: dict[tuple[str, str], tempfile.TemporaryDirectory] = {}


def _saved_random_model(raw: dict[str, Any], cfg, dtype: torch.dtype) -> str:
    """A folder holding a random model of this config, saved once per process (QLoRA reloads it)."""
    import json

    from transformers import AutoModelForCausalLM

    key = (json.dumps(raw, sort_keys=True), str(dtype))
    if key not in _SAVED:
        folder = tempfile.TemporaryDirectory(prefix="fitplan-random-")
        AutoModelForCausalLM.from_config(cfg, dtype=dtype).save_pretrained(folder.name)
        _SAVED[key] = folder
    return _SAVED[key].name


def build_real(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, device: str) -> nn.Module:
    """A model with random weights on ``device`` ("cpu" or "cuda"), the method applied."""
    from transformers import AutoModelForCausalLM

    cfg = hf_config(raw)
    quantization = setup.method.quantization_config(setup)
    if quantization is not None:
        compute = torch_dtype(setup.compute_dtype)
        folder = _saved_random_model(raw, cfg, compute)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=compute, attn_implementation=setup.attention,
            device_map={"": device} if device == "cuda" else None, quantization_config=bnb_config(quantization),
        )
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation=setup.attention,
                                                     dtype=torch_dtype(setup.weight_dtype))
    model = apply_method(model, shape, setup)
    model.train()
    return model


def _real_rotary_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for mname, mod in model.named_modules():
        if "Rotary" in type(mod).__name__ and hasattr(mod, "inv_freq"):
            try:
                real = type(mod)(config=mod.config, device="cpu")
            except TypeError:
                real = type(mod)(mod.config)
            items = list(real._buffers.items()) + [(k, v) for k, v in vars(real).items() if isinstance(v, torch.Tensor)]
            for k, v in items:
                if v is not None:
                    out[f"{mname}.{k}" if mname else k] = v
    return out


def fakeify(model: nn.Module, fake_mode) -> None:
    """Swap every parameter and buffer for a fake CPU tensor; tied parameters stay tied."""
    real_buffers = _real_rotary_buffers(model)
    swapped: dict[int, nn.Parameter] = {}
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            newp = swapped.get(id(p))
            if newp is None:
                with fake_mode:
                    fake = torch.empty(p.shape, dtype=p.dtype, device="cpu")
                newp = nn.Parameter(fake, requires_grad=p.requires_grad)
                swapped[id(p)] = newp
            mod._parameters[name] = newp
    bufmap: dict[int, torch.Tensor] = {}
    for mname, mod in model.named_modules():
        for name, b in list(mod._buffers.items()):
            if b is None:
                continue
            full = f"{mname}.{name}" if mname else name
            nb = bufmap.get(id(b))
            if nb is None:
                real = real_buffers.get(full, torch.zeros(b.shape, dtype=b.dtype))
                nb = fake_mode.from_tensor(real.to(b.dtype))
                bufmap[id(b)] = nb
            mod._buffers[name] = nb
        for k, v in list(vars(mod).items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and v.device.type == "meta":
                full = f"{mname}.{k}" if mname else k
                real = real_buffers.get(full, torch.zeros(v.shape, dtype=v.dtype))
                setattr(mod, k, fake_mode.from_tensor(real.to(v.dtype)))
            elif isinstance(v, dict) and any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in v.values()):
                # peft's prompt learning keeps its token indices in a dict of plain tensors
                for name, t in list(v.items()):
                    if isinstance(t, torch.Tensor) and t.device.type == "meta":
                        v[name] = fake_mode.from_tensor(torch.zeros(t.shape, dtype=t.dtype))


def build_fake(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, fake_mode, num_layers: int) -> nn.Module:
    """A ``num_layers``-deep model of fake CPU tensors, the method applied."""
    from transformers import AutoModelForCausalLM

    if setup.method.quantized_base:
        raise PlanError(f"{setup.method.name} cannot run under fake tensors (its base is quantized from real "
                        "weights); use --mode cpu or cuda")
    cfg = hf_config(raw, num_layers)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=setup.attention,
                                                 dtype=torch_dtype(setup.weight_dtype))
        model = apply_method(model, shape, setup)
    fakeify(model, fake_mode)
    model.train()
    return model


@contextlib.contextmanager
def real_mask_decisions():
    """Under fake tensors, make transformers' causal-mask decisions those of real unpadded tensors.

    transformers treats fake tensors as tracing, so it never skips the causal mask: a materialised
    mask then reaches SDPA, which turns off GQA (keys and values repeated to every head) and, on the
    CPU, saves the mask. A real run without padding passes ``is_causal=True`` and no mask.
    """
    from transformers import masking_utils as mu

    orig_ignore = mu._ignore_causal_mask_sdpa
    orig_find = mu.find_packed_sequence_indices

    def ignore(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size=None):
        if padding_mask is None:
            if local_attention_size is not None and kv_length >= local_attention_size:
                return False
            if q_length == 1 or kv_length == q_length:
                return True
            if isinstance(q_offset, int):
                return q_offset == 0
            return False
        return orig_ignore(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size)

    mu._ignore_causal_mask_sdpa = ignore
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        mu._ignore_causal_mask_sdpa = orig_ignore
        mu.find_packed_sequence_indices = orig_find
