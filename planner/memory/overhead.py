"""Framework overhead: what a training process holds on the GPU beyond its tensors.

Documented defaults until a calibration (``plan calibrate``) replaces them for a GPU:

- CUDA context: 512 MiB per process on a CUDA device (driver, kernels' modules, cuBLAS and
  cuDNN handles). PyTorch's allocator never sees it; nvidia-smi does.
- Allocator reserve: the caching allocator keeps freed blocks and splits blocks unevenly; the
  reservation above the allocated peak is taken as 5% of the tensor peak.

On a CPU device the overhead is 0: the validator's CPU accounting counts tensors only.

Known limitations: both figures vary with driver, GPU and workload; calibration exists to fit them.
"""

from __future__ import annotations

from planner.setup import TrainingSetup

CUDA_CONTEXT_BYTES = 512 * 2**20
ALLOCATOR_RESERVE_FRACTION = 0.05


def framework_overhead(tensor_peak_bytes: int, setup: TrainingSetup) -> int:
    """Bytes of CUDA context plus allocator reserve for a process whose tensors peak at the given bytes."""
    if setup.device == "cpu":
        return 0
    return CUDA_CONTEXT_BYTES + int(tensor_peak_bytes * ALLOCATOR_RESERVE_FRACTION)
