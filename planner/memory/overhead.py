"""Framework overhead: what a training process holds on the GPU beyond its tensors.

Three figures a user can check against their own tools, from the tensor peak T:

- allocated (``torch.cuda.max_memory_allocated``) = T + kernel workspaces (cuBLAS, flash
  attention) that go through PyTorch's allocator;
- reserved (``torch.cuda.max_memory_reserved``) = allocated x (1 + reserve_fraction) + reserve_bytes:
  the caching allocator keeps freed blocks and splits blocks unevenly;
- device used (nvidia-smi / NVML) = reserved + the CUDA context (driver, kernels' modules, library
  handles), which PyTorch's allocator never sees.

The quantities come from a calibration (``plan calibrate``, ``fitplan.calibration``) where one
matches the GPU; otherwise from the documented defaults below. On a CPU device there is none:
the validator's CPU accounting counts tensors only.

Known limitations: one linear law for the reserve; NCCL buffers of multi-GPU runs are not included.
"""

from __future__ import annotations

from fitplan.frozen import frozen
from fitplan.setup import TrainingSetup
from fitplan.units import MIB

CUDA_CONTEXT_BYTES = 512 * MIB
ALLOCATOR_RESERVE_FRACTION = 0.05


@frozen
class Overhead:
    """The calibrated quantities (bytes, or a fraction of allocated bytes)."""

    workspace_bytes: int = 0
    reserve_fraction: float = ALLOCATOR_RESERVE_FRACTION
    reserve_bytes: int = 0
    context_bytes: int = CUDA_CONTEXT_BYTES
    band_fraction: float = 0.10   # relative uncertainty of device used (from residuals; default 10%)

    def allocated(self, tensors: int) -> int:
        return tensors + self.workspace_bytes

    def reserved(self, tensors: int) -> int:
        allocated = self.allocated(tensors)
        return allocated + int(allocated * self.reserve_fraction) + self.reserve_bytes

    def device_used(self, tensors: int) -> int:
        return self.reserved(tensors) + self.context_bytes


DEFAULT_OVERHEAD = Overhead()


def framework_overhead(tensor_peak_bytes: int, setup: TrainingSetup, overhead: Overhead = DEFAULT_OVERHEAD) -> int:
    """Bytes the device uses beyond the tensors at their peak (0 on a CPU device)."""
    if setup.device == "cpu":
        return 0
    return overhead.device_used(tensor_peak_bytes) - tensor_peak_bytes
