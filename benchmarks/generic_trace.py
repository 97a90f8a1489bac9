"""How far the planner's trace is from a fake-tensor measurement for every causal-LM model type of the
installed transformers that has no family reader (the generic path), and why the others are refused.

Each type's default config is shrunk (``fitplan.validate.generic.small_config``), read into a shape on
the meta device, planned by the trace and measured on fake tensors (CPU kernels, fp32, 32 tokens,
batch 2): full fine-tuning, LoRA, LoRA with checkpointing. Prints a line per type and a summary.

    python benchmarks/generic_trace.py [--types starcoder2,mpt] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", help="comma-separated model types (default: every causal-LM type without a reader)")
    ap.add_argument("--json", help="write every result here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from fitplan.catalog import ModelEntry
    from fitplan.errors import PlanError
    from fitplan.estimate import estimate
    from fitplan.families import FAMILIES
    from fitplan.setup import TrainingSetup
    from fitplan.validate.generic import (
        generic_measure,
        generic_shape,
        small_config,
        untraceable,
    )
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    types = args.types.split(",") if args.types else sorted(t for t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                                            if t not in FAMILIES)
    out: dict[str, dict] = {}
    for mt in types:
        start = time.perf_counter()
        try:
            raw = small_config(mt)
            shape = generic_shape(raw, mt)
        except PlanError as exc:
            out[mt] = {"cannot_build": str(exc)}
            print(f"{mt:28s} cannot build: {exc}")
            continue
        why = untraceable(shape)
        if why:
            out[mt] = {"refused": why}
            print(f"{mt:28s} refused: {why}")
            continue
        row = {}
        for method, ckpt in (("full", False), ("lora", False), ("lora", True)):
            setup = TrainingSetup(method=method, seq_len=32, batch_size=2, device="cpu", precision="fp32",
                                  grad_ckpt=ckpt)
            planned = estimate(ModelEntry(mt, "config", None, shape), setup).peak_bytes
            measured = generic_measure(raw, shape, setup).peak_bytes
            row[method + ("+ckpt" if ckpt else "")] = round(100.0 * (planned - measured) / measured, 2)
        out[mt] = {"error_percent": row}
        print(f"{mt:28s} " + "  ".join(f"{k} {v:+.2f}%" for k, v in row.items())
              + f"  ({time.perf_counter() - start:.1f} s)")
    traced = {k: v["error_percent"] for k, v in out.items() if "error_percent" in v}
    within = lambda pct: sum(all(abs(x) <= pct for x in r.values()) for r in traced.values())  # noqa: E731
    print(f"\n{len(out)} types: {len(traced)} traced ({within(1)} within 1%, {within(3)} within 3%), "
          f"{sum('refused' in v for v in out.values())} refused, "
          f"{sum('cannot_build' in v for v in out.values())} cannot be built")
    for why, n in Counter(v["refused"].split(" (")[0] for v in out.values() if "refused" in v).most_common():
        print(f"  refused, {why}: {n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
