"""What each decoder layer saves for backward, measured: the check on the planner's layer trace.

A model of a few layers is built on fake tensors (``fitplan.validate.build.build_fake``, so any size
runs without memory) with the method applied, and one forward pass runs under
``torch.autograd.graph.saved_tensors_hooks``. Every saved tensor is attributed to the decoder layer
whose module saved it; a storage saved twice counts once, in the layer that saved it first, and
one saved by several layers (the rotary tables) is reported apart. Parameters, buffers and the
input ids are not activations and are left out. Tensors saved by a branch that never reaches the
loss (a router's no-grad selection) are freed with their graph node before backward and are not
counted; their storage's address may be reused, so each saved tensor is tracked by a weak holder.
"""

from __future__ import annotations

import re
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from fitplan.architecture import ModelShape
from fitplan.setup import TrainingSetup
from fitplan.validate.build import build_fake, real_mask_decisions
from torch import nn

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)(?:\.|$)")


@dataclass
class SavedBytes:
    """Bytes saved for backward, per decoder layer and outside the layers."""

    per_layer: dict[int, int] = field(default_factory=dict)
    shared: int = 0        # storages saved by more than one layer
    outside: int = 0       # saved outside the decoder layers (final norm, head, loss)


def saved_per_layer(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, num_layers: int = 3) -> SavedBytes:
    """Measure one forward pass of a ``num_layers``-deep model on fake tensors (CPU kernels)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = build_fake(raw, shape, setup, fake_mode, num_layers)
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    stack: list[str] = []
    skip = {p.untyped_storage()._cdata for p in model.parameters()} | {b.untyped_storage()._cdata for b in model.buffers()}
    first_layer: dict[int, int | None] = {}
    layers_of: dict[int, set[int | None]] = defaultdict(set)
    nbytes: dict[int, int] = {}
    holders: dict[int, list[weakref.ref]] = defaultdict(list)

    def pack(t: torch.Tensor) -> _Held:
        key = t.untyped_storage()._cdata
        held = _Held(t)
        if key not in skip:
            if holders[key] and not any(r() is not None for r in holders[key]):
                # every earlier save of this address is gone: a new storage reuses it
                del holders[key], first_layer[key], layers_of[key]
            holders[key].append(weakref.ref(held))
            m = _LAYER.search(stack[-1] if stack else "")
            layer = int(m.group(1)) if m else None
            first_layer.setdefault(key, layer)
            layers_of[key].add(layer)
            nbytes[key] = t.untyped_storage().nbytes()
        return held

    def enter(mod: nn.Module, args: Any) -> None:
        # a module built on the fly (an activation from ACT2FN) belongs to the module that calls it
        stack.append(names.get(id(mod), stack[-1] if stack else ""))

    def leave(mod: nn.Module, args: Any, out: Any) -> None:
        if stack:
            stack.pop()

    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave, always_call=True)
    try:
        with real_mask_decisions(), fake_mode:
            ids = torch.randint(0, shape.vocab_size, (setup.batch_size, setup.seq_len))
            skip.add(ids.untyped_storage()._cdata)
            with torch.autograd.graph.saved_tensors_hooks(pack, _Held.unpack):
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    finally:
        pre.remove()
        post.remove()
    out = SavedBytes()
    per_layer: dict[int, int] = defaultdict(int)
    for key, layer in first_layer.items():
        if not any(r() is not None for r in holders[key]):
            continue                                # freed before backward

        inside = {x for x in layers_of[key] if x is not None}
        if len(inside) > 1:
            out.shared += nbytes[key]
        elif layer is not None:
            per_layer[layer] += nbytes[key]
        else:
            out.outside += nbytes[key]
    out.per_layer = dict(per_layer)
    del loss
    return out


class _Held:
    """A saved tensor as autograd's graph holds it: alive exactly as long as its graph node."""

    __slots__ = ("t", "__weakref__")

    def __init__(self, t: torch.Tensor):
        self.t = t

    def unpack(self) -> torch.Tensor:
        return self.t
