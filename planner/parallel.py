"""Model parallelism: memory per GPU under tensor, pipeline, expert and context parallelism, composed with
data-parallel sharding (DDP, ZeRO-1/2/3, FSDP), as Megatron-Core and torchtitan lay it out.

A ``Layout`` is degrees ``tp`` x ``pp`` x ``cp`` x ``dp`` = GPUs, with ``ep`` taken from the data and
context ranks (Megatron's expert data parallelism, torchtitan's ``efsdp``). From the single-GPU
estimate's moments (every candidate peak, by category) each rank keeps:

- **Tensor parallelism** (Megatron ``ColumnParallelLinear``/``RowParallelLinear``, torchtitan's colwise /
  rowwise plan): q, k, v, gate and up split by output, o and down by input, the embedding and head by
  vocabulary (``VocabParallelEmbedding``, a vocab-parallel loss over V/t logits with or without
  sequence parallelism; ``loss_parallel``'s backward holds three V/t shards); norms and routers
  replicated. With sequence parallelism (torchtitan always; Megatron's ``--sequence-parallel``) the
  activations between the parallel linears are split by heads and width and the rest by sequence
  (Korthikanti et al. 2022, table 2: sbh(34/t + 5as/(ht))), and PyTorch's ``ColwiseParallel`` saves
  the all-gathered, whole-sequence input of each attention and MLP block and of the head for backward:
  (2 L + 1) u (1 - 1/t) more than Megatron, which gathers again in backward (measured with DTensor on
  local ranks, ``fitplan.validate.parallel``). Without sequence parallelism only the replicated region
  stays whole: per layer the two norms' input and output and the two residual sums (6u), the
  embedding's output and the final norm's.
- **Pipeline parallelism**: each stage holds L/p layers, the first the embedding, the last the final
  norm, the head and the loss; activations of the microbatches in flight: GPipe m, 1F1B min(m, p - r)
  (the first stage p), interleaved 1F1B p(1 + (p - 1)/(p v)) capped at m, zero-bubble V p (Megatron
  ``schedules.py``, ``torch.distributed.pipelining``). A stage's gradients exist from its first
  microbatch's backward to the step, so 1F1B peaks in a later backward with them all there (GPipe: the
  first backward with m in flight, or the second with m - 1 and the gradients). Every microbatch gets
  a receive buffer at the first step, kept (activations on every stage but the first, gradients on
  every stage but the last); the last stage keeps each in-flight microbatch's logits for its backward
  and its loss, computed right after its forward. A middle stage (p >= 3) is evaluated too. With FSDP,
  torchtitan does not reshard a stage's weights between forward and backward when pipelining
  (``reshard_after_forward = not pp_enabled``): the shards stay beside the gathered weights, and with
  gradient sync off but for the last microbatch the stage's gradients accumulate unsharded.
- **Expert parallelism**: routed experts split over ``ep`` ranks (and their states and gradients
  sharded over the remaining data ranks); the all-to-all dispatch holds the permuted tokens twice
  (sent and received, T k h each) inside a MoE layer; the experts' activations per rank stay those of
  its tokens (balanced routing).
- **Context parallelism** (ring attention, Megatron's default ``p2p``): sequences split c ways, so
  activations, logits and loss by c; weights whole; each layer's attention briefly holds the keys and
  values of the whole sequence (the ring's c chunks, TransformerEngine's ``p2p_comm_buffers``).
- **Data parallelism** over the rest: ``ddp`` (a second copy of the gradients in buckets), ``zero1``
  (Megatron's distributed optimizer: states sharded over dp x cp), ``zero2``, ``zero3``/``fsdp``
  (weights too, two gathered layers alive inside the layers; at the loss only the root unit; after
  the head's backward the top layer and the head's unsharded gradient).

Known limitations: routing is taken as balanced; KV heads fewer than t are taken as split (Megatron
replicates them); the activations are split evenly over the stages (the last stage's final norm and
head input are a few percent of one microbatch's layers); NCCL's own buffers are not counted; expert
tensor parallelism is 1 (Megatron's recommendation for fine-grained MoE); Megatron's re-gathered
sequence-parallel inputs (smaller than DTensor's saved ones) are not a choice.
"""

from __future__ import annotations

from fitplan.architecture import EXPERT_DOWN, EXPERT_GATE_UP, ROUTER
from fitplan.breakdown import MemoryBreakdown
from fitplan.errors import PlanError, unknown_choice
from fitplan.estimate import Estimate
from fitplan.frozen import frozen, replace

SCHEDULES = ("1f1b", "gpipe", "interleaved", "zbv")
ENGINES = ("auto", "megatron", "torch")
DP_STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp")
_EXPERT_ROLES = (EXPERT_GATE_UP, EXPERT_DOWN)


@frozen
class Layout:
    """Degrees of parallelism; ``dp`` is what is left of the GPUs."""

    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    dp: int = 1
    strategy: str = "zero1"
    schedule: str = "1f1b"
    virtual_stages: int = 1
    microbatches: int = 0          # 0: as many as pipeline stages x 2
    sequence_parallel: bool = True
    gpus_per_node: int = 8
    engine: str = "auto"           # megatron with zero1 (its distributed optimizer), torch otherwise

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "ep", "dp", "virtual_stages"):
            if getattr(self, name) < 1:
                raise PlanError(f"{name.replace('_', '-')} must be a positive number, got {getattr(self, name)}")
        if self.microbatches < 0:
            raise PlanError(f"microbatches must be positive, got {self.microbatches}")
        if self.schedule not in SCHEDULES:
            raise unknown_choice("pipeline schedule", self.schedule, SCHEDULES)
        if self.strategy not in DP_STRATEGIES:
            raise unknown_choice("data-parallel sharding with model parallelism", self.strategy, DP_STRATEGIES)
        if (self.dp * self.cp) % self.ep:
            raise PlanError(f"expert parallelism of {self.ep} must divide the data x context ranks "
                            f"({self.dp} x {self.cp}), which it is taken from")
        if self.engine not in ENGINES:
            raise unknown_choice("parallel engine", self.engine, ENGINES)
        if self.schedule == "zbv" and self.virtual_stages not in (1, 2):
            raise PlanError("the zero-bubble V schedule runs exactly 2 stages per GPU")

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def megatron(self) -> bool:
        """Megatron-Core's engine (else PyTorch's: DTensor, torch.distributed.pipelining, FSDP2)."""
        return self.engine == "megatron" or self.engine == "auto" and self.strategy == "zero1"

    @property
    def m(self) -> int:
        return self.microbatches or 2 * self.pp

    def in_flight(self, stage: int) -> float:
        """Microbatches whose activations stage ``stage`` (0 = first) holds at its peak, in whole-stage units."""
        p, m, v = self.pp, self.m, self.virtual_stages
        if p == 1:
            return 1.0
        if self.schedule == "gpipe":
            return float(m)
        if self.schedule == "1f1b":
            return float(min(m, p - stage))
        if self.schedule == "zbv":
            return float(min(m, p))
        warm = 2 * (p - stage - 1) + (v - 1) * p          # chunk-forwards before the first backward
        return min(float(m), (warm + 1) / v)

    def describe(self) -> str:
        parts = [f"TP {self.tp}" + (" + SP" if self.tp > 1 and self.sequence_parallel else "")] if self.tp > 1 else []
        if self.pp > 1:
            parts.append(f"PP {self.pp} ({self.schedule}" + (f", {self.virtual_stages} stages per GPU" if self.virtual_stages > 1 else "")
                         + f", {self.m} microbatches)")
        if self.cp > 1:
            parts.append(f"CP {self.cp}")
        parts.append(f"DP {self.dp} ({self.strategy})")
        text = " x ".join(parts)
        return text + (f", experts over EP {self.ep} of the data ranks" if self.ep > 1 else "")


@frozen
class RankPeak:
    layout: Layout
    stage: str                      # "first", "last" or "only": the worst pipeline stage
    phase: str
    per_gpu: MemoryBreakdown
    phases: dict[str, MemoryBreakdown] | None = None   # the worst stage's every phase
    stages: dict[str, int] | None = None                # each stage's peak bytes

    @property
    def peak_bytes(self) -> int:
        return self.per_gpu.total


def _split(est: Estimate) -> dict[str, dict[str, float]]:
    """Fractions of the weights (by bytes) and of the trainable elements held by the embedding, the head
    side (final norm, head), the layers' tensor-parallel matrices, the layers' replicated tensors and
    the routed experts."""
    shape = est.model.shape
    L = shape.num_layers
    roles = {m.name: m.role for m in shape.matrices}
    names = sorted(roles, key=len, reverse=True)
    dq = est.setup.double_quant
    w: dict[str, float] = {"emb": 0, "head": 0, "tp": 0, "rep": 0, "exp": 0}
    t: dict[str, float] = dict(w)
    tied = shape.tie_word_embeddings
    for g in est.groups:
        label = g.label
        if label.startswith("embed_tokens") or (shape.embedding_norm and label.startswith(shape.embedding_norm.name)):
            part = "emb"
        elif label.startswith("lm_head") or label.startswith(shape.final_norm.name + "."):
            part = "head"
        elif g.per_layer(L):
            name = next((n for n in names if label.startswith(n + ".")), None)
            role = roles.get(name) if name else None
            part = "exp" if role in _EXPERT_ROLES else ("rep" if role in (None, ROUTER) else "tp")
        else:
            part = "rep"
        w[part] += g.data_bytes() + g.quant_state_bytes(dq)
        if g.trainable:
            t[part] += g.elements
    if tied:
        w["head"] += w["emb"]        # a tied embedding is kept on the first and the last stage
        t["head"] += t["emb"]
    for d in (w, t):
        total = sum(d.values()) - (d["emb"] if tied else 0)
        for k in d:
            d[k] = d[k] / total if total else 0.0
    return {"weights": w, "trainable": t}


def _share(f: dict[str, float], lay: Layout, first: bool, last: bool) -> float:
    """The fraction of a model-wide quantity one GPU of a stage holds before data-parallel sharding."""
    t, p, e = lay.tp, lay.pp, lay.ep
    out = f["tp"] / (t * p) + f["rep"] / p + f["exp"] / (e * p)
    if first:
        out += f["emb"] / t
    if last:
        out += f["head"] / t
    return out


class Ranks:
    """One estimate's per-GPU memory under any layout: what every layout shares is computed once."""

    def __init__(self, est: Estimate):
        from fitplan.estimate import template
        from fitplan.memory.activations import layer_backward_temporaries

        self.est = est
        shape = est.model.shape
        self.split = _split(est)
        # FSDP's working set beside its shards (as fitplan.sharding.Spread): two gathered layers and the
        # unsharded root unit (embedding, final norm, head), and one layer's gradients before the reduce-scatter
        L = shape.num_layers
        dq = est.setup.double_quant
        self.layer_w = sum(g.data_bytes() + g.quant_state_bytes(dq) for g in est.groups if g.per_layer(L)) // L
        self.layer_g = sum(g.data_bytes() for g in est.groups if g.per_layer(L) and g.trainable) // L
        self.root = sum(g.data_bytes() for g in est.groups if not g.per_layer(L) and not g.added)
        # the head's unsharded gradient, waiting for its reduce-scatter after the head's backward
        self.head_g = sum(g.data_bytes() for g in est.groups if g.trainable and not g.per_layer(L)
                          and g.label.startswith(("lm_head", "embed_tokens" if shape.tie_word_embeddings else "lm_head")))
        # what one layer's backward holds beyond its saved tensors (the stages without the loss peak there)
        counts, _ = template(shape, est.setup).counts(est.setup.seq_len, est.setup.batch_size)
        self.layer_temps = max(x.bytes(*counts) for x in layer_backward_temporaries(shape, est.setup))
        self.max_acts = max((b.activations for _, b in est.moments), default=0)
        self.max_grads = max((b.gradients for _, b in est.moments), default=0)

    def at(self, lay: Layout) -> RankPeak:
        """Peak bytes per GPU (one micro batch of ``batch_size`` sequences per data rank) under ``lay``:
        the worst pipeline stage's worst moment (see the module docstring).

        Raises:
            PlanError: a degree the model cannot take (more stages than layers, experts or heads not
                divisible, expert parallelism without experts, a sequence context parallelism cannot split).
        """
        est = self.est
        shape = est.model.shape
        setup = est.setup
        _check(shape, setup.seq_len, lay)
        split, layer_w, layer_g, root, layer_temps = self.split, self.layer_w, self.layer_g, self.root, self.layer_temps
        w = split["weights"]
        layer_share = (w["tp"] / lay.tp + w["rep"] + w["exp"] / lay.ep) / max(w["tp"] + w["rep"] + w["exp"], 1e-12)
        a = setup.activation_bytes
        t, c, p = lay.tp, lay.cp, lay.pp
        sp = t > 1 and lay.sequence_parallel
        T = setup.seq_len * setup.batch_size // c                # one microbatch's tokens on this rank
        u = a * T * shape.hidden_size                            # its hidden states
        lam = a * T * shape.vocab_size                           # its logits
        L_s = shape.num_layers / p
        ckpt = setup.checkpointing
        standard_loss = setup.loss_kind == "standard"
        d_states = lay.dp * c                                   # Megatron's distributed optimizer and FSDP shard over dp x cp
        sharded_w = lay.strategy in ("zero3", "fsdp") and d_states > 1
        sharded_g = lay.strategy in ("zero2", "zero3", "fsdp") and d_states > 1
        if p == 1:
            stages = [("only", 0, True, True)]
        else:
            stages = [("first", 0, True, False), ("last", p - 1, False, True)]
            if p >= 3:
                stages.insert(1, ("middle", 1, False, False))   # receive buffers both ways
        # transients inside one layer that the whole-model moments do not carry
        gather = u if sp else 0                                 # SP's all-gathered input, between layers' matmuls
        ring = 2 * a * (T // t if sp else T) * shape.kv_width if c > 1 else 0
        a2a = 2 * a * (T // (t if sp else 1)) * shape.experts_per_token * shape.hidden_size if lay.ep > 1 else 0
        buffer = u // (t if sp else 1)                          # a pipeline send / receive buffer
        mega = lay.megatron
        # Megatron's vocab_parallel_cross_entropy: the logits and one fp32 copy it works on in place
        # (tensor_parallel/cross_entropy.py), whatever --loss says
        mega_loss = T * shape.vocab_size * (a + (4 if a != 4 else 0)) / t

        best: RankPeak | None = None
        by_stage: dict[str, int] = {}
        for stage, r, first, last in stages:
            raw: dict[str, tuple] = {}
            fw = _share(split["weights"], lay, first, last)
            ft = _share(split["trainable"], lay, first, last)
            # sharded over the data ranks: the routed experts only over their expert data-parallel group
            # (dp x cp / ep ranks: Megatron's expert_data_parallel_group, torchtitan's efsdp)
            fw_sh = self._sharded(fw, split["weights"], lay, d_states)
            ft_sh = self._sharded(ft, split["trainable"], lay, d_states)
            r_t = ft_sh / ft if ft else 0.0
            stage_grads = self.max_grads * ft
            n = lay.in_flight(r)
            # the microbatches' receive buffers, allocated at the first step and kept (torch.distributed.pipelining)
            # (Megatron receives each microbatch into the stage input it keeps for backward: in the activations)
            recv = (0 if first else lay.m * buffer) + (0 if last else lay.m * buffer) if p > 1 and not mega else 0
            variants = [(n, False)]
            if p > 1:
                # a stage's gradients exist from its first microbatch's backward to the step: 1F1B's peak is a
                # later backward with them all there; GPipe's the first backward (m in flight, no gradients)
                # or the second (m - 1, the gradients)
                variants = [(n, False), (n - 1, True)] if lay.schedule == "gpipe" else [(n, True)]
            for phase, b in est.moments:
                at_loss = last and b.logits_loss > 0
                frac = b.activations / self.max_acts if self.max_acts else 0.0
                for inflight, with_grads in variants:
                    if inflight <= 0:
                        continue
                    weights = b.weights * fw
                    quant = b.quantization_state * fw
                    grads = b.gradients * ft
                    if with_grads and phase == "backward" or mega:
                        # (Megatron's DDP keeps one gradient buffer of the whole stage from the model's wrapping)
                        grads = max(grads, stage_grads)
                    states = b.optimizer_states * ft
                    extra = 0.0
                    if sharded_w:
                        if p == 1:
                            # at the loss only the root unit is gathered; inside the layers two gathered layers
                            extra += root / t if at_loss else 2 * layer_w * layer_share + root / t
                            weights, quant = b.weights * fw_sh, b.quantization_state * fw_sh
                        else:
                            # with pipelining a stage's weights stay gathered from forward to backward
                            # (torchtitan), beside their shards
                            extra += (b.weights + b.quantization_state) * fw_sh
                    if sharded_g:
                        if p == 1 or lay.strategy == "zero2":
                            grads = grads * r_t
                            extra += 0 if at_loss else layer_g * layer_share
                        # with pipelining, gradient sync is off but for the last microbatch: the stage's
                        # gradients accumulate unsharded
                    if lay.strategy != "ddp":
                        states = states * r_t
                    else:
                        grads *= 2
                    acts = self._acts(b.activations, frac, lay, L_s, u, first, last, at_loss, ckpt, phase) * inflight
                    logits = 0.0
                    if last and mega and at_loss:
                        logits = mega_loss                          # fused vocab-parallel cross-entropy
                    elif last:
                        logits = b.logits_loss / (t * c)            # vocabulary-parallel with or without SP
                        if p > 1 and phase != "optimizer":
                            # each in-flight microbatch's output is kept for its backward, and its loss
                            # computed right after its forward
                            logits += (inflight - 1) * (lam / t + b.logits_loss / (t * c)) if at_loss else 0
                    if phase == "optimizer":
                        temps = b.temporaries * (ft_sh if lay.strategy != "ddp" else ft)
                    elif last and mega:
                        temps = (0.0 if at_loss else b.temporaries / (t * c)) + gather + ring + a2a
                    elif last:
                        temps = b.temporaries / (t * c) + ring + a2a
                        if at_loss and t > 1 and standard_loss and phase == "backward":
                            temps = max(temps, 3 * lam / t + ring + a2a)   # loss_parallel: exp, zeros, their sum
                        if not at_loss:
                            temps += gather
                    else:
                        temps = (layer_temps / (t * c) if phase == "backward" else 0.0) + gather + ring + a2a
                    temps += recv
                    tensors = int(weights + quant + grads + states + acts + logits + temps + extra)
                    if phase not in raw or tensors > raw[phase][0]:
                        raw[phase] = (tensors, weights, quant, grads, states, acts, logits)
                # FSDP without pipelining: after the head's backward the logits and the loss are freed, the top
                # layer is gathered and the head's unsharded gradient waits for its reduce-scatter
                if sharded_w and p == 1 and at_loss and phase == "backward":
                    weights = b.weights * fw_sh
                    quant = b.quantization_state * fw_sh
                    grads = b.gradients * (ft_sh if sharded_g else ft)
                    states = b.optimizer_states * ft_sh
                    acts = self._acts(b.activations, frac, lay, L_s, u, first, last, False, ckpt, phase)
                    extra = root / t + 2 * layer_w * layer_share + self.head_g / t
                    tensors = int(weights + quant + grads + states + acts + extra + ring + a2a)
                    if tensors > raw[phase][0]:
                        raw[phase] = (tensors, weights, quant, grads, states, acts, 0.0)
            phases = {phase: _breakdown(est, *parts) for phase, parts in raw.items()}
            worst = max(phases, key=lambda ph: phases[ph].total)
            by_stage[stage] = phases[worst].total
            if best is None or phases[worst].total > best.peak_bytes:
                best = RankPeak(lay, stage, worst, phases[worst], phases)
        assert best is not None
        return replace(best, stages=by_stage)

    @staticmethod
    def _sharded(share: float, f: dict[str, float], lay: Layout, d: int) -> float:
        """``share`` (a stage GPU's fraction before data-parallel sharding) sharded over ``d`` data ranks,
        the routed experts' part over the ``d / ep`` ranks of their expert data-parallel group."""
        experts = f["exp"] / (lay.ep * lay.pp)
        return (share - experts) / d + experts / max(d // lay.ep, 1)

    def _acts(self, acts: float, frac: float, lay: Layout, L_s: float, u: int, first: bool, last: bool,
              at_loss: bool, ckpt: bool, phase: str) -> float:
        """One microbatch's saved activations on one GPU of a stage, from the single GPU's ``acts``."""
        t, c, p = lay.tp, lay.cp, lay.pp
        stage = acts / (p * c)
        if t == 1:
            return stage
        if lay.sequence_parallel and lay.megatron:
            return stage / t                          # shards saved, inputs gathered again in backward
        if lay.sequence_parallel:
            # DTensor's colwise linears save their all-gathered (whole-sequence) input: one per attention and
            # one per MLP in every layer whose tensors are saved, and the head's (torchtitan's plan)
            layers = (1 if phase == "backward" else 0) if ckpt else 2 * L_s * frac
            saved = 2 * layers if ckpt else layers
            head = 1 if at_loss else 0
            return stage / t + (saved + head) * u * (1 - 1 / t)
        if ckpt:
            return stage                              # the layers' inputs, whole
        # without sequence parallelism only the replicated region stays whole: each layer's two norms'
        # input and output and two residual sums, the embedding output, the final norm's input and output
        whole = min(stage, (6 * L_s * frac + (1 if first else 0) + (2 if last and at_loss else 0)) * u)
        return whole + (stage - whole) / t


def _breakdown(est: Estimate, tensors: int, weights: float, quant: float, grads: float, states: float, acts: float,
               logits: float) -> MemoryBreakdown:
    overhead = (est.overhead.device_used(tensors) - tensors) if est.setup.device == "cuda" else 0
    parts = [int(weights), int(quant), int(grads), int(states), int(acts), int(logits)]
    return MemoryBreakdown(*parts, tensors - sum(parts), overhead)


def _check(shape, seq_len: int, lay: Layout) -> None:
    if shape.num_layers < lay.pp * lay.virtual_stages:
        raise PlanError(f"{lay.pp * lay.virtual_stages} pipeline stages need at least as many layers; "
                        f"{shape.name} has {shape.num_layers}")
    if lay.ep > 1 and not shape.num_experts:
        raise PlanError(f"expert parallelism needs a mixture-of-experts model; {shape.name} has no experts")
    if lay.ep > 1 and shape.num_experts % lay.ep:
        raise PlanError(f"expert parallelism of {lay.ep} must divide {shape.name}'s {shape.num_experts} experts")
    if lay.tp > 1 and shape.num_heads % lay.tp:
        raise PlanError(f"tensor parallelism of {lay.tp} must divide {shape.name}'s {shape.num_heads} attention heads")
    if lay.cp > 1 and seq_len % (2 * lay.cp):
        raise PlanError(f"context parallelism of {lay.cp} needs a sequence length divisible by {2 * lay.cp} "
                        f"(two chunks per rank, for causal balance); got {seq_len}")


def per_rank(est: Estimate, lay: Layout) -> RankPeak:
    """Peak bytes per GPU of ``est`` under ``lay`` (``Ranks(est).at(lay)``)."""
    return Ranks(est).at(lay)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layouts(est: Estimate, gpus: int, gpus_per_node: int = 8, strategy: str | None = None) -> list[Layout]:
    """The layouts of ``gpus`` GPUs worth comparing: tensor parallelism within a node, pipeline and data
    parallelism across, expert parallelism for MoE models, context parallelism for long sequences."""
    shape = est.model.shape
    out = []
    for tp in (d for d in _divisors(gpus) if d <= gpus_per_node and d & (d - 1) == 0 and shape.num_heads % d == 0):
        for pp in (d for d in _divisors(gpus // tp) if d <= shape.num_layers and d <= 16):
            rest = gpus // (tp * pp)
            cps = [1] + [d for d in _divisors(rest) if d > 1 and d <= 8 and est.setup.seq_len >= 16384
                         and est.setup.seq_len % (2 * d) == 0]
            for cp in cps:
                dp = rest // cp
                eps = [1]
                if shape.num_experts:
                    eps += [d for d in _divisors(dp * cp) if d > 1 and shape.num_experts % d == 0]
                for ep in eps:
                    for strat in ([strategy] if strategy else ["zero1", "fsdp"] if pp == 1 else ["zero1"]):
                        out.append(Layout(tp=tp, pp=pp, cp=cp, ep=ep, dp=dp, strategy=strat, gpus_per_node=gpus_per_node))
    return out


def search(est: Estimate, budget: int, gpus: int, gpus_per_node: int = 8, strategy: str | None = None,
           limit: int = 5, ranks: Ranks | None = None) -> list[RankPeak]:
    """The layouts of ``gpus`` GPUs that hold the step in ``budget`` bytes per GPU, least model
    parallelism first (tensor parallelism costs communication in every layer, pipelining a bubble),
    then the lowest peak."""
    fits = []
    ranks = ranks or Ranks(est)

    def order(lay: Layout) -> tuple[int, int]:
        return lay.tp * lay.pp * lay.cp, lay.tp

    for lay in sorted(layouts(est, gpus, gpus_per_node, strategy), key=order):
        if len(fits) >= limit and order(lay) > order(fits[limit - 1].layout):
            break                     # the rest parallelise more than every layout already found
        try:
            r = ranks.at(lay)
        except PlanError:
            continue
        if r.peak_bytes <= budget:
            fits.append(r)
            fits.sort(key=lambda x: (*order(x.layout), x.peak_bytes))
    return fits[:limit]
