"""The generic path: plan any config transformers can build, without a family reader.

``fitplan.families`` reads the families it knows into a ``ModelShape`` by hand. For any other
``model_type`` this module builds the model with transformers on the meta device and reads the
shape off the modules, then measures the training step's peak on fake tensors:

- ``generic_shape(raw, name)``: the model is built on the meta device (``AutoModelForCausalLM``;
  ``AutoModelForSeq2SeqLM`` for encoder-decoders such as T5 and BART; and
  ``AutoModelForSequenceClassification`` with two labels for encoder-only models such as BERT, RoBERTa
  and DeBERTa), and every parameter lands in the shape so that ``parameter_count`` is the model's
  ``num_parameters()`` exactly (tied weights once). The layer stacks' ``nn.Linear`` / ``Conv1D`` modules
  become ``Matrix`` entries under their module paths inside a layer (``self_attn.q_proj``), which peft
  matches as suffixes; fused 3-D expert parameters become ``Matrix(is_linear=False, copies=E)``; norms
  and every other parameter of a layer become ``Norm`` entries. Entries held by only some layers say
  how many (``layers``). What sits outside the layers and is neither the input embedding, learned
  positions, the embedding norm, the final norm nor the output head (a pooler, a classifier, a vision
  tower, an encoder's own final norm) is listed as ``Norm`` entries held by one layer, so that the
  count stays exact. An encoder-decoder lists both stacks: ``num_layers`` is their sum. The shape's
  ``note`` starts with ``"generic path:"`` and says what the shape could not represent.
- ``generic_measure(raw, shape, setup)``: the training step (forward with labels, backward, the
  optimizer's step) runs on fake tensors under the validator's live-tensor tracker, as
  ``fitplan.validate.measure.measure_fake`` does for causal LMs, at two shallow depths (2 and 3
  layers, or the model's own depth where it is smaller), and every phase and category is
  extrapolated linearly to the real depth. An encoder-decoder whose stacks are set by separate
  keys is measured at (2, 2), (3, 2) and (2, 3) layers and extrapolated in each stack.
- ``generic_plan(raw, name, setup)``: both, through a cache of small JSON files (``cache_dir()``),
  keyed by the config, every ``TrainingSetup`` field and the versions of torch, transformers and peft.

torch, transformers and peft are imported inside the functions: the planner may import this module
where they are not installed, and gets ``PlanError`` naming the ``validate`` extra when it calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from fitplan.architecture import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_QKV,
    ATTN_V,
    EXPERT_DOWN,
    EXPERT_GATE_UP,
    MLP_DOWN,
    MLP_GATE,
    MLP_GATE_UP,
    MLP_UP,
    ROUTER,
    Matrix,
    ModelShape,
    Norm,
)
from fitplan.breakdown import CATEGORIES, MemoryBreakdown
from fitplan.errors import PlanError
from fitplan.families.moe import MLA_KVA, MLA_KVB, MLA_QA, MLA_QB
from fitplan.frozen import replace

GENERIC_NOTE = "generic path:"
NEEDS_EXTRA = "the generic path needs the validate extra: pip install 'fitplan[validate]'"
TASKS = ("causal", "seq2seq", "seq_cls")
FAKE_DEPTHS = (2, 3)
CACHE_SCHEMA = 1
OTHER = "other"          # the role of a matrix no family role fits
OUTSIDE = "outside."     # the name prefix of the parameters outside the layers, listed as Norm entries

# peft's task type for each task (a method's peft config says CAUSAL_LM)
_PEFT_TASK = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "seq_cls": "SEQ_CLS"}


def is_generic(shape: ModelShape) -> bool:
    """Whether ``shape`` came from the generic path (its note says so)."""
    return shape.note.startswith(GENERIC_NOTE)


# ---- imports ------------------------------------------------------------------------------
def _require() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise PlanError(NEEDS_EXTRA) from None
    return torch, transformers


def _short(exc: BaseException, limit: int = 160) -> str:
    """transformers' reason, on one short line."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3] if line.strip())
    text = re.sub(r"\s+", " ", text)
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _quiet():
    """transformers' warnings and log lines (a standalone BertLMHeadModel, unused weights) kept quiet."""
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)


# ---- the config and the model -----------------------------------------------------------
def _clean(raw: Any) -> tuple[str, dict[str, Any]]:
    """The model type and the config's keys (those starting with ``_`` are not the model's)."""
    if not isinstance(raw, Mapping):
        raise PlanError(f"the generic path needs a config dictionary, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise PlanError("the config has no model_type: the generic path cannot tell transformers what to build")
    return model_type, {k: v for k, v in raw.items() if not str(k).startswith("_") and k != "model_type"}


def _hf_config(model_type: str, fields: Mapping[str, Any], task: str | None = None):
    from transformers import AutoConfig

    kwargs = dict(fields)
    kwargs["use_cache"] = False
    if task == "seq_cls":
        kwargs["num_labels"] = 2
        kwargs.setdefault("problem_type", "single_label_classification")   # class ids, cross-entropy
    with _quiet():
        cfg = AutoConfig.for_model(model_type, **kwargs)
    if task == "seq_cls" and getattr(cfg, "pad_token_id", None) is None:
        cfg.pad_token_id = 0   # a decoder's classification head finds the last token by the pad id
    if task == "seq2seq" and getattr(cfg, "decoder_start_token_id", None) is None:
        # the labels are shifted right behind this id (T5 starts from its pad id, 0)
        cfg.decoder_start_token_id = getattr(cfg, "pad_token_id", None) or 0
    return cfg


def _auto_class(task: str):
    import transformers

    return {
        "causal": transformers.AutoModelForCausalLM,
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
        "seq_cls": transformers.AutoModelForSequenceClassification,
    }[task]


def choose_task(cfg: Any) -> str:
    """Which head the generic path builds: ``seq2seq`` for an encoder-decoder, ``seq_cls`` (two labels)
    for an encoder-only model (one with a masked-LM head that is not a decoder), else ``causal``."""
    from transformers.models.auto import modeling_auto as ma

    mt = cfg.model_type
    causal = mt in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    seq2seq = mt in ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    seq_cls = mt in ma.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    masked = mt in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if seq2seq and (getattr(cfg, "is_encoder_decoder", False) or not causal):
        return "seq2seq"
    if seq_cls and (not causal or (masked and not getattr(cfg, "is_decoder", False))):
        return "seq_cls"
    if causal:
        return "causal"
    if seq2seq:
        return "seq2seq"
    raise PlanError(f"transformers has no causal-LM, seq2seq or sequence-classification model for {mt!r}; "
                    "the generic path cannot train it")


def _build_config(raw: Any, task: str | None) -> tuple[str, dict[str, Any], Any, str]:
    """The model type, the cleaned keys, the transformers config and the task."""
    _require()
    model_type, fields = _clean(raw)
    if task is not None and task not in TASKS:
        raise PlanError(f"unknown generic task {task!r}. Valid: {', '.join(TASKS)}")
    try:
        cfg = _hf_config(model_type, fields)
        chosen = task or choose_task(cfg)
        if chosen == "seq_cls":
            cfg = _hf_config(model_type, fields, chosen)
    except PlanError:
        raise
    except Exception as exc:
        raise _cannot_build(model_type, exc) from None
    return model_type, fields, cfg, chosen


def _cannot_build(model_type: str, exc: BaseException) -> PlanError:
    import transformers

    return PlanError(f"transformers {transformers.__version__} cannot build model_type {model_type!r}: {_short(exc)}")


def _build(cfg: Any, task: str, model_type: str, **kwargs: Any):
    """The model on the meta device (PlanError with transformers' reason where it cannot be built)."""
    import torch

    try:
        with _quiet(), torch.device("meta"):
            return _auto_class(task).from_config(cfg, **kwargs)
    except PlanError:
        raise
    except Exception as exc:
        raise _cannot_build(model_type, exc) from None


# ---- reading the shape off the modules -------------------------------------------------------
def _is_linear(mod: Any) -> bool:
    from torch import nn

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()  # noqa: N806
    return isinstance(mod, nn.Linear) or (bool(Conv1D) and isinstance(mod, Conv1D))


def _is_norm(mod: Any) -> bool:
    from torch import nn

    return isinstance(mod, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(mod).__name__.lower()


def _linear_dims(mod: Any) -> tuple[int, int]:
    from torch import nn

    if isinstance(mod, nn.Linear):
        return int(mod.in_features), int(mod.out_features)
    w = mod.weight          # Conv1D: weight is in x out
    return int(w.shape[0]), int(w.shape[1])


_ROLE_NAMES = {
    ATTN_Q: {"q_proj", "q", "query", "wq", "q_lin", "linear_q", "query_proj", "project_q"},
    ATTN_K: {"k_proj", "k", "key", "wk", "k_lin", "linear_k", "key_proj", "project_k"},
    ATTN_V: {"v_proj", "v", "value", "wv", "v_lin", "linear_v", "value_proj", "project_v"},
    # latent attention (DeepSeek), the roles fitplan.families.moe gives them: kv_b_proj makes keys and values
    MLA_QA: {"q_a_proj"}, MLA_QB: {"q_b_proj"}, MLA_KVA: {"kv_a_proj_with_mqa"}, MLA_KVB: {"kv_b_proj"},
    ATTN_QKV: {"c_attn", "query_key_value", "qkv_proj", "wqkv", "qkv", "w_pack", "att_proj"},
    MLP_GATE: {"gate_proj", "w1", "wi_0", "linear_gate"},
    MLP_UP: {"up_proj", "w3", "fc1", "c_fc", "wi", "wi_1", "dense_h_to_4h", "lin1", "fc_in", "linear_fc1"},
    MLP_DOWN: {"down_proj", "w2", "fc2", "dense_4h_to_h", "lin2", "fc_out", "linear_fc2"},
    MLP_GATE_UP: {"gate_up_proj"},
}


def _role(path: str, mod: Any = None, num_experts: int = 0) -> str:
    """The family role of a layer's matrix, from its module path (``other`` where none fits)."""
    parts = path.lower().split(".")
    leaf = parts[-1]
    context = ".".join(parts[:-1])
    attn = "attn" in context or "attention" in context
    if leaf in ("router", "gate", "wg") and mod is not None and num_experts and \
            _is_linear(mod) and _linear_dims(mod)[1] == num_experts:
        return ROUTER
    if "router" in context or leaf == "router":
        return ROUTER
    if leaf == "in_proj" and attn:
        return ATTN_QKV
    for role, names in _ROLE_NAMES.items():
        if leaf in names:
            if role in (MLP_GATE, MLP_UP, MLP_DOWN) and attn and leaf in ("w1", "w2", "w3"):
                continue
            return role
    if leaf in ("o_proj", "out_proj", "o", "wo", "out_lin", "c_proj", "dense", "linear_out", "o_lin"):
        if attn:
            return ATTN_O
        if leaf in ("c_proj", "wo", "dense") and ("mlp" in context or "ffn" in context or "dense" in context
                                                  or "feed_forward" in context or context.endswith("output")
                                                  or "densereludense" in context):
            return MLP_DOWN
    if leaf == "dense" and "intermediate" in context:
        return MLP_UP
    return OTHER


def _is_router(path: str, rows: int, num_experts: int) -> bool:
    leaf = path.lower().rsplit(".", 1)[-1]
    return bool(num_experts) and rows == num_experts and ("router" in leaf or leaf in ("gate", "wg"))


def _expert_role(path: str) -> str:
    leaf = path.lower().rsplit(".", 1)[-1]
    if "down" in leaf or leaf in ("w2", "wo"):
        return EXPERT_DOWN
    if "gate" in leaf or "up" in leaf or leaf in ("w1", "w3", "wi"):
        return EXPERT_GATE_UP
    return OTHER


def _params(model: Any) -> dict[str, Any]:
    return dict(model.named_parameters())    # each parameter once, under its first name (tied: once)


def _module_lists(model: Any, root: Any, params: dict[str, Any]) -> list[tuple[str, int, int]]:
    """The outermost ``nn.ModuleList``s under ``root``: (path in ``model``, length, parameters)."""
    from torch import nn

    names = {id(m): n for n, m in model.named_modules()}
    lists = [(names.get(id(m)), m) for _, m in root.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    lists = [(n, m) for n, m in lists if n is not None]
    paths = [n for n, _ in lists]
    out = []
    for n, m in lists:
        if any(o != n and (o == "" or n.startswith(o + ".")) for o in paths):
            continue
        prefix = n + "." if n else ""
        count = sum(p.numel() for k, p in params.items() if k.startswith(prefix))
        if count:
            out.append((n, len(m), count))
    return out


def _sub(model: Any, getter: str) -> Any:
    try:
        mod = getattr(model, getter)()
    except Exception:
        return None
    from torch import nn

    return mod if isinstance(mod, nn.Module) else None


def _stacks(model: Any, cfg: Any, task: str, params: dict[str, Any]) -> list[tuple[str, int, str]]:
    """The layer stacks, the main one first: (path, length, role) with role ``layers`` (the decoder, or
    the encoder of an encoder-only model), or ``decoder`` and ``encoder`` for an encoder-decoder. A stack is the outermost
    ``nn.ModuleList`` with the config's layer count (else the most parameters) under the decoder."""
    tc = _text_config(cfg)
    want = _int(getattr(tc, "num_hidden_layers", None))

    def best(root: Any, exclude: set[str], want: int | None) -> tuple[str, int, int] | None:
        found = [c for c in _module_lists(model, root, params) if c[0] not in exclude]
        if not found:
            return None
        return max(found, key=lambda c: (c[1] == want, c[2]))

    out: list[tuple[str, int, str]] = []
    if task == "seq2seq":
        dec_root, enc_root = _sub(model, "get_decoder"), _sub(model, "get_encoder")
        dec_want = _first(cfg, ("num_decoder_layers", "decoder_layers", "num_hidden_layers"))
        enc_want = _first(cfg, ("num_encoder_layers", "encoder_layers", "num_layers", "num_hidden_layers"))
        dec = best(dec_root, set(), dec_want) if dec_root is not None else None
        enc = best(enc_root, {dec[0]} if dec else set(), enc_want) \
            if enc_root is not None and enc_root is not dec_root else None
        if dec:
            out.append((dec[0], dec[1], "decoder"))
        if enc:
            out.append((enc[0], enc[1], "encoder"))
        if out:
            return out
    root = _sub(model, "get_decoder") if task == "causal" else None
    main = best(root, set(), want) if root is not None else None
    if main is None:
        main = best(model, set(), want)
    if main is not None:
        out.append((main[0], main[1], "layers"))
    return out


def _siblings(model: Any, path: str, length: int, params: dict[str, Any]) -> list[str]:
    """A stack and the ModuleLists beside it of its length (XLM keeps a layer's attention, MLP and
    norms in four lists): their i-th elements make layer i together."""
    from torch import nn

    parent_path = path.rpartition(".")[0]
    parent = _get(model, parent_path)
    out = [path]
    if parent is None:
        return out
    for name, child in parent.named_children():
        full = f"{parent_path}.{name}" if parent_path else name
        if full != path and isinstance(child, nn.ModuleList) and len(child) == length and \
                any(k.startswith(full + ".") for k in params):
            out.append(full)
    return out


def _get(model: Any, path: str) -> Any:
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        return None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _text_config(cfg: Any) -> Any:
    try:
        return cfg.get_text_config(decoder=True)
    except Exception:
        return cfg


def _first(cfg: Any, names: tuple[str, ...], kind: type | tuple[type, ...] = int) -> Any:
    for n in names:
        try:
            v = getattr(cfg, n)
        except Exception:
            continue
        if isinstance(v, kind) and not isinstance(v, bool):
            return v
    return None


def _layer_entries(layer: Any, items: list[tuple[str, Any]], num_experts: int, label: str = "") -> list[Matrix | Norm]:
    """One layer's parameters (path inside the layer, parameter) as Matrix and Norm entries; ``label``
    names a parameter held by the layer module itself (a sibling list's element)."""
    from torch import nn

    have = {rel for rel, _ in items}
    out: list[Matrix | Norm] = []
    for rel, p in items:
        mpath, _, pname = rel.rpartition(".")
        mod = _get(layer, mpath)
        mine = f"{mpath}." if mpath else ""             # the module's parameters, as ``items`` names them
        if not mpath and label:
            mpath, rel = label, f"{label}.{rel}"
        has_bias = mod is not None and isinstance(getattr(mod, "bias", None), nn.Parameter) \
            and f"{mine}bias" in have
        if mod is not None and _is_linear(mod) and pname == "weight":
            i, o = _linear_dims(mod)
            out.append(Matrix(mpath, i, o, has_bias and mod.bias.numel() == o, _role(mpath, mod, num_experts)))
        elif mod is not None and _is_linear(mod) and pname == "bias" and f"{mine}weight" in have \
                and p.numel() == _linear_dims(mod)[1]:
            continue                                    # with its weight
        elif p.ndim == 2 and pname == "weight" and mod is not None and not isinstance(mod, nn.Embedding) \
                and _is_router(mpath, int(p.shape[0]), num_experts):
            # a router module holding its weight [E, hidden] (transformers 5's TopKRouter)
            has_bias = has_bias and mod.bias.numel() == p.shape[0]
            out.append(Matrix(mpath, int(p.shape[1]), int(p.shape[0]), has_bias, ROUTER, is_linear=False))
        elif pname == "bias" and mod is not None and not _is_linear(mod) and f"{mine}weight" in have \
                and getattr(mod, "weight", None) is not None and mod.weight.ndim == 2 \
                and _is_router(mpath, int(mod.weight.shape[0]), num_experts) and p.numel() == mod.weight.shape[0]:
            continue                                    # with its router weight
        elif p.ndim == 3 and not isinstance(mod, nn.modules.conv._ConvNd):
            # fused expert parameters [E, out, in] (transformers 5)
            e, o, i = (int(x) for x in p.shape)
            out.append(Matrix(rel, i, o, False, _expert_role(rel), copies=e, is_linear=False))
        elif mod is not None and _is_norm(mod) and pname == "weight" and p.ndim == 1:
            bias = has_bias and mod.bias.numel() == p.numel()
            out.append(Norm(mpath, int(p.numel()), bias))
        elif mod is not None and _is_norm(mod) and pname == "bias" and f"{mine}weight" in have and p.ndim == 1 \
                and getattr(mod, "weight", None) is not None and mod.weight.numel() == p.numel():
            continue                                    # with its weight
        else:
            out.append(Norm(rel, int(p.numel()), False))
    return out


def _outside_entries(items: list[tuple[str, Any]]) -> list[Norm]:
    """Parameters outside the layers, one Norm per name pattern and size (a vision tower's layers
    grouped: ``outside.vision_tower.layers.*.q_proj.weight`` with ``copies``)."""
    groups: dict[tuple[str, int], int] = {}
    for name, p in items:
        key = (re.sub(r"\.\d+(?=\.|$)", ".*", name), int(p.numel()))
        groups[key] = groups.get(key, 0) + 1
    return [Norm(OUTSIDE + name, size, False, copies=n, layers=1) for (name, size), n in groups.items()]


def _merge(per_layer: list[list[Matrix | Norm]], total_layers: int) -> list[Matrix | Norm]:
    """Entries alike across layers once, with how many layers hold each (None: every layer)."""
    counts: dict[Any, int] = {}
    order: list[Any] = []
    for entries in per_layer:
        for e in entries:
            if e not in counts:
                counts[e] = 0
                order.append(e)
            counts[e] += 1
    out = []
    for e in order:
        n = counts[e]
        out.append(_with_layers(e, None if n == total_layers else n))
    return out


def _with_layers(e: Matrix | Norm, layers: int | None) -> Matrix | Norm:
    from fitplan.frozen import replace

    return replace(e, layers=layers)


def _versions() -> dict[str, str]:
    """The installed versions of torch, transformers and peft, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "none"
    return out


def generic_shape(raw: Mapping[str, Any], name: str = "config.json", *, task: str | None = None) -> ModelShape:
    """The ``ModelShape`` of any config transformers can build, read off the model built on the meta device.

    ``task``: ``causal``, ``seq2seq`` or ``seq_cls`` (two labels); None chooses (``choose_task``).
    ``parameter_count`` is the built model's ``num_parameters()`` exactly; ``note`` starts with
    ``"generic path:"``.

    Raises:
        PlanError: no model_type; transformers cannot build the config (its reason, shortened); torch or
            transformers missing (the ``validate`` extra).
    """
    model_type, _, cfg, task = _build_config(raw, task)
    model = _build(cfg, task, model_type)
    return _shape_of(model, cfg, task, name)


def _shape_of(model: Any, cfg: Any, task: str, name: str) -> ModelShape:
    from torch import nn

    params = _params(model)
    tc = _text_config(cfg)
    stacks = _stacks(model, cfg, task, params)
    notes: list[str] = []
    num_experts = _first(tc, ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")) or 0

    # ---- the layers
    per_layer: list[list[Matrix | Norm]] = []
    inside: set[str] = set()
    for path, length, _ in stacks:
        lists = _siblings(model, path, length, params)
        for i in range(length):
            entries: list[Matrix | Norm] = []
            for lpath in lists:
                element = model.get_submodule(lpath)[i]
                lp = f"{lpath}.{i}." if lpath else f"{i}."
                items = [(k[len(lp):], p) for k, p in params.items() if k.startswith(lp)]
                inside.update(lp + rel for rel, _ in items)
                label = lpath.rsplit(".", 1)[-1] if lpath != path else ""
                entries.extend(_layer_entries(element, items, num_experts, label))
            per_layer.append(entries)
    total_layers = sum(length for _, length, _ in stacks) or 1
    layer_entries = _merge(per_layer, total_layers) if stacks else []
    matrices = tuple(e for e in layer_entries if isinstance(e, Matrix))
    norms = [e for e in layer_entries if isinstance(e, Norm)]

    # ---- outside the layers
    names_of = {id(m): n for n, m in model.named_modules()}
    in_emb = _sub(model, "get_input_embeddings")
    out_emb = _sub(model, "get_output_embeddings")
    emb_w = getattr(in_emb, "weight", None) if in_emb is not None else None
    head_w = getattr(out_emb, "weight", None) if out_emb is not None else None
    head_b = getattr(out_emb, "bias", None) if out_emb is not None else None
    hidden = _first(tc, ("hidden_size", "d_model", "n_embd", "dim")) or (int(emb_w.shape[-1]) if emb_w is not None else 0)

    main_path = stacks[0][0] if stacks else None
    main_parent = main_path.rpartition(".")[0] if main_path else ""
    outside = [(k, p) for k, p in params.items() if k not in inside]
    vocab = 0
    tie = True
    head_bias = False
    emb_id = id(emb_w) if emb_w is not None else None
    if emb_w is not None and emb_w.ndim == 2 and int(emb_w.shape[1]) == hidden and any(p is emb_w for _, p in outside):
        vocab = int(emb_w.shape[0])
    else:
        emb_id = None
        notes.append("the input embedding is not vocab x hidden: it is counted among the other parameters")
    head_id = head_bias_id = None
    if head_w is not None and vocab and head_w is not emb_w and tuple(head_w.shape) == (vocab, hidden) \
            and any(p is head_w for _, p in outside):
        tie, head_id = False, id(head_w)
        if isinstance(head_b, nn.Parameter) and tuple(head_b.shape) == (vocab,) and any(p is head_b for _, p in outside):
            head_bias, head_bias_id = True, id(head_b)
    elif head_w is None or head_w is not emb_w:
        what = "no LM head" if head_w is None else "the output head is not vocab x hidden"
        notes.append(f"{what}: tie_word_embeddings stands for no separate vocab x hidden head")

    positions = 0
    final_norm: Norm | None = None
    embedding_norm: Norm | None = None
    outside_ids = {id(p) for _, p in outside}
    skip: set[int] = {i for i in (emb_id, head_id, head_bias_id) if i is not None}
    # the final norm (beside the main stack) and the embedding norm: modules whose weight is outside
    for k, p in outside:
        mpath, _, pname = k.rpartition(".")
        mod = _get(model, mpath)
        if mod is None or not _is_norm(mod) or pname != "weight" or p.ndim != 1 or int(p.numel()) != hidden:
            continue
        bias = getattr(mod, "bias", None)
        both = isinstance(bias, nn.Parameter) and id(bias) in outside_ids and bias.numel() == p.numel()
        label = names_of.get(id(mod), mpath)
        if final_norm is None and main_path is not None and mpath.rpartition(".")[0] == main_parent \
                and "emb" not in mpath.lower():
            final_norm = Norm(label, hidden, both)
        elif embedding_norm is None and "emb" in mpath.lower():
            embedding_norm = Norm(label, hidden, both)
        else:
            continue
        skip.add(id(p))
        if both:
            skip.add(id(bias))
    rest: list[tuple[str, Any]] = []
    for k, p in outside:
        if id(p) in skip:
            continue
        mpath = k.rpartition(".")[0]
        mod = _get(model, mpath)
        leaf = mpath.rsplit(".", 1)[-1].lower()
        if isinstance(mod, nn.Embedding) and ("pos" in leaf or leaf == "wpe") and p.ndim == 2 \
                and int(p.shape[1]) == hidden:
            positions += int(p.shape[0])
            continue
        rest.append((k, p))
    extras = _outside_entries(rest)
    norms.extend(extras)
    if final_norm is None:
        final_norm = Norm("none", 0, False)
        notes.append("no final norm beside the layers")

    # ---- the facts
    heads = _first(tc, ("num_attention_heads", "n_head", "num_heads", "n_heads")) or 0
    kv_heads = _first(tc, ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num")) or heads
    head_dim = _first(tc, ("head_dim", "d_kv", "kv_channels")) or (hidden // heads if heads else 0)
    down = next((m for m in matrices if m.role == MLP_DOWN), None)
    intermediate = (down.in_features if down else None) or _first(
        tc, ("intermediate_size", "d_ff", "ffn_dim", "n_inner", "decoder_ffn_dim", "ffn_hidden_size")) or 0
    norm_classes = [m for m in model.modules() if _is_norm(m)]
    layer_norm = any(isinstance(m, nn.LayerNorm) or ("LayerNorm" in type(m).__name__ and
                                                     isinstance(getattr(m, "bias", None), nn.Parameter))
                     for m in norm_classes)
    rotary = any("rotary" in type(m).__name__.lower() for m in model.modules())
    partial = _first(tc, ("partial_rotary_factor",), (int, float))
    rotary_dim = int(head_dim * partial) if rotary and partial else (head_dim if rotary else 0)
    dropout = _first(tc, ("hidden_dropout", "resid_pdrop", "hidden_dropout_prob", "dropout", "dropout_rate"),
                     (int, float)) or 0.0
    window = _first(tc, ("sliding_window",))
    activation = _first(tc, ("hidden_act", "activation_function", "hidden_activation", "dense_act_fn",
                             "feed_forward_proj", "afn"), str) or "unknown"
    kernels = ("eager",) + (("sdpa",) if getattr(model, "_supports_sdpa", False) else ()) + \
        (("flash",) if getattr(model, "_supports_flash_attn", False) else ())

    import transformers

    layout = " + ".join(f"{role} {length} ({path})" for path, length, role in stacks) or "no layer stack found"
    built_type = getattr(model.config, "model_type", None) or cfg.model_type
    wrapper = f" (the language model of {cfg.model_type})" if built_type != cfg.model_type else ""
    head = [f"{GENERIC_NOTE} built by transformers {transformers.__version__} as {type(model).__name__}{wrapper} "
            f"({task}); layers: {layout}"]
    if len(stacks) > 1:
        head.append(f"num_layers counts both stacks ({total_layers})")
    if any(e.layers is not None for e in layer_entries):
        head.append("layers differ (entries say how many layers hold them)")
    if extras:
        head.append(f"{sum(e.params for e in extras):,} parameters outside the layers listed as "
                    f"'{OUTSIDE}*' entries held by one layer")
    shape = ModelShape(
        name=name,
        model_type=built_type,
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=total_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        matrices=matrices,
        norms=tuple(norms),
        final_norm=final_norm,
        position_embeddings=positions,
        tie_word_embeddings=tie,
        lm_head_bias=head_bias,
        norm_kind="layer" if layer_norm else "rms",
        gated_mlp=any(m.role in (MLP_GATE, MLP_GATE_UP) for m in matrices),
        num_experts=num_experts,
        experts_per_token=_first(tc, ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "top_k")) or 0
        if num_experts else 0,
        dropout=float(dropout),
        sliding_window=window,
        rotary_dim=rotary_dim,
        activation=activation,
        attention_kernels=kernels,
        max_positions=_first(tc, ("max_position_embeddings", "n_positions")),
        embedding_norm=embedding_norm,
        note="; ".join(head + notes),
    )
    expected = model.num_parameters()
    if shape.parameter_count != expected:    # pragma: no cover - a bug here, never the user's
        raise PlanError(f"generic path: the shape of {built_type} counts {shape.parameter_count:,} "
                        f"parameters but the model has {expected:,}")
    return shape


# ---- the measurement ----------------------------------------------------------------------
@dataclasses.dataclass
class GenericMeasurement:
    """A training step's peak on fake tensors, extrapolated to the real depth.

    ``peak_bytes``: live tensor bytes at the peak; ``peak_phase``: forward, backward or optimizer;
    ``breakdown``: the planner's categories there (``fitplan.breakdown``); ``phases``: each phase's
    peak and categories; ``trainable_params`` / ``total_params``: the trained model's at full depth
    (built on the meta device with the method applied: adapters included); ``measured_layers``:
    the depths measured (one dict per run, stack -> layers); ``extrapolated_to``: the real depths.
    """

    peak_bytes: int
    peak_phase: str
    breakdown: MemoryBreakdown
    trainable_params: int
    total_params: int
    task: str
    model_type: str
    mode: str = "fake"
    steps: int = 2
    duration_s: float = dataclasses.field(default=0.0, compare=False)   # of the measurement, not of a cache hit
    phases: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    measured_layers: list[dict[str, int]] = dataclasses.field(default_factory=list)
    extrapolated_to: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def categories(self) -> dict[str, int]:
        """Bytes by shared category (parameters, gradients, ...) at the peak."""
        return self.breakdown.shared()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["breakdown"] = self.breakdown.parts()
        out["categories"] = self.categories
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenericMeasurement:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["breakdown"] = MemoryBreakdown(**{k: int(d["breakdown"][k]) for k in CATEGORIES})
        return cls(**values)


def _layer_keys(fields: dict[str, Any]) -> list[tuple[tuple[str, ...], str, int]]:
    """Integer keys that may set a stack's depth: (path of nested dicts, key, value)."""
    out = []

    def walk(d: Mapping[str, Any], path: tuple[str, ...], depth: int) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping) and depth < 2:
                walk(v, (*path, k), depth + 1)
            elif _int(v) is not None and v > 0 and "layer" in k.lower() and "size" not in k.lower() \
                    and "idx" not in k.lower() and "index" not in k.lower():
                out.append((path, k, v))

    walk(fields, (), 0)
    return out


def _per_layer(d: Mapping[str, Any], key: str, old: int) -> list[tuple[str, str]]:
    """The per-layer settings beside a depth key: (name, kind) with kind ``list`` (one value a layer:
    ``layer_types``), ``pattern`` (a string, one character a layer), ``indices`` (the layers that
    have something: ``mlp_only_layers``) or ``by_index`` (a dict keyed by layer index)."""
    out = []
    for k, v in d.items():
        low = k.lower()
        if k == key:
            continue
        if isinstance(v, list) and len(v) == old:
            out.append((k, "list"))
        elif isinstance(v, str) and len(v) == old and "pattern" in low:
            out.append((k, "pattern"))
        elif isinstance(v, list) and v and all(_int(x) is not None for x in v) and 0 <= min(v) \
                and ("layer" in low or "idx" in low or "indices" in low):
            out.append((k, "indices"))
        elif isinstance(v, list) and 1 < len(v) < old and all(isinstance(x, str) for x in v) \
                and ("type" in low or "pattern" in low or "block" in low):
            out.append((k, "cycle"))          # a pattern repeated up the stack (RecurrentGemma's block_types)
        elif isinstance(v, Mapping) and v and "layer" in low and all(str(x).isdigit() for x in v) \
                and max(int(x) for x in v) < old:
            out.append((k, "by_index"))
    return out


def _dict_at(fields: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    d = fields
    for p in path:
        d = d[p]
    return d


def _signature(d: Mapping[str, Any], items: list[tuple[str, str]], i: int) -> tuple:
    """What the per-layer settings say of layer ``i``."""
    out = []
    for k, kind in items:
        v = d[k]
        if kind in ("list", "pattern"):
            out.append(json.dumps(v[i], sort_keys=True, default=str))
        elif kind == "cycle":
            out.append(v[i % len(v)])
        elif kind == "indices":
            out.append(i in v)
        else:
            hit = next((x for x in v if int(x) == i), None)
            out.append(json.dumps(v[hit], sort_keys=True, default=str) if hit is not None else None)
    return tuple(out)


def _select(fields: dict[str, Any], choices: list[tuple[tuple[str, ...], str, int, list[int]]]) -> dict[str, Any]:
    """The config's keys with some stacks cut to the chosen layers: (path, depth key, real depth, the
    real indices of the layers kept, in order); the per-layer settings beside each key follow them."""
    import copy

    out = copy.deepcopy(fields)
    for path, key, old, keep in choices:
        d = _dict_at(out, path)
        items = _per_layer(d, key, old)
        d[key] = len(keep)
        for k, kind in items:
            v = d[k]
            if kind == "list":
                d[k] = [v[i] for i in keep]
            elif kind == "pattern":
                d[k] = "".join(v[i] for i in keep)
            elif kind == "cycle":
                d[k] = [v[i % len(v)] for i in keep]
            elif kind == "indices":
                have = set(v)
                d[k] = [j for j, i in enumerate(keep) if i in have]
            else:
                width = len(next(iter(v)))
                padded = all(len(x) == width for x in v) and any(x.startswith("0") and len(x) > 1 for x in v)
                by_int = {int(x): x for x in v}
                d[k] = {(f"{j:0{width}d}" if padded else str(j)): v[by_int[i]] for j, i in enumerate(keep)
                        if i in by_int}
    return out


@dataclasses.dataclass
class _Plan:
    """How to build the model with chosen layers of each stack."""

    model_type: str
    fields: dict[str, Any]
    task: str
    lengths: dict[str, int]                              # stack role -> real length
    keys: list[tuple[tuple[str, ...], str, int, tuple[str, ...]]]  # (path, key, real value, stacks it sets)
    notes: list[str]


def _stack_lengths(model: Any, cfg: Any, task: str) -> dict[str, int]:
    return {role: length for _, length, role in _stacks(model, cfg, task, _params(model))}


def _layer_signatures(model: Any, cfg: Any, task: str) -> dict[str, list[tuple]]:
    """Each stack's layers: (parameter name inside the layer, shape) of each, by stack role."""
    params = _params(model)
    out = {}
    for path, length, role in _stacks(model, cfg, task, params):
        prefix = f"{path}." if path else ""
        sigs = []
        for i in range(length):
            lp = f"{prefix}{i}."
            sigs.append(tuple((k[len(lp):], tuple(p.shape)) for k, p in params.items() if k.startswith(lp)))
        out[role] = sigs
    return out


def _depth_plan(model_type: str, fields: dict[str, Any], cfg: Any, task: str, model: Any) -> _Plan:
    base = {k: v for k, v in cfg.to_dict().items() if not str(k).startswith("_") and k not in
            ("model_type", "transformers_version", "architectures")}
    for k, v in fields.items():          # what the user gave stays as given
        base.setdefault(k, v)
    lengths = _stack_lengths(model, cfg, task)
    notes: list[str] = []
    keys: list[tuple[tuple[str, ...], str, int, tuple[str, ...]]] = []
    covered: set[str] = set()
    candidates = [c for c in _layer_keys(base) if c[2] in lengths.values() and c[2] > FAKE_DEPTHS[1]]
    for path, key, value in candidates:
        targets = [r for r, n in lengths.items() if n == value and r not in covered]
        if not targets:
            continue
        try:
            trial = _select(base, [(path, key, value, list(range(FAKE_DEPTHS[0])))])
            tcfg = _hf_config(model_type, trial, task)
            tmodel = _build(tcfg, task, model_type)
            got = _stack_lengths(tmodel, tcfg, task)
        except Exception:
            continue
        moved = tuple(r for r in targets if got.get(r) == FAKE_DEPTHS[0])
        others_kept = all(got.get(r) == n for r, n in lengths.items() if r not in moved)
        if moved and others_kept:
            keys.append((path, key, value, moved))
            covered.update(moved)
    for role, n in lengths.items():
        if n > FAKE_DEPTHS[1] and role not in covered:
            notes.append(f"could not find the config key that sets the {role} stack's depth: measured at "
                         f"its full {n} layers")
    return _Plan(model_type, base, task, lengths, keys, notes)


def _watch_head(tracker: Any, model: Any, task: str) -> None:
    """Count the head's tensors (logits, the loss) as logits and loss: the LM head, or a classifier."""
    if task != "seq_cls":
        tracker.watch_head(model)
        return
    found = sorted((n for n, _ in model.named_modules()
                    if n.rsplit(".", 1)[-1] in ("classifier", "score", "classification_head", "sequence_summary")),
                   key=lambda n: n.count("."))
    if found:
        model.get_submodule(found[0]).register_forward_pre_hook(lambda *_: setattr(tracker, "region", "head"))


def _plain_build(method: Any, setup: Any) -> bool:
    """The method builds as ``Method.build`` does (checkpointing, then its peft config)."""
    from fitplan.methods.base import Method

    build = type(method).build
    if build is Method.build:
        return True
    try:
        from fitplan.methods.lora import LoRA
    except ImportError:  # pragma: no cover
        return False
    return build is LoRA.build and method.quantization_config(setup) is None


def _peft_view(shape: ModelShape) -> ModelShape:
    """The shape a method builds from: one matrix per module name. Layers of two kinds can hold modules
    of one name and two sizes (Gemma 4's sliding and global ``self_attn.q_proj``); peft matches names,
    so one entry reaches both, where two would be qualified (``attn.``) into names that match nothing."""
    from fitplan.frozen import replace

    seen: set[str] = set()
    kept = []
    for m in shape.matrices:
        if m.name not in seen:
            seen.add(m.name)
            kept.append(m)
    return shape if len(kept) == len(shape.matrices) else replace(shape, matrices=tuple(kept))


def _apply(model: Any, shape: ModelShape, setup: Any, task: str) -> Any:
    """The method applied; a peft config written for causal LMs gets the model's own task type."""
    from fitplan.validate.build import apply_method, cast_adapters, enable_checkpointing

    shape = _peft_view(shape)
    method = setup.method
    if task != "causal" and _plain_build(method, setup):
        try:
            config = method.peft_config(shape, setup)
        except ImportError:
            raise PlanError(NEEDS_EXTRA) from None
        if config is not None and str(getattr(config, "task_type", "")) in ("CAUSAL_LM", "TaskType.CAUSAL_LM"):
            import peft

            if setup.checkpointing:
                enable_checkpointing(model)
            config.task_type = _PEFT_TASK[task]
            return cast_adapters(peft.get_peft_model(model, config), setup)
    try:
        return apply_method(model, shape, setup)
    except ImportError:
        raise PlanError(NEEDS_EXTRA) from None


def _fields_for(plan: _Plan, keep: dict[str, list[int]] | None, overrides: tuple = ()) -> dict[str, Any]:
    """The config's keys with the layers ``keep`` says and the ``overrides`` set."""
    keep = keep or {}
    choices = []
    for path, key, value, roles in plan.keys:
        chosen = keep.get(roles[0])
        if chosen is not None and list(chosen) != list(range(value)):
            choices.append((path, key, value, list(chosen)))
    fields = _select(plan.fields, choices) if choices or overrides else plan.fields
    for path, key, value in overrides:
        _dict_at(fields, path)[key] = value
    return fields


def _plain_signatures(plan: _Plan, keep: dict[str, list[int]], overrides: tuple = ()) -> dict[str, list[tuple]] | None:
    """The layers' signatures of the plain model with these layers (None where it cannot be built)."""
    try:
        fields = _fields_for(plan, keep, overrides)
        cfg = _hf_config(plan.model_type, fields, plan.task)
        model = _build(cfg, plan.task, plan.model_type)
    except Exception:
        return None
    return _layer_signatures(model, cfg, plan.task)


_KIND_KEYS = ("dense", "sparse", "moe", "expert", "period", "offset", "step", "freq", "interval", "first", "last",
              "every", "layer")
_NOT_KIND_KEYS = ("size", "dim", "head", "vocab", "token", "position", "rank", "per_tok", "group", "num_experts",
                  "n_routed", "n_shared", "window", "chunk")


def _reproduce(plan: _Plan, kind: _Kind, keep: dict[str, list[int]], full_sigs: dict[str, list[tuple]],
               given: tuple = ()) -> _Kind:
    """The kind, with the config keys (if any) that make a shallow model of the layers ``keep`` says
    build those layers as they are in the real model: a layer whose kind an integer key sets by index
    (DeepSeek's ``first_k_dense_replace``, Jamba's ``attn_layer_offset``) gets one of 0-3 there."""
    want_all = full_sigs.get(kind.role) or []
    chosen = keep.get(kind.role) or []
    if not want_all or any(i >= len(want_all) for i in chosen):
        return dataclasses.replace(kind, overrides=given)
    want = [want_all[i] for i in chosen]

    def good(overrides: tuple) -> bool:
        sigs = _plain_signatures(plan, keep, overrides)
        return sigs is not None and (sigs.get(kind.role) or []) == want

    if good(given):
        return dataclasses.replace(kind, overrides=given)
    path = next(p for p, _, _, roles in plan.keys if kind.role in roles)
    d = _dict_at(plan.fields, path)
    depth = plan.lengths[kind.role]
    d1 = FAKE_DEPTHS[0]
    taken = {k for _, k, _ in given}
    for key, value in d.items():
        low = key.lower()
        if _int(value) is None or not 0 <= value <= depth or not any(w in low for w in _KIND_KEYS) \
                or any(w in low for w in _NOT_KIND_KEYS) or any(key == k for _, k, _, _ in plan.keys) \
                or key in taken:
            continue
        for candidate in (d1, d1 + 1, 0, 1):
            if candidate == value:
                continue
            overrides = (*given, (path, key, candidate))
            if good(overrides):
                return dataclasses.replace(kind, overrides=overrides)
    return dataclasses.replace(kind, overrides=given, reproduced=False)


def _method_model(plan: _Plan, shape: ModelShape, setup: Any, keep: dict[str, list[int]] | None,
                  notes: list[str], overrides: tuple = ()) -> tuple[Any, dict[str, list[tuple]]]:
    """The model with the layers ``keep`` says (stack role -> real indices kept; None or a stack left
    out: all) on the meta device, the method applied; and its layers' signatures before the method."""
    import torch
    from fitplan.validate.build import torch_dtype

    fields = _fields_for(plan, keep, overrides)
    try:
        cfg = _hf_config(plan.model_type, fields, plan.task)
    except Exception as exc:
        raise _cannot_build(plan.model_type, exc) from None
    attention = setup.attention
    if attention == "flash":
        attention = "sdpa"
        _note(notes, "flash attention measured as sdpa (fake tensors run CPU kernels)")
    dtype = torch_dtype(setup.weight_dtype)
    try:
        with _quiet(), torch.device("meta"):
            model = _auto_class(plan.task).from_config(cfg, attn_implementation=attention, dtype=dtype)
    except Exception as exc:
        if attention == "eager":
            raise _cannot_build(plan.model_type, exc) from None
        _note(notes, f"{attention} attention is not available for {plan.model_type} ({_short(exc, 80)}): "
                     "measured with eager attention")
        model = _build(cfg, plan.task, plan.model_type, attn_implementation="eager", dtype=dtype)
    signatures = _layer_signatures(model, cfg, plan.task)
    with _quiet(), torch.device("meta"):
        try:
            model = _apply(model, shape, setup, plan.task)
        except PlanError:
            raise
        except Exception as exc:
            raise PlanError(f"{setup.method.name} cannot be applied to {plan.model_type} on the generic path: "
                            f"{_short(exc)}") from None
    return model, signatures


def _note(notes: list[str], line: str) -> None:
    if line not in notes:
        notes.append(line)


def _train(model: Any, setup: Any, task: str, vocab: int, steps: int, tracker: Any) -> None:
    """``steps`` optimizer steps on fake inputs, marking the tracker's phases (as the validator's
    causal-LM step does; a classifier's labels are class ids)."""
    import torch
    from fitplan.validate.measure import _autocast, make_optimizer

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PlanError(f"{setup.method.name} leaves nothing to train on this model")
    opt = make_optimizer(setup, trainable)
    for step in range(1, steps + 1):
        tracker.set_phase(step, "forward")
        tracker.mark("start")
        ids = torch.randint(0, vocab, (setup.batch_size, setup.seq_len))
        labels = torch.randint(0, 2, (setup.batch_size,)) if task == "seq_cls" else ids
        with _autocast(setup, "cpu"):
            loss = model(input_ids=ids, labels=labels).loss
        tracker.mark("end_forward")
        tracker.set_phase(step, "backward")
        tracker.instrument_graph(loss.grad_fn)
        loss.backward()
        del loss, ids, labels
        tracker.mark("end_backward")
        tracker.name_grads(trainable)
        tracker.set_phase(step, "optimizer")
        opt.step()
        tracker.name_states(opt)
        tracker.set_phase(step, "zero_grad")
        opt.zero_grad(set_to_none=True)
        tracker.mark("end_step")


@contextlib.contextmanager
def _fake_friendly(notes: list[str]):
    """What fake tensors need beyond the validator's mask decisions: torch's meta kernel of
    ``grouped_mm`` accepts bf16 only, so fused experts in another dtype take transformers' own
    fallback op (same outputs, same saved tensors); torch's log of failed meta kernels kept quiet."""
    import logging

    import torch

    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        from transformers.integrations import moe
    except ImportError:  # pragma: no cover
        moe = None
    original = getattr(moe, "_can_use_grouped_mm", None)

    def can_use(input: Any, weight: Any, offs: Any) -> bool:
        if weight.dtype != torch.bfloat16:
            _note(notes, "fused experts outside bf16 measured through transformers' grouped_mm fallback op "
                         "(torch's fake grouped_mm takes bf16 only)")
            return False
        return original(input, weight, offs)

    if original is not None:
        moe._can_use_grouped_mm = can_use
    try:
        yield
    finally:
        if original is not None:
            moe._can_use_grouped_mm = original
        log.setLevel(level)


def _fake_once(plan: _Plan, shape: ModelShape, setup: Any, keep: dict[str, list[int]] | None, steps: int,
               notes: list[str], overrides: tuple = ()) -> tuple[dict[str, tuple[int, dict[str, int]]],
                                                                 dict[str, list[tuple]]]:
    """One training step's phases (peak, categories) with the layers ``keep`` says, and the layers'
    signatures."""
    from fitplan.validate.build import fakeify, real_mask_decisions
    from fitplan.validate.measure import _phase_peaks, _register_model
    from fitplan.validate.tracker import MemoryTracker
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs="8bit" in setup.optimizer
                               or setup.optimizer in ("paged-adamw", "lion"))
    model, signatures = _method_model(plan, shape, setup, keep, notes, overrides)
    fakeify(model, fake_mode)
    model.train()
    emb = _sub(model, "get_input_embeddings")
    vocab = int(getattr(emb, "num_embeddings", 0) or 0) or shape.vocab_size or 2
    tracker = MemoryTracker()
    tracker.keep_timeline = False
    _register_model(tracker, model)
    _watch_head(tracker, model, plan.task)
    try:
        with fake_mode, tracker, real_mask_decisions(), _quiet(), _fake_friendly(notes):
            _train(model, setup, plan.task, vocab, steps, tracker)
    except PlanError:
        raise
    except Exception as exc:
        raise PlanError(f"the generic path could not run a training step of {plan.model_type} "
                        f"({plan.task}, {setup.method.name}) on fake tensors: {_short(exc)}") from None
    return _phase_peaks(tracker, steps), signatures


def _counts(plan: _Plan, shape: ModelShape, setup: Any, notes: list[str]) -> tuple[int, int]:
    """Trainable and total parameters of the trained model at full depth (meta device)."""
    model, _ = _method_model(plan, shape, setup, None, notes)
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


@dataclasses.dataclass
class _Kind:
    """Layers of one stack alike (per-layer settings and parameters) past the bottom two: measured once,
    on top of the bottom two, and counted ``count`` times."""

    role: str
    rep: int            # the real index of the first such layer
    count: int
    param_sig: tuple
    label: str
    second: int = -1        # the real index of the second such layer (-1: none)
    overrides: tuple = ()   # (path, key, value): config keys set so that a shallow model builds this kind
    reproduced: bool = True


def _kinds(plan: _Plan, full_sigs: dict[str, list[tuple]]) -> list[_Kind]:
    """The kinds of layer past the bottom two of each stack whose depth the plan can set."""
    d1 = FAKE_DEPTHS[0]
    out: list[_Kind] = []
    for path, key, value, roles in plan.keys:
        role = roles[0]
        d = _dict_at(plan.fields, path)
        items = _per_layer(d, key, value)
        psigs = full_sigs.get(role) or [()] * value
        groups: dict[tuple, list[int]] = {}
        for i in range(d1, value):
            groups.setdefault((_signature(d, items, i), psigs[i] if i < len(psigs) else ()), []).append(i)
        for (csig, psig), idx in groups.items():
            shown = ", ".join(f"{k}={str(s).strip(chr(34))}" for (k, _), s in zip(items, csig)
                              if k in ("layer_types", "mlp_layer_types"))
            out.append(_Kind(role, idx[0], len(idx), psig, shown, idx[1] if len(idx) > 1 else -1))
    return out


def _measure_kinds(plan: _Plan, shape: ModelShape, setup: Any, steps: int, kinds: list[_Kind],
                   anchor: _Kind | None, full_sigs: dict[str, list[tuple]], notes: list[str],
                   ) -> tuple[dict[str, tuple[int, dict[str, int]]], list[dict[str, list[int]]], list[_Kind]]:
    """The bottom two layers of each stack (and the ``anchor`` kind's first layer, where the bottom two
    alone cannot be built or trained: a hybrid whose bottom layers hold none of the adapters' targets),
    then each kind of layer once on top; each kind's difference counted as often as it occurs."""
    d1 = FAKE_DEPTHS[0]
    base_keep = {roles[0]: list(range(d1)) for _, _, _, roles in plan.keys}
    if anchor is not None:
        base_keep[anchor.role] = base_keep[anchor.role] + [anchor.rep]

    def keep_for(extra: tuple[str, int] | None) -> dict[str, list[int]]:
        keep = {role: list(ix) for role, ix in base_keep.items()}
        if extra is not None:
            keep[extra[0]] = keep[extra[0]] + [extra[1]]
        for _, _, _, roles in plan.keys:      # a key setting two stacks moves them together
            for r in roles[1:]:
                keep[r] = keep[roles[0]]
        return keep

    used: list[tuple[_Kind, int, int]] = []       # (kind, the layer measured, how many it stands for)
    for k in kinds:
        if anchor is not None and k is anchor:
            if k.count > 1:
                used.append((k, k.second, k.count - 1))
        else:
            used.append((k, k.rep, k.count))
    measured: list[_Kind] = []
    if anchor is not None:
        base_kind = _reproduce(plan, anchor, keep_for(None), full_sigs)
        base_overrides = base_kind.overrides
    else:
        base_kind, base_overrides = None, ()
    results = [_fake_once(plan, shape, setup, keep_for(None), steps, notes, base_overrides)[0]]
    runs = [keep_for(None)]
    for k, layer, _ in used:
        keep = keep_for((k.role, layer))
        k = _reproduce(plan, dataclasses.replace(k, rep=layer), keep, full_sigs, base_overrides)
        results.append(_fake_once(plan, shape, setup, keep, steps, notes, k.overrides)[0])
        runs.append(keep)
        measured.append(k)
    for k in ([base_kind] if base_kind is not None else []) + measured:
        if k.overrides:
            shown = ", ".join(f"{key}={value}" for _, key, value in k.overrides)
            _note(notes, f"{k.role} {k.rep}'s kind of layer measured in a shallow model with {shown}")
        if not k.reproduced:
            _note(notes, f"{k.role} {k.rep}'s kind of layer ({k.count} layers) could not be built in a shallow "
                         "model (a config key the generic path does not know sets it): measured as the shallow "
                         "model's top layer came out (approximate)")
    a = results[0]
    phases: dict[str, tuple[int, dict[str, int]]] = {}
    for phase in a:
        if not all(phase in r for r in results):
            continue
        peak, cats = a[phase][0], dict(a[phase][1])
        for (_, _, count), r in zip(used, results[1:]):
            peak += count * (r[phase][0] - a[phase][0])
            for c in cats:
                cats[c] += count * (r[phase][1][c] - a[phase][1][c])
        phases[phase] = (max(peak, 0), {c: max(v, 0) for c, v in cats.items()})
    if anchor is not None:
        notes.append(f"the bottom two layers alone could not be measured: the base run also holds "
                     f"{anchor.role} {anchor.rep} ({anchor.label or 'its kind of layer'})")
    return phases, runs, [k for k, _, _ in used]


def generic_measure(raw: Mapping[str, Any], shape: ModelShape, setup: Any, *, task: str | None = None,
                    steps: int = 2) -> GenericMeasurement:
    """The training step's peak on fake tensors (no memory used), at 2 and 3 layers extrapolated to the
    real depth, every phase and category.

    The bottom two layers of each stack are measured, then each kind of layer above them (layers whose
    per-layer config settings, ``layer_types`` and the like, and parameters are alike) once on top of
    them; each kind's difference counts as many times as the model has such layers. A model of one kind
    of layer is measured at 2 and 3 layers; a hybrid (linear and full attention, sliding and global) at
    2 and at 3 layers once per kind. Where a shallow model cannot be built or run, the full depth is.

    Raises:
        PlanError: the config cannot be built, the method cannot be applied or run on fake tensors (a
            quantized base), or the step fails (transformers' reason, shortened).
    """
    _require()
    if steps < 2:
        raise PlanError("steps must be at least 2: the optimizer's state appears at the first")
    if setup.method.quantized_base or setup.method.quantization_config(setup) is not None:
        raise PlanError(f"{setup.method.name} cannot run under fake tensors (its base is quantized from real "
                        "weights); the generic path measures on fake tensors only")
    start = time.perf_counter()
    model_type, fields, cfg, task = _build_config(raw, task)
    model = _build(cfg, task, model_type)
    plan = _depth_plan(model_type, fields, cfg, task, model)
    full_sigs = _layer_signatures(model, cfg, task)
    built_type = getattr(model.config, "model_type", None) or cfg.model_type
    del model
    notes = list(plan.notes)
    kinds = _kinds(plan, full_sigs)
    runs: list[dict[str, list[int]]] = []
    phases: dict[str, tuple[int, dict[str, int]]] = {}
    failed: PlanError | None = None
    anchors: list[_Kind | None] = [None] + (kinds if len({k.role for k in kinds}) < len(kinds) else [])
    for anchor in anchors if kinds else ():
        try:
            phases, runs, kinds_used = _measure_kinds(plan, shape, setup, steps, kinds, anchor, full_sigs, notes)
            break
        except PlanError as exc:
            failed = failed or exc
            if len(anchors) == 1:
                raise
    if not phases:
        if failed is not None:
            notes.append(f"the shallow models failed ({failed}); measured at the full depth instead")
        kinds_used = []
        runs = [{role: list(range(n)) for role, n in plan.lengths.items()}]
        got, _ = _fake_once(plan, shape, setup, None, steps, notes)
        phases = {p: (v[0], dict(v[1])) for p, v in got.items()}
    kinds = kinds_used
    peak_phase = max(phases, key=lambda p: phases[p][0])
    trainable, total = _counts(plan, shape, setup, notes)

    def depth(run: Mapping[str, int]) -> str:
        if len(run) == 1:
            return str(next(iter(run.values())))
        return "(" + ", ".join(f"{r} {n}" for r, n in sorted(run.items())) + ")"

    measured = [{role: len(ix) for role, ix in run.items()} for run in runs]
    for role, n in plan.lengths.items():
        for m in measured:
            m.setdefault(role, n)
    real = depth(plan.lengths).strip("()")
    kernels = "CUDA kernels (flash attention, cuBLAS workspaces) save differently"
    if kinds:
        shown = " and ".join(depth(m) for m in measured)
        notes.insert(0, f"measured on fake tensors with CPU kernels at {shown} layers, extrapolated linearly "
                        f"to {real} layers; {kernels}")
        if len({k.role for k in kinds}) < len(kinds):
            parts = "; ".join(f"{k.role} {k.rep} ({k.label or 'its own parameters'}) x{k.count}" for k in kinds)
            notes.append(f"the layers differ: each kind of layer past the bottom two was measured once on top of "
                         f"them and counted as often as it occurs ({parts})")
    else:
        notes.insert(0, f"measured on fake tensors with CPU kernels at the full depth ({real} layers); {kernels}")
    return GenericMeasurement(
        peak_bytes=int(phases[peak_phase][0]),
        peak_phase=peak_phase,
        breakdown=MemoryBreakdown(**{k: int(v) for k, v in phases[peak_phase][1].items()}),
        trainable_params=int(trainable),
        total_params=int(total),
        task=task,
        model_type=built_type,
        steps=steps,
        duration_s=round(time.perf_counter() - start, 3),
        phases={p: {"peak": int(v[0]), **{k: int(x) for k, x in v[1].items()}} for p, v in phases.items()},
        measured_layers=measured,
        extrapolated_to=dict(plan.lengths),
        notes=notes,
    )


class _Full(Exception):
    """No stack can be cut: the full depth is measured."""


# ---- the cache ----------------------------------------------------------------------------
def cache_dir() -> str:
    """``$FITPLAN_HOME/cache/generic``, else ``$XDG_CACHE_HOME/fitplan/generic``, else
    ``~/.cache/fitplan/generic``."""
    home = os.environ.get("FITPLAN_HOME")
    if home:
        return os.path.join(home, "cache", "generic")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fitplan", "generic")


def _setup_fields(setup: Any) -> dict[str, Any]:
    """Every field of the setup that can change memory (all but ``assumed``), effective values."""
    if hasattr(setup, "to_dict"):
        return setup.to_dict()
    if dataclasses.is_dataclass(setup):  # pragma: no cover
        return {k: v for k, v in dataclasses.asdict(setup).items() if k != "assumed"}
    raise TypeError(f"not a TrainingSetup: {setup!r}")  # pragma: no cover


def cache_key(raw: Mapping[str, Any], setup: Any, task: str | None = None, steps: int = 2) -> str:
    """sha256 of the canonical JSON of the config (keys starting with ``_`` left out), every setup
    field, the task, the steps and the versions of torch, transformers and peft."""
    _, fields = _clean(raw)
    model_type = raw["model_type"]
    doc = {"schema": CACHE_SCHEMA, "model_type": model_type, "config": fields, "setup": _setup_fields(setup),
           "task": task, "steps": steps, "versions": _versions()}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _shape_to_json(shape: ModelShape) -> dict[str, Any]:
    from fitplan.frozen import asdict

    return asdict(shape)


def _shape_from_json(d: Mapping[str, Any], name: str) -> ModelShape:
    from fitplan.architecture import LayerKind
    from fitplan.frozen import fields

    values = {k: v for k, v in d.items() if k in fields(ModelShape)}
    values["name"] = name
    values["matrices"] = tuple(Matrix(**m) for m in d["matrices"])
    values["norms"] = tuple(Norm(**n) for n in d["norms"])
    values["final_norm"] = Norm(**d["final_norm"])
    if d.get("embedding_norm") is not None:
        values["embedding_norm"] = Norm(**d["embedding_norm"])
    kinds = []
    for k in d.get("kinds") or ():
        k = dict(k)
        if k.get("matrices") is not None:
            k["matrices"] = tuple(Matrix(**m) for m in k["matrices"])
        if k.get("norms") is not None:
            k["norms"] = tuple(Norm(**n) for n in k["norms"])
        kinds.append(LayerKind(**k))
    values["kinds"] = tuple(kinds)
    for key, v in values.items():
        if isinstance(v, list):        # JSON arrays back to the tuples the fields hold
            values[key] = _tuples(v)
    return ModelShape(**values)


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _read_cache(path: str, name: str) -> tuple[ModelShape, GenericMeasurement] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("schema") != CACHE_SCHEMA:
            return None
        shape = _shape_from_json(doc["shape"], name)
        result = GenericMeasurement.from_dict(doc["result"])
        if not is_generic(shape) or result.peak_bytes < 0:
            return None
        return shape, result
    except Exception:
        return None            # missing, unreadable or corrupt: measured again and rewritten


def _write_cache(path: str, shape: ModelShape, result: GenericMeasurement) -> bool:
    return _write_json(path, {"schema": CACHE_SCHEMA, "shape": _shape_to_json(shape), "result": result.to_dict()})


def cache_path(raw: Mapping[str, Any], setup: Any, task: str | None = None, steps: int = 2) -> str:
    return os.path.join(cache_dir(), cache_key(raw, setup, task, steps) + ".json")


def generic_plan(raw: Mapping[str, Any], name: str, setup: Any, *, task: str | None = None,
                 steps: int = 2) -> tuple[ModelShape, GenericMeasurement, bool]:
    """``generic_shape`` and ``generic_measure`` through the cache: (shape, result, cached).

    A cached file that is missing, unreadable or corrupt is measured again and rewritten; one that
    cannot be written is skipped (the result is returned all the same).
    """
    _require()
    _clean(raw)
    path = cache_path(raw, setup, task, steps)
    hit = _read_cache(path, name)
    if hit is not None:
        return hit[0], hit[1], True
    shape = generic_shape(raw, name, task=task)
    result = generic_measure(raw, shape, setup, task=task, steps=steps)
    _write_cache(path, shape, result)
    return shape, result, False


# ---- the planner's generic path ---------------------------------------------------------------
def untraceable(shape: ModelShape) -> str | None:
    """Why the planner's analytic trace cannot follow ``shape`` (None: it can).

    The trace replays the standard decoder layer (norms, attention by q/k/v/o or a fused qkv, a plain
    or gated MLP, the head and the loss) over the roles a shape's matrices carry. It cannot follow an
    encoder-decoder or an encoder with a classifier, mixing layers of other kinds (state-space or
    recurrent mixers: matrices without a role, parameters that are not norms), layers that differ, or
    experts found only by their tensors' shapes (the router's top-k and the experts' saved tensors are
    the families' own)."""
    if "(causal)" not in shape.note:
        return "it is not a decoder-only causal LM"
    if any(m.role == OTHER for m in shape.matrices):
        names = ", ".join(sorted({m.name for m in shape.matrices if m.role == OTHER}))
        return f"its layers hold matrices of no standard role ({names})"
    odd = sorted(n.name for n in shape.norms if "norm" not in n.name.split(".")[-1].lower()
                 and not n.name.startswith(OUTSIDE))
    if odd:
        return f"its layers hold parameters that are neither matrices nor norms ({', '.join(odd[:4])})"
    if shape.num_experts:
        return "it is a mixture of experts without a family reader (routing and the experts' saved tensors)"
    standard = {ATTN_Q, ATTN_K, ATTN_V, ATTN_O, ATTN_QKV, MLP_GATE, MLP_UP, MLP_DOWN, MLP_GATE_UP}
    roles = {m.role for m in shape.matrices}
    if roles - standard:
        return f"its attention or MLP has another form (roles {', '.join(sorted(roles - standard))})"
    if ATTN_O not in roles or not ({ATTN_Q, ATTN_QKV} & roles) or MLP_DOWN not in roles:
        return "its layers lack a standard attention (q/k/v/o or a fused qkv) or MLP (down)"
    if any(getattr(e, "layers", None) for e in (*shape.matrices, *shape.norms)) or shape.kinds:
        return "its layers differ from one another"
    return None


def _shape_cache_path(raw: Mapping[str, Any]) -> str:
    _, fields = _clean(raw)
    doc = {"schema": CACHE_SCHEMA, "kind": "shape", "model_type": raw.get("model_type"), "config": fields,
           "versions": _versions()}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return os.path.join(cache_dir(), "shape-" + hashlib.sha256(text.encode()).hexdigest() + ".json")


def planner_shape(raw: Mapping[str, Any], name: str) -> ModelShape:
    """The shape the planner plans for a ``model_type`` without a family reader: ``generic_shape``
    (cached per config and versions), where the analytic trace can follow it.

    Raises:
        PlanError: transformers cannot build it, or the trace cannot follow it (``untraceable``); the
            message names ``generic_plan``, which measures such a model on fake tensors.
    """
    path = _shape_cache_path(raw)
    shape, check = None, None
    with contextlib.suppress(Exception):           # missing, unreadable or corrupt: built again
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("schema") == CACHE_SCHEMA:
            shape, check = _shape_from_json(doc["shape"], name), doc.get("check")
    if shape is None or not is_generic(shape):
        _, transformers = _require()
        from fitplan.families import FAMILIES
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = raw.get("model_type")
        if model_type not in CONFIG_MAPPING_NAMES:
            raise PlanError(f"{name}: architecture {model_type!r} is not supported: no family reader of the planner "
                            f"(supported: {', '.join(sorted(FAMILIES))}) and no model type of transformers "
                            f"{transformers.__version__}")
        with _quiet():
            shape = generic_shape(raw, name)
        check = None if untraceable(shape) else _check_trace(raw, shape)
        _write_json(path, {"schema": CACHE_SCHEMA, "shape": _shape_to_json(shape), "check": check})
    why = untraceable(shape)       # a cached shape is checked again: the rules may have changed since
    if why:
        raise PlanError(f"{name}: architecture {raw.get('model_type')!r} has no family reader and transformers "
                        f"builds it, but {why}: the planner's trace cannot follow it. Measure it on fake tensors "
                        "instead: fitplan.validate.generic.generic_plan(config, name, setup)")
    note = "; parameters counted on transformers' meta model, activations traced over the standard roles"
    if check:
        worst = max(abs(v) for v in check.values())
        note += (f"; the trace against a fake-tensor measurement of this architecture's step ({CHECK_TOKENS} tokens, "
                 "CPU kernels): " + ", ".join(f"{k} {v:+.1f}%" for k, v in check.items()))
        if worst > 3.0:
            note += " (more than 3% off: this architecture does something the trace does not know)"
    return replace(shape, note=shape.note + note)


CHECK_TOKENS = 256
CHECK_METHODS = ("full", "lora")


def _check_trace(raw: Mapping[str, Any], shape: ModelShape) -> dict[str, float] | None:
    """The trace's peak beside a fake-tensor measurement of the step, full fine-tuning and LoRA, in percent
    (None where the measurement cannot run)."""
    from fitplan.catalog import ModelEntry
    from fitplan.estimate import estimate
    from fitplan.setup import TrainingSetup

    out = {}
    for method in CHECK_METHODS:
        setup = TrainingSetup(method=method, seq_len=CHECK_TOKENS, batch_size=1, device="cpu", precision="bf16")
        try:
            planned = estimate(ModelEntry(shape.name, "config", None, shape), setup).peak_bytes
            with _quiet():
                measured = generic_measure(raw, shape, setup).peak_bytes
        except Exception:  # noqa: BLE001 - no check, said by its absence
            return None
        out[method] = round(100.0 * (planned - measured) / measured, 2)
    return out


def _write_json(path: str, doc: dict[str, Any]) -> bool:
    data = json.dumps(doc, sort_keys=True, default=str).encode()
    tmp = None
    try:
        import tempfile

        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False


# ---- small configs of any model type (tests and benchmarks/generic_trace.py) ------------------------
# a small size for the usual fields (each only lowered, only where the config has it)
SMALL = {"hidden_size": 64, "d_model": 64, "n_embd": 64, "intermediate_size": 128, "ffn_dim": 128, "d_ff": 128,
         "n_inner": 128, "num_attention_heads": 4, "n_head": 4, "num_key_value_heads": 2, "head_dim": 16,
         "vocab_size": 512, "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
         "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32}
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers",
              "num_decoder_layers", "num_encoder_layers")


def _shrink(d: dict, dims: bool) -> dict:
    """``d`` with two layers (and per-layer lists cut to them); ``dims``: the usual sizes lowered too."""
    out = dict(d)
    for k, v in d.items():
        if isinstance(v, dict) and k.endswith("config"):
            out[k] = _shrink(v, dims)
        elif k in LAYER_KEYS and isinstance(v, int) and not isinstance(v, bool):
            out[k] = min(v, 2)
        elif dims and k in SMALL and isinstance(v, int) and not isinstance(v, bool):
            out[k] = min(v, SMALL[k])
    depth = next((d[k] for k in LAYER_KEYS if isinstance(d.get(k), int)), None)
    for k, v in d.items():
        if depth and isinstance(v, list) and len(v) == depth:
            out[k] = v[:2]          # per-layer lists follow the depth
    return out


def small_config(model_type: str) -> dict[str, Any]:
    """The smallest of (sizes and layers shrunk, layers shrunk, the default) of ``model_type``'s default
    config that transformers builds as a causal LM on the meta device.

    Raises:
        PlanError: it builds from none of them (the last reason).
    """
    torch, transformers = _require()
    try:
        base = transformers.AutoConfig.for_model(model_type).to_dict()
    except Exception as exc:  # noqa: BLE001 - its own default config is refused
        raise PlanError(f"{model_type} builds from no config ({_short(exc)})") from None
    last: BaseException | None = None
    for raw in (_shrink(base, True), _shrink(base, False), base):
        raw = {k: v for k, v in raw.items() if not k.startswith("_")}
        try:
            cfg = transformers.AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "model_type"})
            with _quiet(), torch.device("meta"):
                transformers.AutoModelForCausalLM.from_config(cfg)
            return raw
        except Exception as exc:  # noqa: BLE001 - the next, larger config
            last = exc
    raise PlanError(f"{model_type} builds from no config ({_short(last) if last else 'no config'})")
