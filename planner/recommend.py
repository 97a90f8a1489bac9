"""Recommend a method, a rank and the whole configuration, from the task and the memory fit.

Two questions, answered in order. **Which method and rank would a practitioner pick for this task?**
The rules below, each with its reason and source, give an ordered list of candidates. **What does it
take to run the first one that fits?** The levers a practitioner pulls, cheapest in quality and speed
first, each only where the user did not fix the option: gradient checkpointing, then 8-bit optimizer
states, then micro batch 1 with gradient accumulation (the effective batch kept), then a 4-bit base
(LoRA becomes QLoRA), then more GPUs (FSDP full shard). A configuration fits when its peak is at most
90% of the GPU's usable memory.

Rules (the inputs are ``task``, ``examples``, ``dataset_tokens`` and ``adapters``):

- fewer than 100 examples: no fine-tuning; prompt the model with the examples in context;
- several tasks served from one base (``adapters`` > 1): one LoRA adapter per task, hot-swapped on
  the shared base; no full fine-tuning (one full copy per task);
- a complex task (a distant domain: code, mathematics, a new language; continued pretraining) with
  more than 10,000 examples or 10M tokens, or a complex task with no size given: full fine-tuning
  where it fits, else LoRA at a high rank on every linear layer (Biderman et al. 2024);
- otherwise LoRA on every linear layer (QLoRA paper; "LoRA Without Regret"), full fine-tuning after
  it; for a simple task on a model above 10B parameters, prompt tuning comes close to full fine-tuning
  (Lester et al. 2021) and is listed as the lightest option after LoRA.

The rank follows the evidence, not the memory: 8 for a simple task (the LoRA paper's low ranks on
GPT-3), 16 for a moderate one, 64 for a complex one (QLoRA's r=64 on every linear layer), raised with
the size of the data (``LoRA Without Regret``: a rank too small for the data is what makes LoRA fall
behind full fine-tuning; Biderman et al.: r=256 for code and math at billions of tokens).
"""

from __future__ import annotations

from fitplan.catalog import GPU, ModelEntry
from fitplan.errors import PlanError
from fitplan.estimate import Estimate, estimate
from fitplan.frozen import field, frozen
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead
from fitplan.setup import TrainingSetup
from fitplan.units import gib

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

HEADROOM = 0.90
TASKS = ("simple", "moderate", "complex")
TASK_RANKS = {"simple": 8, "moderate": 16, "complex": 64}
MIN_EXAMPLES = 100
LARGE_EXAMPLES = 10_000
LARGE_TOKENS = 10_000_000
PROMPT_TUNING_PARAMETERS = 10_000_000_000

SOURCES: dict[str, dict[str, str]] = {
    "lora": {"citation": "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (ranks 1-8 on q,v "
                         "suffice for GPT-3 175B on their tasks)", "url": "https://arxiv.org/abs/2106.09685"},
    "qlora": {"citation": "Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs (r=64 on every "
                          "linear layer; all layers matter more than the rank)", "url": "https://arxiv.org/abs/2305.14314"},
    "learns-less": {"citation": "Biderman et al. 2024, LoRA Learns Less and Forgets Less (full fine-tuning learns "
                                "code and mathematics better at billions of tokens; r=256 narrows the gap)",
                    "url": "https://arxiv.org/abs/2405.09673"},
    "without-regret": {"citation": "Schulman et al. 2025, LoRA Without Regret, Thinking Machines Lab (LoRA on every "
                                   "layer matches full fine-tuning until the data outgrows the rank's capacity)",
                       "url": "https://thinkingmachines.ai/blog/lora/"},
    "prompt-tuning": {"citation": "Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning "
                                  "(prompt tuning approaches full fine-tuning above about 10B parameters)",
                      "url": "https://arxiv.org/abs/2104.08691"},
    "few-examples": {"citation": "With under about 100 examples, providers' fine-tuning guides advise prompting "
                                 "first (OpenAI: 'at least 10 examples ... clear improvements from 50 to 100')",
                     "url": "https://platform.openai.com/docs/guides/fine-tuning"},
    "multi-lora": {"citation": "Sheng et al. 2023, S-LoRA: Serving Thousands of Concurrent LoRA Adapters (one base, "
                               "many hot-swapped adapters)", "url": "https://arxiv.org/abs/2311.03285"},
}


@frozen
class Goal:
    """What the fine-tuning is for: the task, the data, how many tasks one base serves."""

    task: str | None = None
    examples: int | None = None
    dataset_tokens: int | None = None
    adapters: int | None = None

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            from fitplan.errors import unknown_choice

            raise unknown_choice("task", self.task, TASKS)
        for name in ("examples", "dataset_tokens", "adapters"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise PlanError(f"--{name.replace('_', '-')} must be positive, got {value}")

    @property
    def large(self) -> bool:
        return (self.examples or 0) > LARGE_EXAMPLES or (self.dataset_tokens or 0) > LARGE_TOKENS

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "examples": self.examples, "dataset_tokens": self.dataset_tokens,
                "adapters": self.adapters}


@frozen
class Candidate:
    method: str
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] | None = None


@frozen
class Recommendation:
    method: str                      # a method name, or "none" (do not fine-tune)
    lora_rank: int | None
    gpus: int | None
    reason: str
    estimate: Estimate | None = field(default=None, repr=False)
    lora_targets: tuple[str, ...] | None = None
    levers: tuple[str, ...] = ()
    micro_batch: int | None = None
    gradient_accumulation: int | None = None
    sharding: str | None = None
    peak_bytes_per_gpu: int | None = None
    rejected: tuple[dict[str, Any], ...] = ()
    rules: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    goal: Goal = Goal()

    def to_dict(self) -> dict[str, Any]:
        st = self.estimate.setup if self.estimate else None
        return {
            "method": self.method, "lora_rank": self.lora_rank,
            "lora_targets": list(self.lora_targets) if self.lora_targets else None,
            "gpus": self.gpus, "sharding": self.sharding,
            "gradient_checkpointing": st.checkpointing if st else None, "optimizer": st.optimizer if st else None,
            "micro_batch": self.micro_batch, "gradient_accumulation": self.gradient_accumulation,
            "levers": list(self.levers), "reason": self.reason,
            "peak_bytes": self.estimate.peak_bytes if self.estimate else None,
            "peak_bytes_per_gpu": self.peak_bytes_per_gpu,
            "rejected": list(self.rejected), "rules": list(self.rules),
            "sources": [{"id": s, **SOURCES[s]} for s in self.sources], "goal": self.goal.to_dict(),
        }


def rank_for(goal: Goal) -> tuple[int, list[str]]:
    """The LoRA rank the evidence points to, and the sources it rests on."""
    task = goal.task or "moderate"
    rank = TASK_RANKS[task]
    sources = ["lora"] if task == "simple" else ["qlora"]
    tokens = goal.dataset_tokens
    by_data = 0
    if tokens is not None:
        by_data = 8 if tokens <= 10**6 else 16 if tokens <= 10**7 else 32 if tokens <= 10**8 else \
            128 if tokens <= 10**9 else 256
    elif goal.examples is not None:
        by_data = 8 if goal.examples <= 1_000 else 16 if goal.examples <= 10_000 else \
            32 if goal.examples <= 100_000 else 64
    if by_data > rank:
        rank = by_data
        sources.append("without-regret")
        if by_data >= 256:
            sources.append("learns-less")
    return rank, sources


def candidates(model: ModelEntry, goal: Goal, base: TrainingSetup, given: set[str]) -> tuple[list[Candidate], list[str], list[str]]:
    """The methods a practitioner would try for this goal, best first; the rules applied; their sources
    (the rank's own sources are added where a method with a rank is chosen: ``rank_for``)."""
    rank, _ = rank_for(goal)
    sources: list[str] = []
    rank = base.lora_rank if "lora_rank" in given else rank
    targets = base.lora_targets if "lora_targets" in given else ("all-linear",)
    lora = [Candidate("lora", rank, targets), Candidate("qlora", rank, targets)]
    task = goal.task or "moderate"
    rules = []
    if goal.adapters and goal.adapters > 1:
        rules.append(f"{goal.adapters} tasks on one base: one LoRA adapter each, hot-swapped on the shared base "
                     "(a full fine-tune would be a full copy per task)")
        sources.append("multi-lora")
        return lora + [Candidate("adapter"), Candidate("prompt")], rules, sources
    if task == "complex" and (goal.large or (goal.examples is None and goal.dataset_tokens is None)):
        rules.append("a complex task with much data: full fine-tuning where it fits (it learns a distant domain "
                     "best), else LoRA at a high rank on every linear layer")
        sources.append("learns-less")
        return [Candidate("full")] + lora + [Candidate("adapter")], rules, sources
    out = list(lora)
    if task == "simple" and model.shape.parameter_count > PROMPT_TUNING_PARAMETERS:
        rules.append("a simple task on a model above 10B parameters: prompt tuning comes close to full fine-tuning")
        sources.append("prompt-tuning")
        out.insert(1, Candidate("prompt"))
    rules.append(f"a {task} task: LoRA on every linear layer, r={rank}")
    return out + [Candidate("full"), Candidate("adapter"), Candidate("ptuning"), Candidate("prompt")], rules, sources


def _describe(c: Candidate) -> str:
    from fitplan.methods import REGISTRY

    title = REGISTRY[c.method].title
    if c.lora_rank is None:
        return title
    where = "every linear layer" if "all-linear" in c.lora_targets else ",".join(c.lora_targets)
    return f"{title} r={c.lora_rank} on {where}"


class _Search:
    """Levers on one GPU, then more GPUs, for the candidates in turn."""

    def __init__(self, model: ModelEntry, base: TrainingSetup, gpu: GPU, overhead: Overhead, given: set[str]):
        self.model, self.base, self.gpu, self.overhead, self.given = model, base, gpu, overhead, given
        self.budget = int(gpu.usable_memory_bytes * HEADROOM)

    def _setup(self, c: Candidate, **changes: Any) -> TrainingSetup | None:
        kw: dict[str, Any] = {"method": c.method, **changes}
        if c.lora_rank is not None:
            kw.update(lora_rank=c.lora_rank, lora_targets=c.lora_targets)
        try:
            return self.base.with_(**kw)
        except PlanError:
            return None

    def ladder(self, c: Candidate) -> list[tuple[tuple[str, ...], TrainingSetup, int]]:
        """(levers, setup, micro batch) in the order they are pulled; each rung keeps the earlier ones.
        A lever that saves less than 1% of the peak (8-bit states for a small adapter) is not pulled."""
        from fitplan.methods import REGISTRY

        m = REGISTRY[c.method]
        st = self._setup(c)
        if st is None:
            return []
        rungs = [((), st, st.batch_size)]
        levers: list[str] = []
        changes: dict[str, Any] = {}
        pulls = []
        if "grad_ckpt" not in self.given and not st.checkpointing and m.checkpointing_refused is None:
            pulls.append(("gradient checkpointing", {"grad_ckpt": True}))
        if "optimizer" not in self.given and st.optimizer == "adamw":
            pulls.append(("8-bit AdamW states", {"optimizer": "adamw-8bit"}))
        if st.batch_size > 1:
            pulls.append((f"micro batch 1 with {st.batch_size} accumulation steps", {"batch_size": 1}))
        before = estimate(self.model, st, self.overhead).peak_bytes
        for name, change in pulls:
            trial = self._setup(c, **changes, **change)
            after = estimate(self.model, trial, self.overhead).peak_bytes
            if after > 0.99 * before:
                continue
            levers.append(name)
            changes.update(change)
            st, before = trial, after
            rungs.append((tuple(levers), st, st.batch_size))
        return rungs

    def one_gpu(self, c: Candidate) -> tuple[tuple[str, ...], Estimate, int] | tuple[None, Estimate | None, int]:
        """The first rung that fits one GPU, else (None, the last rung's estimate)."""
        last = None
        for levers, st, micro in self.ladder(c):
            est = estimate(self.model, st, self.overhead)
            if est.peak_bytes <= self.budget:
                return levers, est, micro
            last = est
        return None, last, self.base.batch_size

    def many_gpus(self, c: Candidate):
        from fitplan.sharding import fewest_gpus

        rungs = self.ladder(c)
        if not rungs:
            return None
        levers, st, micro = rungs[-1]
        est = estimate(self.model, st, self.overhead)
        found = fewest_gpus(est, "fsdp", "none", self.budget)
        return (levers, est, micro, found) if found else None


def recommend(model: ModelEntry, base: TrainingSetup, gpu: GPU, overhead: Overhead = DEFAULT_OVERHEAD,
              goal: Goal = Goal(), given: set[str] | frozenset[str] = frozenset()) -> Recommendation:
    """The method, rank and configuration for ``goal`` on ``gpu`` (see the module docstring).

    ``given``: the options the user chose, which the levers leave alone.
    """
    given = set(given)
    if goal.examples is not None and goal.examples < MIN_EXAMPLES:
        return Recommendation(
            "none", None, None,
            f"{goal.examples} examples are too few to fine-tune on without overfitting: put them in the prompt "
            "(few-shot) or retrieve them; fine-tune once there are a few hundred",
            rules=(f"fewer than {MIN_EXAMPLES} examples: no fine-tuning",), sources=("few-examples",), goal=goal)
    order, rules, sources = candidates(model, goal, base, given)
    search = _Search(model, base, gpu, overhead, given)
    rejected: list[dict[str, Any]] = []
    usable = gpu.usable_memory_bytes
    for c in order:
        levers, est, micro = search.one_gpu(c)
        if levers is None:
            if est is not None:
                pulled = [lv for lv, _, _ in search.ladder(c)][-1]
                rejected.append({"method": c.method, "lora_rank": c.lora_rank, "peak_bytes": est.peak_bytes,
                                 "reason": f"{_describe(c)} needs {gib(est.peak_bytes)} GiB"
                                           + (f" even with {', '.join(pulled)}" if pulled else "")
                                           + (f", above the {gib(search.budget)} GiB a {100 - round(100 * HEADROOM)}% "
                                              f"headroom leaves of {gib(usable)} GiB usable"
                                              if est.peak_bytes <= usable else "")})
            continue
        if c.lora_rank is not None:
            sources += rank_for(goal)[1]
        spare = usable - est.peak_bytes
        how = f" with {', '.join(levers)}" if levers else ""
        why = f"{_describe(c)}{how} fits one {gpu.name} with {gib(spare)} GiB to spare " \
              f"(peak {gib(est.peak_bytes)} of {gib(usable)} GiB usable)"
        if rejected:
            why += "; " + "; ".join(r["reason"] for r in rejected)
        accumulation = base.batch_size if micro < base.batch_size else None
        return Recommendation(c.method, c.lora_rank, 1, why, est, c.lora_targets, levers, micro, accumulation,
                              "none", est.peak_bytes, tuple(rejected), tuple(rules), tuple(dict.fromkeys(sources)), goal)
    # more GPUs: the first candidate that one node holds, else the one that needs the fewest
    best = None
    for c in order:
        found = search.many_gpus(c)
        if found is None:
            continue
        if found[3].placement.gpus <= found[3].placement.gpus_per_node:
            best = (c, found)
            break
        if best is None or found[3].placement.gpus < best[1][3].placement.gpus:
            best = (c, found)
    if best is None:
        return Recommendation(
            base.method.name, None, None,
            f"no method fits on {gpu.name} at any GPU count: shorten the sequence or lower the batch",
            rejected=tuple(rejected), rules=tuple(rules), sources=tuple(dict.fromkeys(sources)), goal=goal)
    c, (levers, est, micro, spread) = best
    if c.lora_rank is not None:
        sources += rank_for(goal)[1]
    n = spread.placement.gpus
    how = f" with {', '.join(levers)}" if levers else ""
    why = (f"nothing fits one {gpu.name}; {_describe(c)}{how} holds the step on {n} GPUs "
           f"({spread.placement.nodes} node{'s' if spread.placement.nodes > 1 else ''}) with fully sharded states "
           f"(FSDP / ZeRO-3), {gib(spread.peak_bytes)} GiB per GPU")
    accumulation = base.batch_size if micro < base.batch_size else None
    return Recommendation(c.method, c.lora_rank, n, why, est, c.lora_targets, levers + ("more GPUs",), micro,
                          accumulation, "fsdp", spread.peak_bytes, tuple(rejected), tuple(rules),
                          tuple(dict.fromkeys(sources)), goal)
