"""Measure the bytes PyTorch autograd saves for backward, per decoder layer.

The model is built from a config dict on the meta device and every parameter / buffer is
swapped for a ``FakeTensor`` (CPU fake device), so a full-width model runs a forward + backward
without allocating or computing anything.  Three independent instruments are used:

* ``saved_tensors_hooks`` pack hook: every tensor autograd saves (shape, dtype, storage bytes,
  module it was saved in).  After the forward the autograd graph is walked and every node's
  ``_saved_*`` attributes are read, which calls our unpack hook and tells us which autograd node
  (e.g. ``MmBackward0``) owns each saved tensor.
* a ``TorchDispatchMode`` that sees every aten op: it records, for each new storage, the aten op and
  module that created it and keeps a ``StorageWeakRef`` so that liveness can be polled.  This gives
  the bytes alive at the start of backward (what really costs memory; it also sees what
  non-reentrant checkpointing keeps, which bypasses our pack hook), and the live bytes during
  backward (recomputation peak with gradient checkpointing).
* forward pre/post hooks on every module to know the current module path.

Only CPU kernels are exercised (fake CUDA aborts), so SDPA goes through the CPU dispatch
(``_scaled_dot_product_flash_attention_for_cpu`` or the math fallback).  See the report for
what differs on CUDA.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)(?:\.|$)")

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def _layer_of(path: str) -> int | None:
    m = _LAYER_RE.search(path or "")
    return int(m.group(1)) if m else None


def _skey(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


@dataclass
class SavedItem:
    """One tensor saved for backward (one pack-hook call)."""

    idx: int
    module: str  # module path in which autograd saved it
    layer: int | None  # decoder layer index of ``module`` (None = outside the layers)
    node: str  # autograd node that owns it (e.g. ``MmBackward0``), '' if unknown
    shape: tuple
    dtype: torch.dtype
    tensor_bytes: int  # numel * element size of the saved view
    storage_bytes: int  # bytes of the underlying untyped storage
    storage: int  # storage identity (cdata)
    kind: str  # 'activation' | 'param' | 'buffer' | 'input'
    created_by: str = ""  # aten op that created the storage (if seen)
    created_in: str = ""  # module path where the storage was created
    first: bool = True  # first time this storage is saved
    phase: str = "forward"  # 'forward' or 'recompute'


@dataclass
class SavedReport:
    config: dict
    options: dict
    tokens: int
    items: list[SavedItem]
    #: unique activation storage bytes saved, grouped by decoder layer index (storage counted in
    #: the layer that saved it first; storages saved by >1 layer go to ``shared``)
    per_layer: dict[int, int]
    #: same, grouped for things outside decoder layers ('embed', 'final_norm', 'lm_head', 'loss', ...)
    outside: dict[str, int]
    #: storages saved by more than one decoder layer (rotary cos/sin, attention mask): bytes by desc
    shared: dict[str, int]
    total_unique: int  # unique activation storages saved (pack hook)
    naive_sum: int  # sum of storage bytes over every pack call (activations only)
    naive_tensor_sum: int  # sum of numel*itemsize over every pack call (activations only)
    #: bytes of non-parameter storages alive at the start of backward (dispatch-mode view),
    #: grouped by the module that CREATED them (layer index or outside-name)
    live_at_backward_start: dict[Any, int]
    live_total_at_backward_start: int
    live_items_at_backward_start: list[dict]
    #: backward: peak of live storages excluding parameters and accumulated ``.grad`` tensors
    backward_peak_live: int | None = None
    #: per layer: bytes created by the recomputation (grad ckpt) still alive when it ended
    recompute_saved: dict[int, int] = field(default_factory=dict)
    recompute_items: dict[int, list[dict]] = field(default_factory=dict)
    #: per layer: peak live bytes during that layer's backward minus live bytes just before its recompute
    recompute_peak_extra: dict[int, int] = field(default_factory=dict)
    param_bytes_trainable: int = 0
    grad_bytes_after_backward: int = 0

    def layer_items(self, layer: int) -> list[SavedItem]:
        return [i for i in self.items if i.layer == layer]

    def middle_layer(self) -> int:
        layers = sorted(self.per_layer)
        return layers[len(layers) // 2] if layers else 0

    def summary(self, layer: int | None = None, unique_only: bool = True) -> str:
        layer = self.middle_layer() if layer is None else layer
        lines = [f"options={self.options} tokens={self.tokens}"]
        for it in self.items:
            if it.layer != layer or it.kind != "activation" or it.phase != "forward":
                continue
            if unique_only and not it.first:
                continue
            lines.append(
                f"  {it.module[-40:]:40s} {it.node:28s} {str(tuple(it.shape)):28s} "
                f"{str(it.dtype)[6:]:9s} tensor={it.tensor_bytes:>12d} storage={it.storage_bytes:>12d}"
                f" created_by={it.created_by}"
            )
        lines.append(f"  layer {layer} unique total: {self.per_layer.get(layer, 0)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------------


def _make_config(config: dict, num_layers: int | None):
    from transformers import AutoConfig

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    if num_layers is not None:
        for key in ("num_hidden_layers", "n_layer"):
            cfg[key] = num_layers
    cfg.setdefault("use_cache", False)
    return AutoConfig.for_model(model_type, **cfg)


def _fakeify(model: nn.Module, fake_mode: FakeTensorMode) -> None:
    """Replace every parameter / buffer (meta) by a CPU FakeTensor of the same shape/dtype."""
    memo: dict[int, nn.Parameter] = {}
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            if id(p) not in memo:
                with fake_mode:
                    f = torch.empty(p.shape, dtype=p.dtype, device="cpu")
                memo[id(p)] = nn.Parameter(f, requires_grad=p.requires_grad)
            mod._parameters[name] = memo[id(p)]
    bmemo: dict[int, torch.Tensor] = {}
    for mod in model.modules():
        real_bufs: dict[str, torch.Tensor] = {}
        if "inv_freq" in mod._buffers and hasattr(mod, "config"):
            # rotary embedding: rebuild on CPU to get real inv_freq values
            try:
                with torch.device("cpu"):
                    real = type(mod)(mod.config)
                real_bufs = dict(real._buffers)
            except Exception:  # pragma: no cover - model specific
                real_bufs = {}
        for name, b in list(mod._buffers.items()):
            if b is None:
                continue
            if id(b) not in bmemo:
                if name in real_bufs and real_bufs[name] is not None:
                    bmemo[id(b)] = fake_mode.from_tensor(real_bufs[name].to(b.dtype))
                else:
                    bmemo[id(b)] = fake_mode.from_tensor(torch.zeros(b.shape, dtype=b.dtype))
            mod._buffers[name] = bmemo[id(b)]


def _apply_method(model, method, lora_targets, lora_rank, lora_dropout, num_virtual_tokens):
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "frozen":
        for p in model.parameters():
            p.requires_grad_(False)
        model.enable_input_require_grads()
        return model
    import peft

    if method == "lora":
        cfg = peft.LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            target_modules=list(lora_targets) if not isinstance(lora_targets, str) else lora_targets,
            lora_dropout=lora_dropout,
            task_type="CAUSAL_LM",
        )
    elif method == "prompt":
        cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    elif method == "prefix":
        cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    elif method == "ptuning":
        cfg = peft.PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens, encoder_hidden_size=128
        )
    else:
        raise ValueError(method)
    return peft.get_peft_model(model, cfg)


# --------------------------------------------------------------------------------------------
# instrumentation
# --------------------------------------------------------------------------------------------


class _Tracker(TorchDispatchMode):
    def __init__(self, owner: "_Session"):
        super().__init__()
        self.o = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.o.on_op(func, out)
        return out


class _Session:
    def __init__(self, model: nn.Module):
        self.model = model
        self.names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
        self.stack: list[str] = []
        self.phase = "forward"
        self.items: list[SavedItem] = []
        self.seen_saved: set[int] = set()
        self.param_keys: set[int] = set()
        self.buffer_keys: set[int] = set()
        self.input_keys: set[int] = set()
        # storage key -> dict(ref, bytes, op, module, phase, layer)
        self.created: dict[int, dict] = {}
        self.live: dict[int, dict] = {}
        self.node_of: dict[int, str] = {}
        self._walk_node = None
        self.sticky_layer: int | None = None
        self.grad_keys: set[int] = set()
        # backward bookkeeping
        self.bw_peak = 0
        self.bw_cur_layer: int | None = None
        self.layer_before: dict[int, int] = {}
        self.layer_peak: dict[int, int] = {}
        self.recompute_created: dict[int, set[int]] = defaultdict(set)
        self.recompute_done: dict[int, int] = {}
        self.recompute_done_items: dict[int, list[dict]] = {}
        for p in model.parameters():
            self.param_keys.add(_skey(p))
        for b in model.buffers():
            self.buffer_keys.add(_skey(b))

    # module path tracking ------------------------------------------------------------------
    def pre_hook(self, mod, args):
        self.stack.append(self.names.get(id(mod), type(mod).__name__))

    def post_hook(self, mod, args, out):
        if self.stack:
            self.stack.pop()

    @property
    def path(self) -> str:
        return self.stack[-1] if self.stack else ""

    # saved tensor hooks --------------------------------------------------------------------
    def pack(self, t: torch.Tensor):
        key = _skey(t)
        if key in self.param_keys:
            kind = "param"
        elif key in self.buffer_keys:
            kind = "buffer"
        elif key in self.input_keys:
            kind = "input"
        else:
            kind = "activation"
        first = key not in self.seen_saved
        self.seen_saved.add(key)
        c = self.created.get(key, {})
        item = SavedItem(
            idx=len(self.items),
            module=self.path,
            layer=_layer_of(self.path),
            node="",
            shape=tuple(t.shape),
            dtype=t.dtype,
            tensor_bytes=t.numel() * t.element_size(),
            storage_bytes=t.untyped_storage().nbytes(),
            storage=key,
            kind=kind,
            created_by=c.get("op", ""),
            created_in=c.get("module", ""),
            first=first,
            phase="forward" if self.phase == "forward" else "recompute",
        )
        self.items.append(item)
        return (item.idx, t)

    def unpack(self, packed):
        idx, t = packed
        if self._walk_node is not None and idx not in self.node_of:
            self.node_of[idx] = self._walk_node
        return t

    # dispatch tracking ---------------------------------------------------------------------
    def _live_bytes(self) -> int:
        dead = [k for k, v in self.live.items() if v["ref"].expired()]
        for k in dead:
            del self.live[k]
        return sum(v["bytes"] for k, v in self.live.items() if k not in self.grad_keys)

    def on_op(self, func, out):
        leaves, _ = tree_flatten(out)
        path = self.path
        lay = _layer_of(path)
        if lay is not None:
            self.sticky_layer = lay
        recompute = self.phase == "backward" and torch.is_grad_enabled()
        for t in leaves:
            if not isinstance(t, torch.Tensor):
                continue
            try:
                st = t.untyped_storage()
            except Exception:
                continue
            key = st._cdata
            if key in self.created and not self.created[key]["ref"].expired():
                continue
            if key in self.param_keys or key in self.buffer_keys:
                continue
            rec = {
                "ref": StorageWeakRef(st),
                "bytes": st.nbytes(),
                "op": str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func),
                "module": path,
                "layer": lay,
                "phase": "recompute" if recompute else self.phase,
                "shape": tuple(t.shape),
                "dtype": t.dtype,
            }
            self.created[key] = rec
            self.live[key] = rec
            if recompute and self.sticky_layer is not None:
                self.recompute_created[self.sticky_layer].add(key)
        if self.phase == "backward":
            name = getattr(getattr(func, "overloadpacket", None), "__name__", str(func))
            # checkpoint's recomputation hook detaches (grad disabled) in the middle of the
            # recompute: such ops must not count as "back in the backward pass"
            if name not in ("detach", "device", "alias"):
                self._backward_step(recompute)

    def _backward_step(self, recompute: bool):
        live = self._live_bytes()
        self.bw_peak = max(self.bw_peak, live)
        if recompute and self.sticky_layer is not None:
            lay = self.sticky_layer
            if lay != self.bw_cur_layer:
                # a new layer's recompute begins: live bytes before it (approx: now)
                self.bw_cur_layer = lay
                self.layer_before[lay] = live
                self.layer_peak[lay] = live
        elif not recompute and self.bw_cur_layer is not None:
            lay = self.bw_cur_layer
            if lay not in self.recompute_done:
                keys = [k for k in self.recompute_created[lay] if k in self.live]
                self.recompute_done[lay] = sum(self.live[k]["bytes"] for k in keys)
                self.recompute_done_items[lay] = [_public(self.live[k]) for k in keys]
        if self.bw_cur_layer is not None:
            lay = self.bw_cur_layer
            self.layer_peak[lay] = max(self.layer_peak.get(lay, 0), live)

    def walk_graph(self, root):
        seen = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            self._walk_node = node.name()
            for attr in dir(node):
                if attr.startswith("_saved_"):
                    try:
                        getattr(node, attr)
                    except Exception:
                        pass
            if hasattr(node, "saved_tensors"):
                try:
                    node.saved_tensors  # noqa: B018 - python custom Function
                except Exception:
                    pass
            self._walk_node = None
            for nxt, _ in node.next_functions:
                stack.append(nxt)


def _public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "ref"}


def _outside_name(path: str) -> str:
    p = path.lower()
    if not p:
        return "root(loss etc.)"
    for key in ("embed_tokens", "wte", "wpe", "rotary", "norm", "ln_f", "lm_head", "prompt_encoder", "dropout", "drop"):
        if key in p.split(".")[-1] or p.endswith(key):
            return {"ln_f": "final_norm", "norm": "final_norm", "wte": "embed", "embed_tokens": "embed"}.get(key, key)
    return path


def _real_mask_logic():
    """transformers' causal-mask decisions of real unpadded tensors (see validate.build)."""
    from validate.build import real_mask_decisions

    return real_mask_decisions()


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def measure_saved_bytes(
    config: dict,
    *,
    dtype: str = "bfloat16",
    attn_implementation: str = "sdpa",
    method: str = "full",
    lora_targets=("q_proj", "v_proj"),
    lora_rank: int = 16,
    lora_dropout: float = 0.0,
    num_virtual_tokens: int = 0,
    seq_len: int = 2048,
    batch_size: int = 1,
    grad_ckpt: bool = False,
    num_layers: int | None = None,
    attention_mask: bool = False,
    backward: bool | None = None,
    train: bool = True,
    real_mask_logic: bool = True,
    fake: bool = True,
) -> SavedReport:
    """Run one fake forward (+ optional backward) and report what autograd saves.

    ``config`` is a transformers config dict including ``model_type``.  ``method`` is one of
    ``full``, ``frozen`` (no trainable params; embedding output requires grad), ``lora``,
    ``prompt``, ``prefix``, ``ptuning``.  ``attention_mask=True`` passes an all-ones attention mask
    (note: under FakeTensor transformers cannot inspect it and therefore materialises a 4-D mask,
    as it would for a batch with padding).  With ``attention_mask=False`` and ``real_mask_logic``
    (default) the mask decisions of a real unpadded run are restored (see ``_real_mask_logic``);
    ``real_mask_logic=False`` shows the raw FakeTensor behaviour.  ``backward`` defaults to
    ``grad_ckpt``.  ``fake=False`` runs with real CPU tensors (random init) instead -- only for
    small configs, to validate the fake measurement.
    """
    from transformers import AutoModelForCausalLM

    tdtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    cfg = _make_config(config, num_layers)
    with torch.device("meta" if fake else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation, dtype=tdtype)
    model = _apply_method(model, method, lora_targets, lora_rank, lora_dropout, num_virtual_tokens)
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train(train)

    if fake:
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        _fakeify(model, fake_mode)
    else:
        fake_mode = contextlib.nullcontext()
        mask_ctx_needed = False  # noqa: F841 - real tensors: transformers decides itself

    sess = _Session(model)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    vocab = cfg.vocab_size
    with fake_mode:
        input_ids = torch.randint(0, vocab, (batch_size, seq_len))
        labels = input_ids.clone()
        kwargs = {}
        if attention_mask:
            kwargs["attention_mask"] = torch.ones(batch_size, seq_len, dtype=torch.long)
    for t in [input_ids, labels, *kwargs.values()]:
        sess.input_keys.add(_skey(t))

    h1 = nn.modules.module.register_module_forward_pre_hook(sess.pre_hook)
    h2 = nn.modules.module.register_module_forward_hook(sess.post_hook, always_call=True)
    if backward is None:
        backward = grad_ckpt
    ckpt_ctx = contextlib.nullcontext()
    if grad_ckpt:
        ckpt_ctx = torch.utils.checkpoint.set_checkpoint_early_stop(False)
    mask_ctx = (
        _real_mask_logic() if (fake and real_mask_logic and not attention_mask) else contextlib.nullcontext()
    )
    try:
        with mask_ctx, fake_mode, _Tracker(sess), ckpt_ctx:
            with torch.autograd.graph.saved_tensors_hooks(sess.pack, sess.unpack):
                out = model(input_ids=input_ids, labels=labels, use_cache=False, **kwargs)
            loss = out.loss
            del out
            sess.stack.clear()
            if not grad_ckpt:  # the walk would trigger recomputation of checkpointed nodes
                sess.walk_graph(loss.grad_fn)
            live_start_total = sess._live_bytes()
            live_items = [dict(_public(v), key=k) for k, v in sess.live.items()]
            live_grouped: dict[Any, int] = defaultdict(int)
            for v in sess.live.values():
                grp = v["layer"] if v["layer"] is not None else _outside_name(v["module"])
                live_grouped[grp] += v["bytes"]
            grad_bytes = 0
            if backward:
                grad_hooks = [
                    p.register_post_accumulate_grad_hook(lambda p: sess.grad_keys.add(_skey(p.grad)))
                    for p in model.parameters()
                    if p.requires_grad
                ]
                sess.phase = "backward"
                sess.bw_peak = live_start_total
                loss.backward()
                for hk in grad_hooks:
                    hk.remove()
                for p in model.parameters():
                    if p.grad is not None:
                        grad_bytes += p.grad.untyped_storage().nbytes()
    finally:
        h1.remove()
        h2.remove()

    # aggregate -----------------------------------------------------------------------------
    for it in sess.items:
        it.node = sess.node_of.get(it.idx, "")
    layers_of_storage: dict[int, set] = defaultdict(set)
    for it in sess.items:
        if it.kind == "activation" and it.phase == "forward":
            layers_of_storage[it.storage].add(it.layer)
    per_layer: dict[int, int] = defaultdict(int)
    outside: dict[str, int] = defaultdict(int)
    shared: dict[str, int] = defaultdict(int)
    naive = naive_t = total = 0
    for it in sess.items:
        if it.kind != "activation" or it.phase != "forward":
            continue
        naive += it.storage_bytes
        naive_t += it.tensor_bytes
        if not it.first:
            continue
        total += it.storage_bytes
        lays = {x for x in layers_of_storage[it.storage] if x is not None}
        if len(lays) > 1:
            shared[f"{it.created_by}@{it.created_in or 'root'} {tuple(it.shape)} {it.dtype}"] += it.storage_bytes
        elif it.layer is not None:
            per_layer[it.layer] += it.storage_bytes
        else:
            outside[_outside_name(it.module)] += it.storage_bytes

    rep = SavedReport(
        config=dict(config),
        options=dict(
            dtype=str(tdtype),
            attn=attn_implementation,
            method=method,
            lora_targets=lora_targets if method == "lora" else None,
            seq_len=seq_len,
            batch_size=batch_size,
            grad_ckpt=grad_ckpt,
            attention_mask=attention_mask,
            real_mask_logic=real_mask_logic,
            fake=fake,
            lora_dropout=lora_dropout,
            num_virtual_tokens=num_virtual_tokens,
        ),
        tokens=seq_len * batch_size,
        items=sess.items,
        per_layer=dict(per_layer),
        outside=dict(outside),
        shared=dict(shared),
        total_unique=total,
        naive_sum=naive,
        naive_tensor_sum=naive_t,
        live_at_backward_start=dict(live_grouped),
        live_total_at_backward_start=live_start_total,
        live_items_at_backward_start=live_items,
        backward_peak_live=sess.bw_peak if backward else None,
        recompute_saved=dict(sess.recompute_done),
        recompute_items=dict(sess.recompute_done_items),
        recompute_peak_extra={k: sess.layer_peak[k] - sess.layer_before[k] for k in sess.layer_before},
        param_bytes_trainable=trainable,
        grad_bytes_after_backward=grad_bytes,
    )
    return rep


# --------------------------------------------------------------------------------------------
# reference configs (shapes of public checkpoints; weights are never needed)
# --------------------------------------------------------------------------------------------

LLAMA_3_1_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=131072,
    num_hidden_layers=3,
    tie_word_embeddings=False,
)

QWEN2_5_7B = dict(
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=32768,
    num_hidden_layers=3,
    tie_word_embeddings=False,
)

GEMMA2_9B = dict(
    model_type="gemma2",
    hidden_size=3584,
    intermediate_size=14336,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    vocab_size=256000,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
    num_hidden_layers=3,
    tie_word_embeddings=True,
)

GPT2_MEDIUM = dict(
    model_type="gpt2",
    n_embd=1024,
    n_layer=3,
    n_head=16,
    n_positions=1024,
    vocab_size=50257,
    resid_pdrop=0.1,
    embd_pdrop=0.1,
    attn_pdrop=0.1,
)


if __name__ == "__main__":  # pragma: no cover - manual use
    r = measure_saved_bytes(LLAMA_3_1_8B, seq_len=512)
    print(r.summary())
    print("outside", r.outside, "shared", r.shared)
