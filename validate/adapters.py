"""Houlsby bottleneck adapters, injected into a transformers model (peft has none).

One adapter after each layer's attention block and one after its MLP block (Houlsby et al. 2019,
section 2.1), each ``x + up(gelu(down(x)))`` with a zero-initialised up-projection, so training
starts from the base model. Adapter weights are fp32 like peft's adapters; the input is cast to
fp32 and the update cast back to the model's dtype.
"""

from __future__ import annotations

import torch
from torch import nn


class BottleneckAdapter(nn.Module):
    def __init__(self, hidden_size: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck, dtype=torch.float32)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, hidden_size, dtype=torch.float32)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.up(self.act(self.down(x.to(self.down.weight.dtype))))
        return x + update.to(x.dtype)


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    for name in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        module = model
        try:
            for part in name.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return list(module)
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


_ATTENTION = ("self_attn", "attn", "attention", "self_attention")
_MLP = ("mlp", "block_sparse_moe")


def _hook(adapter: BottleneckAdapter):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (adapter(output[0]),) + tuple(output[1:])
        return adapter(output)

    return hook


def add_bottleneck_adapters(model: nn.Module, hidden_size: int, bottleneck: int) -> list[BottleneckAdapter]:
    """Freeze ``model`` and add an adapter after every layer's attention and MLP block.

    Returns the adapters (their parameters are the trainable ones). The adapters become submodules
    of the blocks they follow, so ``model.parameters()`` and ``.to()`` see them.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = []
    for layer in _decoder_layers(model):
        for names in (_ATTENTION, _MLP):
            block = next((getattr(layer, n) for n in names if hasattr(layer, n)), None)
            if block is None:
                raise ValueError(f"cannot find {' or '.join(names)} in {type(layer).__name__}")
            device = next(block.parameters()).device
            adapter = BottleneckAdapter(hidden_size, bottleneck).to(device)
            block.add_module("bottleneck_adapter", adapter)
            block.register_forward_hook(_hook(adapter))
            adapters.append(adapter)
    return adapters
