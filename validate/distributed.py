"""Sharded validation: the same training steps on N processes with PyTorch FSDP2.

``plan validate --nproc 2 --sharding fsdp`` starts N ranks on this machine (gloo on the CPU, NCCL
where each rank has a GPU), shards every decoder layer and then the whole model with
``torch.distributed.fsdp.fully_shard`` (FSDP2), runs the steps with a different batch per rank,
and measures each rank's peak with PyTorch's FSDP memory tracker
(``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker``), which follows FSDP2's
parameter resharding (storages resized rather than freed). The planner's estimate for the same
placement is ``fitplan.sharding.per_gpu(estimate, Placement("fsdp", N))``.

Across nodes the same code runs under ``torchrun --nnodes M --nproc-per-node N`` with the usual
rendezvous variables; this command starts the local ranks itself.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from fitplan.architecture import ModelShape
from fitplan.setup import TrainingSetup


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup,
            steps: int, out_dir: str, use_cuda: bool) -> None:
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    try:
        from fitplan.validate.build import build_real
        from fitplan.validate.env import quiet_libraries
        from fitplan.validate.measure import make_optimizer
        from peft import PeftModel
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
        from torch.distributed.fsdp import fully_shard

        quiet_libraries()
        device = f"cuda:{rank}" if use_cuda else "cpu"
        if use_cuda:
            torch.cuda.set_device(rank)
        torch.manual_seed(0)  # the same initial weights on every rank
        model = build_real(raw, shape, setup, "cuda" if use_cuda else "cpu")
        inner = model.base_model.model if isinstance(model, PeftModel) else model
        layers = None
        for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
            obj = inner
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
                layers = obj
                break
            except AttributeError:
                continue
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)
        optimizer = make_optimizer(setup, [p for p in model.parameters() if p.requires_grad])
        torch.manual_seed(1 + rank)  # a different batch on every rank
        ids = torch.randint(0, shape.vocab_size, (setup.batch_size, setup.seq_len), device=device)
        tracker = FSDPMemTracker(mod=model, optm=optimizer)
        tracker.track_inputs((ids,))
        with tracker:
            for step in range(steps):
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step == 0:
                    tracker.reset_mod_stats()
        snapshot = tracker.get_tracker_snapshot("peak")
        dev = torch.device(device)
        stats = {str(k).split(".")[-1].lower(): int(v) for k, v in snapshot[dev].items()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(stats))
    finally:
        dist.destroy_process_group()


def measure_fsdp(raw: dict[str, Any], shape: ModelShape, setup: TrainingSetup, nproc: int, steps: int = 2,
                 use_cuda: bool = False) -> dict[str, Any]:
    """Each rank's peak (bytes) and its FSDP categories, from ``nproc`` local ranks."""
    import torch.multiprocessing as mp

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(nproc, _free_port(), raw, shape, setup, steps, out_dir, use_cuda), nprocs=nproc)
        ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(nproc)]
    return {
        "mode": "cuda-fsdp2" if use_cuda else "cpu-fsdp2",
        "ranks": [{"rank": r, "peak_bytes": s["total"], "categories": {k: v for k, v in s.items() if k != "total"}}
                  for r, s in enumerate(ranks)],
        "peak_bytes": max(s["total"] for s in ranks),
        "steps": steps,
        "duration_s": round(time.perf_counter() - start, 3),
    }
