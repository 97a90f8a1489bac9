"""What the validator records about where it ran, and keeping library chatter out of its output."""

from __future__ import annotations

import os
import platform
from typing import Any


def quiet_libraries() -> None:
    """Progress bars and advisory warnings of transformers and friends off: the output is ours."""
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", None)
        except Exception:  # noqa: BLE001 - a missing or broken library is recorded as absent
            out[name] = None
    from fitplan import __version__

    out["fitplan"] = __version__
    return out


def device_info(mode: str) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": mode, "machine": platform.machine(), "python": platform.python_version()}
    if mode == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, total_memory_bytes=int(props.total_memory),
            cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}",
        )
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # noqa: BLE001
            info["driver"] = None
    else:
        info["cpu_count"] = os.cpu_count()
    return info
