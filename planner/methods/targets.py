"""What the peft methods that wrap ``nn.Linear`` modules share: their targets, as peft names them.

``resolve`` turns the command line's targets (module names, roles shared across families, or
``all-linear``) into the decoder's matrices (``fitplan.methods.lora.target_matrices``);
``family_default`` is a method's default target table from peft's ``utils/constants.py``, by
role, for the methods whose defaults differ from LoRA's; ``peft_names`` writes matrices the way
peft's ``target_modules`` matches them (a name two matrices share, gpt2's ``c_proj``, is
qualified by its block: ``mlp.c_proj``); ``wrapped`` is the per-trace memo of the wrapped
matrices that every ``trace_linear`` hook starts from.
"""

from __future__ import annotations

from fitplan.architecture import Matrix, ModelShape
from fitplan.errors import PlanError
from fitplan.methods.base import Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable
    from typing import Any, ClassVar

    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup

_MLP_ROLES = ("gate", "up", "gate_up", "down")
# families whose decoder linears are transformers' Conv1D (weight in x out), not nn.Linear
CONV1D_MODEL_TYPES = ("gpt2",)


def resolve(shape: ModelShape, targets: tuple[str, ...]) -> tuple[Matrix, ...]:
    """The decoder matrices named by ``targets`` (names, roles or ``all-linear``), in layer order."""
    from fitplan.methods.lora import HEAD, target_matrices

    if HEAD in targets:
        raise PlanError(f"{HEAD} is a target of LoRA (and DoRA, QLoRA) only; these methods wrap decoder linears")
    return target_matrices(shape, targets)


def family_default(shape: ModelShape, table: dict[str, tuple[str, ...]], what: str, option: str) -> tuple[Matrix, ...]:
    """The matrices of a per-model-type default table (roles or names), as peft's mapping has them.

    Raises:
        PlanError: a model type the table has no entry for (peft raises ``ValueError`` and asks
            for ``target_modules`` there), naming the option that sets them.
    """
    roles = table.get(shape.model_type)
    if roles is None:
        raise PlanError(f"peft has no default {what} targets for {shape.model_type} "
                        f"(known: {', '.join(sorted(table))}); give {option}")
    return resolve(shape, roles)


def peft_names(shape: ModelShape, matrices: tuple[Matrix, ...]) -> list[str]:
    """``target_modules`` for peft: each matrix's module name, qualified where two share one."""
    names = [m.name for m in shape.matrices]
    out = set()
    for m in matrices:
        if names.count(m.name) > 1:
            out.add(("mlp." if m.role in _MLP_ROLES else "attn.") + m.name)
        else:
            out.add(m.name)
    return sorted(out)


def wrapped(trace: Trace, owner: object, make: Callable[[], tuple[Matrix, ...]]) -> set[int]:
    """The ids of the matrices ``owner`` wraps, computed once per trace."""
    return trace.memo(owner, lambda: {id(m) for m in make()})


def mlp_matrices(matrices: tuple[Matrix, ...]) -> tuple[Matrix, ...]:
    return tuple(m for m in matrices if m.role in _MLP_ROLES)


class LinearMethod(Method):
    """A method that wraps each targeted ``nn.Linear`` of the decoder layers with its own tensors.

    Subclasses give ``module_tensors`` (one module's added tensors: (label, elements, dtype)),
    ``trace_module`` (what one wrapped module saves) and ``peft_config``; targets are
    ``--lora-targets`` unless ``targets`` says otherwise.
    """

    options: ClassVar[frozenset[str]] = frozenset({"lora_targets"})
    conv1d: ClassVar[bool] = True   # peft wraps transformers' Conv1D too (False: nn.Linear only)

    def targets(self, shape: ModelShape, setup: TrainingSetup) -> tuple[Matrix, ...]:
        return self.checked(shape, resolve(shape, setup.lora_targets))

    def checked(self, shape: ModelShape, matrices: tuple[Matrix, ...]) -> tuple[Matrix, ...]:
        """``matrices``, or the refusal peft makes where the method cannot wrap them.

        Raises:
            PlanError: a method without Conv1D support on a family built of Conv1D modules (peft
                raises ``TypeError``: "Target module ... Conv1D ... is not supported").
        """
        if not self.conv1d and shape.model_type in CONV1D_MODEL_TYPES:
            raise PlanError(f"{self.title} wraps nn.Linear only; {shape.model_type}'s "
                            f"{', '.join(sorted({m.name for m in matrices}))} are transformers Conv1D modules, "
                            "which peft refuses")
        return matrices

    def module_tensors(self, m: Matrix, setup: TrainingSetup) -> list[tuple[str, int, str]]:
        return []

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        return [TensorGroup(f"{m.name}.{label}", shape.held_by(m), numel, storage, True, True, layered=True)
                for m in self.targets(shape, setup) for label, numel, storage in self.module_tensors(m, setup)]

    def trace_linear(self, trace: Trace, x: TraceTensor, m: Matrix) -> bool:
        if id(m) not in wrapped(trace, self, lambda: self.targets(trace.shape, trace.setup)):
            return False
        self.trace_module(trace, x, m)
        return True

    def trace_module(self, trace: Trace, x: TraceTensor, m: Matrix) -> None:
        """Save what the wrapped module ``m`` adds, its input ``x``."""

    def mlp_first_gradients(self, shape: ModelShape, setup: TrainingSetup, layer_gradient_bytes: int) -> int:
        # the MLP modules' (fp32) adapter gradients are made before the MLP's backward peaks
        return sum(4 * numel for m in mlp_matrices(self.targets(shape, setup))
                   for _, numel, storage in self.module_tensors(m, setup))

    def peft_targets(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        return peft_names(shape, self.targets(shape, setup))
