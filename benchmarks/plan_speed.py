"""Speed of the planner: cold wall time of the main job, and configurations evaluated per second.

Run: python benchmarks/plan_speed.py
Targets: the cold `plan --model llama-70b --gpu a100-80` under 0.15 s without importing torch;
at least 100,000 configurations per second in-process; `--suggest` across the catalog under 1 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

COMMAND = [sys.executable, "-m", "fitplan.cli", "--model", "llama-70b", "--gpu", "a100-80"]


def cold_wall_times(runs: int = 7) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(COMMAND, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def torch_imported() -> bool:
    probe = "import sys, fitplan.cli as c; c.main(['--model','llama-70b','--gpu','a100-80']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] == "True"


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


def suggest_seconds(runs: int = 5) -> float:
    from fitplan.calibration import overhead_for
    from fitplan.catalog import gpu_catalog, load_preset
    from fitplan.setup import TrainingSetup
    from fitplan.suggest import suggest

    model = load_preset("llama-3.1-70b")
    overheads = {g.name: overhead_for(g)[0] for g in gpu_catalog().values()}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        suggest(model, TrainingSetup(method="lora"), overheads, tokens=10**9)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    times = cold_wall_times()
    print(f"cold `plan --model llama-70b --gpu a100-80`: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s over {len(times)} runs (target < 0.15 s)")
    print(f"torch imported by the planner: {torch_imported()}")
    fast, full = configurations_per_second()
    print(f"configurations per second, search path (Template.peak): {fast:,.0f} (target >= 100,000)")
    print(f"configurations per second, full Estimate objects: {full:,.0f}")
    print(f"--suggest for Llama-3.1-70B LoRA across the catalog, in-process: {suggest_seconds():.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
