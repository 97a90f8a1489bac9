"""Speed of the planner: the cold start of the main job against a bare Python, and configurations per second.

Run: python benchmarks/plan_speed.py   (in an environment where fitplan is installed, `pip install .`)
Targets: the cold `plan --model llama-70b --gpu a100-80` at most 4 times a bare `python -c pass` on the
same machine (the two are timed in turn, pair by pair, and the median ratio is reported), without
importing torch; at least 100,000 configurations per second in-process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

PLAN = os.path.join(os.path.dirname(sys.executable), "plan")
MAIN_JOB = [PLAN if os.path.exists(PLAN) else sys.executable, *([] if os.path.exists(PLAN) else ["-m", "fitplan"]),
            "--model", "llama-70b", "--gpu", "a100-80"]
BARE = [sys.executable, "-c", "pass"]


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cold_start(pairs: int = 21) -> tuple[float, float, float]:
    """Median wall seconds of the main job and of a bare Python, and the median of their pairwise ratios."""
    _wall(MAIN_JOB), _wall(BARE)  # warm the file cache
    job, bare, ratios = [], [], []
    for _ in range(pairs):
        a, b = _wall(MAIN_JOB), _wall(BARE)
        job.append(a)
        bare.append(b)
        ratios.append(a / b)
    return statistics.median(job), statistics.median(bare), statistics.median(ratios)


def torch_imported() -> bool:
    probe = ("import sys, fitplan.__main__ as m; m.main(['--model','llama-70b','--gpu','a100-80']); "
             "print('torch' in sys.modules, 'click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1].split()[0] == "True"


def configurations_per_second(seconds: float = 2.0) -> tuple[float, float]:
    from fitplan.catalog import load_preset
    from fitplan.estimate import estimate, template
    from fitplan.setup import TrainingSetup

    model = load_preset("llama-3.1-8b")
    grid = [(s, b) for s in (256, 512, 1024, 2048, 4096, 8192) for b in (1, 2, 4, 8, 16)]
    templates = [template(model.shape, TrainingSetup(method=m)) for m in ("full", "lora", "qlora", "adapter", "prompt")]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for t in templates:
            for s, b in grid:
                t.peak(s, b)
                n += 1
    fast = n / (time.perf_counter() - start)
    setups = [TrainingSetup(method=m, seq_len=s, batch_size=b) for m in ("full", "lora", "qlora") for s, b in grid]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for st in setups:
            estimate(model, st)
            n += 1
    full = n / (time.perf_counter() - start)
    return fast, full


def main() -> None:
    job, bare, ratio = cold_start()
    print(f"cold `plan --model llama-70b --gpu a100-80`: median {job:.3f} s; bare `python -c pass`: median {bare:.3f} s; "
          f"ratio (median of pairs) {ratio:.2f} (target <= 4)")
    print(f"torch imported by the planner: {torch_imported()}")
    fast, full = configurations_per_second()
    print(f"configurations per second, search path (Template.peak): {fast:,.0f} (target >= 100,000)")
    print(f"configurations per second, full Estimate objects: {full:,.0f}")


if __name__ == "__main__":
    main()
