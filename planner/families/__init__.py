"""config.json -> ModelShape: one small adapter per family, and the reading every config shares.

``shape_from_config`` finds the language model (a multimodal config's ``text_config``, with the text
model type's defaults for the fields it leaves out, as transformers fills them), checks its sizes
against physical limits and the family's own consistency rules, and hands it to the family's reader.
A ``model_type`` without a reader takes the generic path (``fitplan.validate.generic.planner_shape``,
where torch and transformers are installed): the shape read off the model transformers builds on the
meta device, planned by the same trace where it can follow the layers, refused with the reason where
it cannot (the validator's ``generic_plan`` measures those on fake tensors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fitplan.architecture import ModelShape
from fitplan.errors import PlanError
from fitplan.families import classic, dense, hybrid, moe
from fitplan.families.config import Config, max_positions

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

FAMILIES: dict[str, Callable[[Config, str], dict[str, Any]]] = {
    "llama": dense.llama_like,
    "mistral": dense.llama_like,
    "mixtral": dense.llama_like,
    "qwen2": dense.llama_like,
    "qwen3": dense.llama_like,
    "gemma": dense.llama_like,
    "gemma2": dense.llama_like,
    "gemma3_text": dense.gemma3,
    "olmo2": dense.olmo2,
    "granite": dense.llama_like,
    "smollm3": dense.smollm3,
    "phi3": dense.phi3,
    "qwen2_moe": moe.qwen_moe,
    "qwen3_moe": moe.qwen_moe,
    "gpt_oss": moe.gpt_oss,
    "llama4_text": moe.llama4,
    "glm4_moe": moe.glm4_moe,
    "deepseek_v2": moe.deepseek,
    "deepseek_v3": moe.deepseek,
    "qwen3_next": hybrid.qwen_next,
    "qwen3_5_text": hybrid.qwen_next,
    "qwen3_5_moe_text": hybrid.qwen_next,
    "phi": classic.phi,
    "stablelm": classic.stablelm,
    "gpt2": classic.gpt2,
    "gpt_bigcode": classic.gpt2,
    "gpt_neox": classic.gpt_neox,
    "falcon": classic.falcon,
    "bloom": classic.bloom,
    "qwen": classic.qwen_v1,
}

# multimodal wrappers: the language model sits under ``text_config``
WRAPPERS = {"gemma3": "gemma3_text", "llama4": "llama4_text", "mistral3": "mistral", "qwen3_5": "qwen3_5_text",
            "qwen3_5_moe": "qwen3_5_moe_text", "llava": None, "qwen2_vl": "qwen2", "qwen2_5_vl": "qwen2"}
NESTED = ("text_config", "llm_config", "language_config")

# what transformers 5.24 fills in for a text config's missing fields (its configuration classes)
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131_072,
                    "tie_word_embeddings": True, "sliding_window": 4096},
    "mistral": {"vocab_size": 32000, "tie_word_embeddings": False},
}

# Sizes beyond any model that can be trained: a config past them is a typo or a test of the tool.
LIMITS = {"num_layers": 2_000, "hidden_size": 1_000_000, "vocab_size": 20_000_000, "num_heads": 100_000,
          "intermediate_size": 10_000_000, "num_experts": 1_000_000}
MAX_PARAMETERS = 10**14   # 100 trillion


def language_config(raw: Mapping[str, Any], name: str) -> tuple[Mapping[str, Any], str | None]:
    """The language model's config (a multimodal config's ``text_config`` with its defaults), and
    the wrapper's model type where there was one."""
    model_type = raw.get("model_type")
    nested = next((k for k in NESTED if isinstance(raw.get(k), Mapping)), None)
    if nested is None or ("hidden_size" in raw and model_type in FAMILIES):
        return raw, None
    text = dict(raw[nested])
    text_type = text.get("model_type") or WRAPPERS.get(model_type)
    if not isinstance(text_type, str):
        raise PlanError(f"{name}: the language model's fields sit under {nested!r} (a multimodal config) without "
                        "a model_type to read them by; give the language model's own config.json")
    text = {**TEXT_DEFAULTS.get(text_type, {}), **text, "model_type": text_type}
    if "tie_word_embeddings" in raw and "tie_word_embeddings" not in raw[nested]:
        text["tie_word_embeddings"] = raw["tie_word_embeddings"]
    return text, model_type if isinstance(model_type, str) else nested


def _generic(raw: Mapping[str, Any], name: str, model_type: str) -> ModelShape:
    """A model type without a family reader: the generic path, where torch and transformers are installed."""
    from importlib.util import find_spec

    if find_spec("torch") is None or find_spec("transformers") is None:
        raise PlanError(f"{name}: architecture {model_type!r} is not one of the planner's own families "
                        f"(supported: {', '.join(sorted(FAMILIES))}); the generic path plans any architecture "
                        "transformers builds and needs the validate extra: pip install 'fitplan[validate]'")
    from fitplan.validate.generic import planner_shape

    return planner_shape(raw, name)


def shape_from_config(raw: Any, name: str = "config.json") -> ModelShape:
    """Read a Hugging Face ``config.json`` dictionary into a ModelShape.

    Args:
        raw: the parsed JSON.
        name: what to call the model in messages and output.

    Raises:
        PlanError: not a JSON object, an unsupported ``model_type``, a missing, non-positive,
            inconsistent or physically impossible field.
    """
    if not isinstance(raw, Mapping):
        raise PlanError(f"{name}: a config.json must hold a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise PlanError(f"{name}: field 'model_type' must be a string naming the architecture, got {model_type!r}")
    if not model_type:
        raise PlanError(f"{name}: missing required field 'model_type' (supported: {', '.join(sorted(FAMILIES))})")
    text, wrapper = language_config(raw, name)
    model_type = text["model_type"]
    if model_type not in FAMILIES:
        return _generic(raw if not wrapper else text, name, model_type)
    c = Config(text, name)
    fields = FAMILIES[model_type](c, model_type)
    fields.setdefault("max_positions", fields.get("position_embeddings") or max_positions(c))
    if wrapper:
        fields.update(_vision(raw, wrapper, fields["hidden_size"], name))
    base, quant_note = checkpoint_quantization(raw, name)
    if base:
        fields["checkpoint_base"] = base
    if quant_note:
        fields["note"] = "; ".join(n for n in (fields.get("note"), quant_note) if n)
    layers = c.int("num_hidden_layers", "n_layer")
    vocab = c.int("vocab_size", "padded_vocab_size")
    shape = ModelShape(name=name, model_type=model_type, vocab_size=vocab, num_layers=layers, **fields)
    _check(shape, name)
    return shape


# multimodal types whose causal-LM class in transformers 5.24 (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) is the whole
# image-text model: the vision tower is loaded with it
LOADS_VISION = {"gemma3": "Gemma3ForConditionalGeneration"}


def _vision(raw: Mapping[str, Any], wrapper: str, text_hidden: int, name: str) -> dict[str, Any]:
    """What a multimodal checkpoint's vision tower adds: counted where transformers' causal-LM class
    loads it (Gemma 3: SigLIP and its projector, exact), else said."""
    vc = raw.get("vision_config")
    if wrapper not in LOADS_VISION or not isinstance(vc, Mapping):
        return {"note": f"the language model of a {wrapper} checkpoint (text_config): transformers' causal-LM class "
                        "for it is the text model, so the vision tower is not loaded"}
    v = Config(vc, f"{name}: vision_config")
    h, i, L = v.int("hidden_size"), v.int("intermediate_size"), v.int("num_hidden_layers")
    patch, image, channels = v.int("patch_size"), v.int("image_size"), v.int("num_channels", default=3)
    # SiglipVisionEmbeddings (patch conv with bias, learned positions), layers of q/k/v/o with biases, two
    # LayerNorms and fc1/fc2, the post LayerNorm; Gemma3MultiModalProjector (a matrix and an RMSNorm)
    per_layer = 4 * (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)
    params = channels * patch * patch * h + h + (image // patch) ** 2 * h + L * per_layer + 2 * h + h * text_hidden + h
    tensors = 3 + 16 * L + 2 + 2
    return {"vision_parameters": params, "vision_tensors": tensors,
            "note": f"a {wrapper} checkpoint: {LOADS_VISION[wrapper]} (what AutoModelForCausalLM builds) loads its "
                    f"vision tower too ({params:,} parameters: SigLIP and the projector), counted in the weights; "
                    "full fine-tuning trains it, PEFT methods leave it frozen; text-only batches do not run it"}


def checkpoint_quantization(raw: Mapping[str, Any], name: str) -> tuple[str, str]:
    """A pre-quantized checkpoint's storage (its ``quantization_config``) as a ``--base`` name, and a note.

    GPTQ (4 or 8 bits), AWQ, HQQ, bitsandbytes (4-bit NF4/FP4, 8-bit) and FP8 checkpoints load as they
    are stored, and LoRA trains on that base; gpt-oss's MXFP4 experts are dequantized to bf16 for
    training (transformers' ``Mxfp4Config(dequantize=True)``, as the published fine-tuning recipe
    loads it), so the base is the training dtype.
    """
    q = raw.get("quantization_config")
    if q is None:
        nested = next((raw[k] for k in NESTED if isinstance(raw.get(k), Mapping)), None)
        q = nested.get("quantization_config") if nested else None
    if not isinstance(q, Mapping):
        return "", ""
    method = str(q.get("quant_method", "")).lower()
    if method == "gptq":
        bits = q.get("bits", 4)
        if bits in (4, 8):
            return f"gptq-int{bits}", ""
        return "", f"a {bits}-bit GPTQ checkpoint: planned on its dequantized weights (only 4 and 8 bits are modelled)"
    if method == "awq":
        return "awq", ""
    if method == "hqq":
        return "hqq", ""
    if method == "bitsandbytes":
        if q.get("load_in_8bit"):
            return "bnb-int8", ""
        kind = str(q.get("bnb_4bit_quant_type", "nf4")).lower()
        return (kind if kind in ("nf4", "fp4") else "nf4"), ""
    if method == "fp8":
        return "fp8", ("an FP8 checkpoint: its linear weights are planned in FP8 with per-channel scales "
                       "(block scales are smaller); fused MoE experts as bf16, as the planner cannot tell how "
                       "transformers 5 loads them")
    if method == "mxfp4":
        return "", ("an MXFP4 checkpoint: transformers dequantizes it to bf16 for training "
                    "(Mxfp4Config(dequantize=True)), so it is planned in the training dtype")
    return "", f"quantization_config {method or '(no quant_method)'} is not modelled: planned on unquantized weights"


def _check(shape: ModelShape, name: str) -> None:
    for field, limit in LIMITS.items():
        value = getattr(shape, field)
        if value > limit:
            raise PlanError(f"{name}: {field} of {value:,} is beyond the {limit:,} any trainable model has")
    if shape.parameter_count > MAX_PARAMETERS:
        raise PlanError(f"{name}: {shape.parameter_count:,} parameters is beyond the {MAX_PARAMETERS:,} "
                        "(100 trillion) any trainable model has")
    if shape.kinds and sum(k.layers for k in shape.kinds) != shape.num_layers:
        raise PlanError(f"{name}: its layer kinds cover {sum(k.layers for k in shape.kinds)} layers, not "
                        f"{shape.num_layers}")
