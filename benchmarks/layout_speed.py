"""Speed of the model-parallel layout search: TP x PP x CP x EP x DP over whole nodes.

Run: python benchmarks/layout_speed.py   (where fitplan is installed, `pip install .`)
Target: the whole search under a second — `plan --model llama-3.1-405b --method full --suggest`
(every catalog GPU, data parallelism and layouts) cold, and the one-method view's layout search
(`--gpu h100-80 --method full`, up to 128 nodes) in-process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

PLAN = os.path.join(os.path.dirname(sys.executable), "plan")
BASE = [PLAN] if os.path.exists(PLAN) else [sys.executable, "-m", "fitplan"]
SUGGEST = [*BASE, "--model", "llama-3.1-405b", "--method", "full", "--suggest"]
ONE = [*BASE, "--model", "qwen3-235b-a22b", "--gpu", "h100-80", "--method", "lora"]


def cold(command: list[str], runs: int = 5) -> float:
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_process(repeats: int = 20) -> tuple[float, int]:
    from fitplan.catalog import load_preset
    from fitplan.estimate import estimate
    from fitplan.parallel import layouts, search
    from fitplan.setup import TrainingSetup

    est = estimate(load_preset("llama-3.1-405b"), TrainingSetup(method="full", grad_ckpt=True))
    budget = 79 * 2**30
    start = time.perf_counter()
    for _ in range(repeats):
        for nodes in (1, 2, 4, 8, 16, 32, 64, 128):
            search(est, budget, nodes * 8)
    seconds = (time.perf_counter() - start) / repeats
    return seconds, sum(len(layouts(est, nodes * 8)) for nodes in (1, 2, 4, 8, 16, 32, 64, 128))


def main() -> None:
    seconds, n = in_process()
    print(f"layout search, llama-3.1-405b full on 8..1024 H100s: {n} layouts in {1000 * seconds:.1f} ms")
    print(f"cold: {' '.join(SUGGEST[len(BASE):])}: {cold(SUGGEST):.2f} s")
    print(f"cold: {' '.join(ONE[len(BASE):])}: {cold(ONE):.2f} s")


if __name__ == "__main__":
    main()
