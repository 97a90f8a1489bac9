"""The closed table of optimizers: what each keeps per trained tensor, what its step allocates, and
how the validator makes it. The planner (``memory.optimizer``) and the validator use this one table.

Per trained tensor of n elements stored in b bytes per element:

- ``adamw`` (torch.optim.AdamW): exp_avg and exp_avg_sq in the parameter's dtype, 2 n b; plus a
  4-byte fp32 ``step`` per tensor, which lives on the CPU unless ``capturable``/``fused``
  (torch/optim/adam.py ``_init_group``), so it counts only on a CPU device.
- ``adamw-fused`` (torch.optim.AdamW(fused=True), transformers' ``adamw_torch_fused`` default on torch
  >= 2.8, torchtune's LoRA configs): the same two states, and the ``step`` on the parameter's device.
- ``adamw-8bit`` / ``paged-adamw-8bit`` (bitsandbytes Optimizer2State, optim_bits=8): tensors of
  at least 4,096 elements keep two uint8 states plus one fp32 absmax per 256 elements per state,
  2 n + 8 ceil(n / 256); smaller tensors keep two fp32 states, 8 n.
- ``paged-adamw`` (bitsandbytes, 32-bit): two fp32 states, 8 n, in paged (unified) memory that
  the driver may evict to the host under pressure.
- ``sgd``: none. ``sgd-momentum``: one momentum buffer in the parameter's dtype, n b.
- ``adafactor`` (transformers.optimization.Adafactor, factored, no first moment): for matrices
  the row and column second-moment statistics in the gradient's dtype; for vectors one full
  statistic.
- ``lion`` (bitsandbytes Lion, 32-bit): one fp32 momentum, 4 n.

Step temporaries: torch AdamW single-tensor (the CPU default, ``_single_tensor_adam``) makes two
temporaries of a tensor's size for ``denom`` and keeps it until the next tensor's is made: the
largest ``size[i-1] + 2 size[i]`` in parameter order; foreach (the CUDA default,
``_multi_tensor_adam``) makes one copy of every second moment at once (``_foreach_sqrt``): all
trained bytes. The fused kernel (``_fused_adamw``) updates in place: none. bitsandbytes' optimizers
update in their own kernels: none. Adafactor makes fp32
copies of a tensor's gradient, parameter and update: 3 x the largest tensor in fp32.
(Measured on fake tensors, torch 2.13: Llama-3.1-8B full bf16 single-tensor 2 x lm_head; foreach
one copy of every parameter.)

Known limitations: the step temporaries of the bitsandbytes optimizers on CUDA are not modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fitplan.errors import unknown_choice
from fitplan.frozen import frozen

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes Optimizer8bit min_8bit_size
BNB_BLOCK = 256           # bitsandbytes blockwise 8-bit state block
# bitsandbytes Optimizer8bit.get_state_buffer (optim/optimizer.py 383-387): a paged optimizer keeps the
# states of tensors of at least 1e5 elements in CUDA unified memory (cudaMallocManaged, functional.py
# 91-99), which PyTorch's caching allocator never sees: torch.cuda.max_memory_allocated and
# max_memory_reserved leave them out; nvidia-smi counts them while they are resident on the GPU
PAGED_MIN_NUMEL = 100_000


def _adam8bit(n: int, b: int, factored: int, cpu: bool) -> int:
    if n < BNB_MIN_8BIT_SIZE:
        return 2 * 4 * n
    return 2 * n + 2 * 4 * -(-n // BNB_BLOCK)


def _adafactor(n: int, b: int, factored: int, cpu: bool) -> int:
    return (factored if factored else n) * b


@frozen
class Optimizer:
    """One optimizer: its state law, its step's temporaries and the class the validator makes.

    ``state(n, b, factored, cpu)``: bytes kept for one tensor of ``n`` elements of ``b`` bytes
    each (``factored``: Adafactor's row + column statistics; ``cpu``: on a CPU
    device). ``temporaries``: ``"adamw"``, ``"adafactor"`` or ``"none"`` (see the module docstring).
    """

    name: str
    factory: str                     # dotted path of the class
    state: Callable[[int, int, int, bool], int]
    temporaries: str = "none"
    takes_foreach: bool = False
    paged: bool = False              # states in CUDA unified memory
    kwargs: tuple[tuple[str, Any], ...] = ()

    def make(self, params: Sequence[Any], foreach: bool, lr: float = 1e-5) -> Any:
        """The optimizer object (imports its library here: the validator only)."""
        import importlib

        module, _, cls = self.factory.rpartition(".")
        kwargs = dict(self.kwargs)
        if self.takes_foreach:
            kwargs["foreach"] = foreach
        return getattr(importlib.import_module(module), cls)(params, lr=lr, **kwargs)


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o
    for o in (
        Optimizer("adamw", "torch.optim.AdamW", lambda n, b, f, cpu: 2 * n * b + (4 if cpu else 0),
                  temporaries="adamw", takes_foreach=True),
        Optimizer("adamw-fused", "torch.optim.AdamW", lambda n, b, f, cpu: 2 * n * b + 4, kwargs=(("fused", True),)),
        Optimizer("adamw-8bit", "bitsandbytes.optim.AdamW8bit", _adam8bit),
        Optimizer("paged-adamw", "bitsandbytes.optim.PagedAdamW", lambda n, b, f, cpu: 8 * n, paged=True),
        Optimizer("paged-adamw-8bit", "bitsandbytes.optim.PagedAdamW8bit", _adam8bit, paged=True),
        Optimizer("sgd", "torch.optim.SGD", lambda n, b, f, cpu: 0, takes_foreach=True),
        Optimizer("sgd-momentum", "torch.optim.SGD", lambda n, b, f, cpu: n * b, takes_foreach=True,
                  kwargs=(("momentum", 0.9),)),
        Optimizer("adafactor", "transformers.optimization.Adafactor", _adafactor, temporaries="adafactor",
                  kwargs=(("relative_step", False), ("scale_parameter", False), ("warmup_init", False))),
        Optimizer("lion", "bitsandbytes.optim.Lion", lambda n, b, f, cpu: 4 * n),
    )
}
NAMES = tuple(OPTIMIZERS)


def optimizer(name: str) -> Optimizer:
    """Look an optimizer up by name; an unknown name is an error listing the valid ones."""
    if name not in OPTIMIZERS:
        raise unknown_choice("optimizer", name, NAMES)
    return OPTIMIZERS[name]
