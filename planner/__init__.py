"""fitplan: will a fine-tuning step fit, on what hardware, and which method should I use?

The library API (the command line ``plan`` is a thin layer over it)::

    import fitplan
    p = fitplan.plan(model="llama-70b", gpu="a100-80")
    p.recommendation.method, p.recommendation.lora_rank, p.recommendation.reason
    p.methods["lora"].peak_bytes, p.methods["lora"].fits
    p.to_dict()          # what `plan --model llama-70b --gpu a100-80 --json` prints

Every memory figure is an int of bytes. Nothing here imports torch: the planner runs anywhere
Python and click do; the validator (``fitplan.validate``) needs the ``validate`` extra.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: the cold start


__version__ = "0.2.0"

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.planning import plan
    from fitplan.request import Request
    from fitplan.result import Plan

__all__ = ["plan", "Plan", "Request", "__version__"]


def __getattr__(name: str) -> Any:
    # imported on first use, so that `import fitplan` (and `plan --version`) stays instant
    if name == "plan":
        from fitplan.planning import plan

        return plan
    if name == "Request":
        from fitplan.request import Request

        return Request
    if name == "Plan":
        from fitplan.result import Plan

        return Plan
    raise AttributeError(f"module 'fitplan' has no attribute {name!r}")
