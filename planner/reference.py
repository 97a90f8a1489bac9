"""Published, measured GPU peaks (``data/reference/published_memory.csv``) against the planner.

Each row carries its settings, what was measured (``max_memory_allocated`` or
``max_memory_reserved``) and its source. A row the planner can express becomes a TrainingSetup and
is compared like for like: allocated with the planner's allocated figure, reserved with its
reserved figure. Rows of methods the planner does not have (DoRA, IA3, GPTQ bases, ...) are listed
with the reason.

``data/reference/published_memory_stacks.csv`` (+ ``SOURCES_stacks.md``) holds 83 rows from the
training stacks' own docs, notebooks and issues (torchtune, LitGPT, unsloth, axolotl, torchtitan,
Liger on Trainer, the PEFT docs); ``fitplan.reference_stacks`` writes each out as the options a
careful user would give (``--stack`` and the stacks' options), and ``compare(..., with_stacks=False)``
plans the same rows with only the options the planner had before, to show what the stacks changed.

Two sources, two software stacks:
- PEFT's MetaMathQA method comparison (NVIDIA L40S; torch 2.13, transformers 5.13, the stack the
  planner models): bf16 weights with fp32 adapters, AdamW, SDPA, batch 4 padded to the longest
  sample (at most 768 tokens: the peak is the longest batch), no checkpointing; reserved memory.
- foundation-model-stack's fms-acceleration A100-80GB table (torch 2.4, transformers 4.48):
  sequences of 4096 packed, FlashAttention 2, checkpointing, AdamW; allocated memory on rank 0.
"""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

from fitplan.calibration import Observation, overhead_for
from fitplan.catalog import ModelEntry, data_dir, resolve_gpu, resolve_model
from fitplan.errors import PlanError
from fitplan.estimate import estimate
from fitplan.frozen import frozen, replace
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup
from fitplan.sharding import Placement, per_gpu
from fitplan.units import GIB

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any
MODELS = {
    "Llama-3.2-3B": "llama-3.2-3b",
    "bigcode/gpt_bigcode-santacoder": "santacoder",
    "mistralai/Mistral-7B-v0.1": "mistral-7b-v0.1",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b",
    "NousResearch/Llama-2-70b-hf": "llama-2-70b",
    # TheBloke's GPTQ checkpoints of the same architectures (int4, group 128)
    "TheBloke/Mistral-7B-v0.1-GPTQ": "mistral-7b-v0.1",
    "TheBloke/Mixtral-8x7B-Instruct-v0.1-GPTQ": "mixtral-8x7b",
    "TheBloke/Llama-2-70B-GPTQ": "llama-2-70b",
}
GPUS = {"NVIDIA L40S 48GB": "l40s", "A100 80GB": "a100-80"}
EXPRESSIBLE = {"full": "full", "lora": "lora", "qlora": "qlora", "prefix_tuning": "prefix",
               "prompt_tuning": "prompt", "p_tuning": "ptuning", "dora": "dora", "adalora": "adalora",
               "ia3": "ia3", "llama_adapter (adaption_prompt)": "llama-adapter", "loha": "loha", "lokr": "lokr",
               "vera": "vera", "oft": "oft", "boft": "boft", "ln_tuning": "ln-tuning",
               "trainable_tokens": "trainable-tokens", "fourierft": "fourierft", "miss": "miss",
               "gptq-lora": "lora"}


def _note(row: dict[str, str], key: str) -> int | None:
    m = re.search(rf"{key}=(\d+)", row["notes"])
    return int(m.group(1)) if m else None


def _rank(row: dict[str, str]) -> dict[str, int]:
    return {"lora_rank": int(row["lora_r"])} if row["lora_r"].strip() else {}


# a MetaMathQA row's method settings, from its columns and notes (the experiment's peft config): the rank
# column is AdaLoRA's target rank (its initial rank, 64, is the experiment's), VeRA's rank, OFT's number
# of blocks (a block of in / r: Llama-3.2-3B's q and v take 3072) and MiSS's rank
_PEFT_OPTIONS: dict[str, Any] = {
    "dora": lambda row, t: {"lora_targets": t, **_rank(row)},
    "loha": lambda row, t: {"lora_targets": t, **_rank(row)},
    "lokr": lambda row, t: {"lora_targets": t, **_rank(row)},
    "miss": lambda row, t: {"lora_targets": t, **_rank(row)},
    "fourierft": lambda row, t: {"lora_targets": t},
    "adalora": lambda row, t: {"lora_targets": t, "target_r": int(row["lora_r"]), "init_r": 64},
    "ia3": lambda row, t: {"ia3_targets": t},
    "llama-adapter": lambda row, t: {"adapter_len": _note(row, "adapter_len"), "adapter_layers": _note(row, "adapter_layers")},
    "vera": lambda row, t: {"lora_targets": t, "vera_rank": int(row["lora_r"])},
    "oft": lambda row, t: {"lora_targets": t, "oft_block_size": 3072 // int(row["lora_r"])},
    "boft": lambda row, t: {"lora_targets": t, "boft_block_size": _note(row, "boft_block_size")},
    "ln-tuning": lambda row, t: {},
    "trainable-tokens": lambda row, t: {"num_token_indices": 2},
}


def _published_trainable(row: dict[str, str]) -> int | None:
    m = re.search(r"trainable=(\d+)", row["notes"])
    return int(m.group(1)) if m else None


@frozen
class Comparison:
    id: str
    source: str
    model: str
    method: str
    settings: str
    kind: str                 # "allocated" or "reserved"
    measured_bytes: int
    planner_bytes: int
    gpus: int
    note: str = ""
    stack: str = ""           # the training stack the row ran on (stacks rows)

    @property
    def error_percent(self) -> float:
        return 100.0 * (self.planner_bytes - self.measured_bytes) / self.measured_bytes


def reference_path() -> Path:
    return data_dir() / "reference" / "published_memory.csv"


def stacks_path() -> Path:
    """The stacks' published rows (``published_memory_stacks.csv``)."""
    return data_dir() / "reference" / "published_memory_stacks.csv"


def _stack_row(row: dict[str, str], with_stacks: bool) -> Comparison | str:
    """A stacks row planned as ``fitplan.reference_stacks`` writes it, like for like, or why not."""
    from fitplan import reference_stacks
    from fitplan.memory.overhead import DEFAULT_OVERHEAD
    from fitplan.planning import plan

    got = reference_stacks.options_for(row["id"], with_stacks)
    if isinstance(got, str):
        return got
    stack, options, gpu_name, kind = got
    result = plan(**options).method
    if result.estimate is None:
        return f"the planner refuses its settings ({result.error})"
    est = result.estimate
    overhead = overhead_for(resolve_gpu(gpu_name))[0] if gpu_name else DEFAULT_OVERHEAD
    result = replace(result, estimate=replace(est, overhead=overhead))
    tools = result.tools_per_gpu
    planner = tools["device_used_bytes" if kind == "device_used" else f"{kind}_bytes"]
    words = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in options.items() if k != "model")
    return Comparison(row["id"], row["id"].split("-")[0], est.model.name, est.method.name, words, kind,
                      measured_bytes(row), planner, int(options.get("gpus", 1)), stack=stack)


# the columns the comparison reads (the published CSVs' own header has these and more)
COLUMNS = ("id", "model", "method", "lora_r", "lora_targets", "quant", "micro_batch", "n_gpus", "gpu",
           "measured_gb", "measured_kind", "notes")


def rows(path: str | Path | None = None) -> list[dict[str, str]]:
    """The rows of a published-measurements CSV (bounded, UTF-8, with the columns the comparison reads)."""
    import io

    from fitplan.inputs import MAX_TABLE_BYTES, read_text

    where = str(path or reference_path())
    text = read_text(where, "reference file", MAX_TABLE_BYTES)
    if not text.strip():
        raise PlanError(f"reference file {where}: the file is empty")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise PlanError(f"reference file {where}: missing column(s) {', '.join(missing)} "
                            f"(a reference CSV has: {', '.join(COLUMNS)})")
        out = []
        for n, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise PlanError(f"reference file {where}: line {n}: {len(header)} columns expected")
            out.append(row)
    except csv.Error as exc:
        raise PlanError(f"reference file {where}: not valid CSV ({exc})") from None
    return out


def measured_bytes(row: dict[str, str]) -> int:
    """The measured peak in bytes, from the exact figure in the notes where there is one."""
    m = re.search(r"orig=(\d+) bytes", row["notes"])
    if m:
        return int(m.group(1))
    m = re.search(r"orig peak alloc ([\d.]+) GiB", row["notes"])
    if m:
        return int(float(m.group(1)) * GIB)
    return int(float(row["measured_gb"]) * 1e9)


def nvidia_smi_bytes(row: dict[str, str]) -> int | None:
    m = re.search(r"nvidia-smi peak (\d+) MiB", row["notes"])
    return int(m.group(1)) * 2**20 if m else None


def setup_for(row: dict[str, str]) -> tuple[ModelEntry, TrainingSetup, int, str] | str:
    """(model, setup, GPUs, settings in words) for a row the planner expresses, else why not."""
    name = EXPRESSIBLE.get(row["method"])
    if name is None:
        return f"method {row['method']!r} is not one the planner models"
    method = REGISTRY[name]
    model = resolve_model(MODELS[row["model"]])
    notes = row["notes"]
    if row["id"].startswith("PEFT"):
        common = dict(seq_len=768, batch_size=4, precision="bf16", optimizer="adamw", attention="sdpa",
                      device="cuda", grad_ckpt=False, method=method)
        words = "bf16, AdamW, SDPA, 768 x 4, no checkpointing"
        targets = tuple(t.strip() for t in row["lora_targets"].split("(")[0].split(",") if t.strip())
        builder = _PEFT_OPTIONS.get(name)
        if builder is None and "lora_targets" in method.options:
            setup = TrainingSetup(lora_rank=int(row["lora_r"]), lora_targets=targets, **common)
            words = f"r{row['lora_r']} {','.join(targets)}; " + words
        elif builder is not None:
            options = builder(row, targets)
            setup = TrainingSetup(**options, **common)
            words = ", ".join(f"{k.replace('_', '-')} {','.join(v) if isinstance(v, tuple) else v}"
                              for k, v in options.items()) + ("; " if options else "") + words
            published = _published_trainable(row)
            planned = estimate(model, setup).trainable_params
            if published is not None and abs(planned - published) > published // 100_000:   # 0.001%
                return (f"its settings do not reproduce its {published:,} trainable parameters (planned "
                        f"{planned:,}): a method setting it leaves out")
        elif "num_virtual_tokens" in method.options:
            vt = int(re.search(r"num_virtual_tokens=(\d+)", notes).group(1))
            setup = TrainingSetup(num_virtual_tokens=vt, **common)
            words = f"{vt} virtual tokens; " + words
        else:
            setup = TrainingSetup(**common)
        return model, setup, 1, words
    gpus = int(row["n_gpus"])
    mb = int(row["micro_batch"])
    # 4096-token packed sequences (packing restarts positions per example, so santacoder's 2048
    # learned positions do not cap it)
    seq = 4096
    # transformers 4.48: per-expert Linear MoE and the loss's extra fp32 copy of the shifted logits
    common = dict(seq_len=seq, batch_size=mb, precision="bf16", optimizer="adamw", attention="flash",
                  device="cuda", grad_ckpt=True, method=method, transformers_major=4)
    words = f"{seq} x {mb}, FA2, checkpointing, {'FSDP x2' if gpus == 2 else '1 GPU'}, transformers 4"
    if "lora_targets" in method.options:
        targets = ("c_attn",) if model.shape.model_type == "gpt_bigcode" else ("q_proj", "k_proj", "v_proj", "o_proj")
        extra = {}
        if method.quantized_base:
            # fms-acceleration's plugin loads the 4-bit model itself and FSDP needs one dtype: neither
            # runs peft's fp32 upcast of the parameters that are not 4-bit
            plugin = "accelerated-peft-bnb" in notes
            extra = {"double_quant": "double quant" in row["quant"], "kbit_upcast": not (plugin or gpus > 1)}
        if row["method"] == "gptq-lora":
            extra = {"base": "gptq-int4"}      # LoRA on the GPTQ checkpoint's int4 linears (auto-gptq's kernels)
        setup = TrainingSetup(lora_rank=int(row["lora_r"]), lora_targets=targets, lora_dropout=0.1, **common, **extra)
        fc = re.search(r"framework_config=([\w-]+)", notes)
        words = f"r{row['lora_r']} q,k,v,o; " + words + (f"; {fc.group(1)}" if fc and method.quantized_base else "")
    else:
        setup = TrainingSetup(**common)
    return model, setup, gpus, words


def compare(path: str | Path | None = None, with_stacks: bool = True) -> tuple[list[Comparison], list[tuple[str, str]]]:
    """Every expressible row beside the planner's like-for-like figure; and the skipped rows.

    ``with_stacks=False``: the stacks' rows planned with the options the planner had before them."""
    from fitplan import reference_stacks

    out, skipped = [], []
    for row in rows(path):
        if row["id"] in reference_stacks.ROWS:
            try:
                got = _stack_row(row, with_stacks)
            except (PlanError, ValueError) as exc:
                got = f"its settings cannot be planned ({exc})"
            if isinstance(got, str):
                skipped.append((row["id"], got))
            else:
                out.append(got)
            continue
        if row["method"] not in EXPRESSIBLE:
            skipped.append((row["id"], f"method {row['method']!r} is not one the planner models"))
            continue
        if row["model"] not in MODELS:
            skipped.append((row["id"], f"model {row['model']!r} maps to no preset here"))
            continue
        if row["gpu"] not in GPUS:
            skipped.append((row["id"], f"GPU {row['gpu']!r} maps to no catalog GPU here"))
            continue
        try:
            got = setup_for(row)
            measured = measured_bytes(row)
        except (PlanError, ValueError, AttributeError) as exc:
            skipped.append((row["id"], f"its settings cannot be read ({exc})"))
            continue
        if isinstance(got, str):
            skipped.append((row["id"], got))
            continue
        model, setup, gpus, words = got
        gpu = resolve_gpu(GPUS[row["gpu"]])
        overhead, _ = overhead_for(gpu)
        est = estimate(model, setup, overhead)
        tensors = est.peak.tensors if gpus == 1 else per_gpu(est, Placement("fsdp", gpus)).per_gpu.tensors
        kind = "reserved" if "max_memory_reserved" in row["measured_kind"] else "allocated"
        planner = overhead.reserved(tensors) if kind == "reserved" else overhead.allocated(tensors)
        if measured <= 0:
            skipped.append((row["id"], f"measured_gb {row['measured_gb']!r} is not a positive figure"))
            continue
        out.append(Comparison(row["id"], row["id"].split("-")[0], model.name, setup.method.name, words, kind,
                              measured, planner, gpus))
    return out, skipped


def summary(comparisons: list[Comparison], by_stack: bool = True) -> dict[str, Any]:
    errors = [abs(c.error_percent) for c in comparisons]
    worst = max(comparisons, key=lambda c: abs(c.error_percent)) if comparisons else None
    out = {
        "rows": len(comparisons),
        "median_abs_error_percent": round(statistics.median(errors), 2) if errors else None,
        "worst": None if worst is None else {"id": worst.id, "error_percent": round(worst.error_percent, 2)},
    }
    stacks = sorted({c.stack for c in comparisons if c.stack})
    if stacks and by_stack:
        out["by_stack"] = {st: summary([c for c in comparisons if c.stack == st], False) for st in stacks}
    return out


def observations(path: str | Path | None = None, single_gpu_only: bool = True) -> dict[str, list[Observation]]:
    """Published rows with both an allocated and an nvidia-smi figure, by GPU, for calibration."""
    out: dict[str, list[Observation]] = {}
    for row in rows(path):
        used = nvidia_smi_bytes(row)
        if used is None or "max_memory_allocated" not in row["measured_kind"]:
            continue
        if single_gpu_only and row["n_gpus"] != "1":
            continue
        gpu = GPUS.get(row["gpu"])
        out.setdefault(gpu, []).append(Observation(id=row["id"], allocated=measured_bytes(row), used=used))
    return out


@frozen
class Report:
    """Every expressible row beside the planner, and the rows it cannot express with their reasons."""

    comparisons: tuple[Comparison, ...]
    skipped: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": summary(list(self.comparisons)),
            "rows": [{"id": c.id, "stack": c.stack or None, "model": c.model, "method": c.method,
                      "settings": c.settings, "kind": c.kind,
                      "gpus": c.gpus, "measured_bytes": c.measured_bytes, "planner_bytes": c.planner_bytes,
                      "error_percent": round(c.error_percent, 3)} for c in self.comparisons],
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
        }

    def text(self) -> str:
        from fitplan.render import tabulate
        from fitplan.units import gib

        s = summary(list(self.comparisons))
        table = [[c.id, c.model, c.method, c.kind, gib(c.measured_bytes), gib(c.planner_bytes),
                  f"{c.error_percent:+.1f}%", c.settings] for c in self.comparisons]
        lines = ["Published peaks against the planner, GiB (2**30 bytes), allocated with allocated, reserved with reserved:",
                 tabulate(table, ["row", "model", "method", "measured", "measured", "planner", "error", "settings"])]
        if s["worst"] is not None:
            lines.append(f"{s['rows']} rows; median |error| {s['median_abs_error_percent']}%; "
                         f"worst {s['worst']['id']} {s['worst']['error_percent']:+.1f}%")
        for st, sub in s.get("by_stack", {}).items():
            lines.append(f"  stack {st}: {sub['rows']} rows; median |error| {sub['median_abs_error_percent']}%; "
                         f"worst {sub['worst']['id']} {sub['worst']['error_percent']:+.1f}%")
        lines.append(f"{len(self.skipped)} rows not expressible: " + ", ".join(i for i, _ in self.skipped))
        return "\n".join(lines)


def report(path: str | Path | None = None, with_stacks: bool = True) -> Report:
    """Compare every row of a published-measurements CSV (default: the shipped one) with the planner."""
    comparisons, skipped = compare(path, with_stacks)
    return Report(tuple(comparisons), tuple(skipped))
