"""LoRA on fused MoE experts and routers, as peft 0.21 converts a LoRA config for transformers 5.

transformers 5 fuses each MoE layer's experts into 3-D parameters (``experts.gate_up_proj`` [E, 2 I, h],
``experts.down_proj`` [E, h, I]) and makes the router a custom module holding a weight; neither is an
``nn.Linear`` any more. For the model types whose checkpoints transformers converts from the v4 layout
(peft ``utils/transformers_weight_conversion.py``: ``_MODEL_TO_CONVERSION_PATTERN`` maps them to the
``mixtral`` or ``qwen2_moe`` pattern; ``qwen2_moe`` itself is not in that table, so its experts stay
untargeted), peft rewrites the v4 names in ``target_modules`` into ``target_parameters``
(``_convert_peft_config_moe``): the router name (``gate``) becomes ``gate.weight``, the gate and up
projections (``gate_proj``/``up_proj``, Mixtral's ``w1``/``w3``) become ``experts.gate_up_proj`` at twice
the rank and alpha (both are required: one alone is a ``ValueError``), the down projection
(``down_proj``, ``w2``) ``experts.down_proj``. Those names leave ``target_modules``, so a dense or
shared-expert MLP module of the same name is no longer wrapped. ``all-linear`` resolves to every
``nn.Linear`` leaf plus all of these names.

A targeted parameter gets a ``ParamWrapper`` (``tuners/lora/layer.py`` 2335-2700): ``lora_A`` is
[E x rank, in] and ``lora_B`` [out, E x rank] (fp32), and every forward folds them into an effective
weight through ``torch.nn.utils.parametrize`` (``_LoraFactorsProxy``: ``baddbmm(W, lhs, rhs)`` in the
weight's dtype). That weight needs a gradient, so the experts' matrix products save it (a full copy of
the layer's expert weights, whatever the batch) and the inputs their weight gradient needs, and the
backward makes its full-size gradient before the factors' (measured on fake tensors, transformers 5.24).
"""

from __future__ import annotations

from fitplan.architecture import EXPERT_DOWN, EXPERT_GATE_UP, ROUTER, Matrix, ModelShape
from fitplan.errors import PlanError

# peft 0.21.2 _MOE_TARGET_MODULE_MAPPING and _MOE_FUSED_TARGETS
_PATTERNS = {
    "mixtral": {"gate": ROUTER, "w1": EXPERT_GATE_UP, "w3": EXPERT_GATE_UP, "w2": EXPERT_DOWN},
    "qwen2_moe": {"gate": ROUTER, "gate_proj": EXPERT_GATE_UP, "up_proj": EXPERT_GATE_UP, "down_proj": EXPERT_DOWN},
}
_FUSED = {"mixtral": ("w1", "w3"), "qwen2_moe": ("gate_proj", "up_proj")}
# the model types of the families here that _MODEL_TO_CONVERSION_PATTERN lists
CONVERTED = {"mixtral": "mixtral", "qwen3_moe": "qwen2_moe", "qwen3_next": "qwen2_moe", "deepseek_v2": "qwen2_moe",
             "deepseek_v3": "qwen2_moe", "glm4_moe": "qwen2_moe"}


def leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def convert(shape: ModelShape, modules: tuple[Matrix, ...], names: set[str],
            all_linear: bool) -> tuple[tuple[Matrix, ...], dict[int, int], tuple[str, ...]]:
    """The module targets that stay, the wrapped fused parameters (by id) with their rank
    multipliers, and the v4 names peft converts (which ``target_modules`` must carry).

    ``modules`` are the ``nn.Linear`` matrices the targets chose; ``names`` the targets as given (v4
    names such as ``gate`` or ``w1`` that match no module of the v5 model count too).

    Raises:
        PlanError: the gate or up projection targeted without the other (peft raises ``ValueError``).
    """
    pattern = CONVERTED.get(shape.model_type)
    if pattern is None:
        return modules, {}, ()
    mapping = _PATTERNS[pattern]
    leaves = {leaf(m.name) for m in modules} | {leaf(n) for n in names}
    if all_linear:
        leaves |= set(mapping)
    hit = {old for old in mapping if old in leaves}
    fused = _FUSED[pattern]
    present = [old for old in fused if old in hit]
    if 0 < len(present) < len(fused):
        missing = [old for old in fused if old not in hit]
        raise PlanError(f"LoRA on {shape.model_type}: peft cannot convert {', '.join(present)} without also "
                        f"targeting {', '.join(missing)}, because transformers 5 fuses them into the experts' "
                        "gate_up_proj; target both, or neither")
    kept = tuple(m for m in modules if leaf(m.name) not in mapping)
    roles = {mapping[old] for old in hit}
    wrapped = {}
    for m in shape.matrices:
        if m.role in roles:
            wrapped[id(m)] = len(fused) if m.role == EXPERT_GATE_UP else 1
    return kept, wrapped, tuple(sorted(hit))


def accepts(shape: ModelShape, name: str) -> bool:
    """A target peft converts for this model although no ``nn.Linear`` carries its name."""
    pattern = CONVERTED.get(shape.model_type)
    return pattern is not None and leaf(name) in _PATTERNS[pattern]
