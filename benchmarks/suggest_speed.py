"""Speed of --suggest: the whole command cold, and the search in-process.

Run: python benchmarks/suggest_speed.py   (where fitplan is installed, `pip install .`)
Targets: `plan --model llama-3.1-70b --method lora --suggest --tokens 1000000000` under 0.3 s cold;
the search well over a million configurations a second in-process.

A configuration is one GPU model, gradient checkpointing on or off, one sharding strategy and offload
and one GPU count. The search covers every count from 1 to 100,000 for every other combination:
the per-GPU peak never grows with the count, so a bisection of ~17 evaluated peaks answers for all of
them. Both figures are printed: configurations covered per second and per-GPU peaks evaluated per second.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

PLAN = os.path.join(os.path.dirname(sys.executable), "plan")
COMMAND = [PLAN if os.path.exists(PLAN) else sys.executable, *([] if os.path.exists(PLAN) else ["-m", "fitplan"]),
           "--model", "llama-3.1-70b", "--method", "lora", "--suggest", "--tokens", "1000000000"]


def cold(runs: int = 11) -> float:
    subprocess.run(COMMAND, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(COMMAND, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_process(repeats: int = 20) -> tuple[float, int, int]:
    from fitplan import sharding
    from fitplan.planning import plan

    counts = {"peaks": 0, "covered": 0}
    peak, fewest = sharding.Spread.peak, sharding.Spread.fewest

    def counted_peak(self, n):
        counts["peaks"] += 1
        return peak(self, n)

    def counted_fewest(self, budget, lo=1, hi=sharding.MAX_GPUS):
        counts["covered"] += 1 if self.strategy == "none" else hi - max(lo, 2) + 1
        return fewest(self, budget, lo, hi)

    plan(model="llama-3.1-70b", method="lora", suggest=True, tokens=10**9)  # warm the caches
    sharding.Spread.peak, sharding.Spread.fewest = counted_peak, counted_fewest
    try:
        start = time.perf_counter()
        for _ in range(repeats):
            plan(model="llama-3.1-70b", method="lora", suggest=True, tokens=10**9)
        seconds = (time.perf_counter() - start) / repeats
    finally:
        sharding.Spread.peak, sharding.Spread.fewest = peak, fewest
    return seconds, counts["covered"] // repeats, counts["peaks"] // repeats


def main() -> None:
    print(f"cold `plan --model llama-3.1-70b --method lora --suggest --tokens 1e9`: median {cold():.3f} s (target < 0.3 s)")
    seconds, covered, peaks = in_process()
    print(f"in-process: {seconds * 1000:.1f} ms per search; {covered:,} configurations covered "
          f"({covered / seconds:,.0f} a second, target > 1,000,000); {peaks:,} per-GPU peaks evaluated "
          f"({peaks / seconds:,.0f} a second)")


if __name__ == "__main__":
    main()
