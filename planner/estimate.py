"""The estimate of one training step: components, phases, the peak.

Phases of the second training step (the first has no optimizer state during forward and
backward; its optimizer step equals the second's), each a MemoryBreakdown:

- ``forward``: weights, optimizer states, every layer's saved activations, the loss's saved
  tensors and, at ``log_softmax``, the logits with their fp32 copy (temporaries);
- ``backward``: the largest of the backward start (the loss's two fp32 gradients, temporaries,
  beside all saved activations), the recomputation of one checkpointed layer (its saved set and
  the layer's gradient temporaries, about a x T x 2(h + i), both temporaries), and the end of
  backward (all gradients; with tied embeddings one more embedding-sized gradient being
  accumulated);
- ``optimizer``: weights, gradients, states and the step's temporaries.

The peak is the largest phase's total; framework overhead is added on a CUDA device.

What the training stack does changes some of these moments: the loss (``fitplan.memory.logits``'s
``Loss``: chunked and fused losses hold no full fp32 logits); ``optimizer_in_backward`` (torchtune's
``optimizer_in_bwd``, ``torchtune/training/memory.py`` 197-243: every parameter stepped in its
post-accumulate-grad hook and its gradient freed) leaves at most one gradient and its step's
temporaries alive, and no optimizer phase after backward; ``activation_offload`` (torchtune's
``OffloadActivations``, ``training/_activation_offloading.py`` 66-71, which TRL and axolotl reuse)
keeps on the GPU only the checkpointed inputs of the last ``OFFLOAD_STASH`` layers in the forward
and two in the backward (the one recomputed and the one prefetched); the rest wait in pinned host
memory (``host_bytes``). Padding-free batches are one row of batch x sequence tokens.

Everything that does not depend on sequence length and batch size is computed once per model and
setup (``template``) and cached, so that searching over batch and sequence costs a few integer
operations per configuration.
"""

from __future__ import annotations

from fitplan.architecture import (
    EXPERT_DOWN,
    EXPERT_GATE_UP,
    MLP_DOWN,
    MLP_GATE,
    MLP_GATE_UP,
    MLP_UP,
    ROUTER,
    ModelShape,
)
from fitplan.breakdown import MemoryBreakdown
from fitplan.catalog import ModelEntry
from fitplan.dtypes import nbytes
from fitplan.frozen import frozen
from fitplan.memory import activations as act
from fitplan.memory import logits as lg
from fitplan.memory import optimizer as opt
from fitplan.memory import weights as wt
from fitplan.memory.forms import Size
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead
from fitplan.methods import Method, TensorGroup
from fitplan.setup import TrainingSetup

_MLP_ROLES = (MLP_GATE, MLP_UP, MLP_DOWN, MLP_GATE_UP, EXPERT_GATE_UP, EXPERT_DOWN, ROUTER)
PHASES = ("forward", "backward", "optimizer")
OFFLOAD_STASH = 5   # torchtune's OffloadActivations(max_fwd_stash_size=5): tensors kept while their copy runs


@frozen
class Template:
    """The parts of an estimate that do not depend on sequence length or batch size."""

    shape: ModelShape
    method: Method
    groups: tuple[TensorGroup, ...]   # every tensor of the trained model
    weights: int
    quant_state: int
    gradients: int
    optimizer_states: int
    optimizer_temporaries: int
    tied_extra: int
    head_gradients: int      # gradients that exist when backward reaches the last layer
    early_gradients: int     # gradients the method makes at the start of backward (counted as temporaries)
    transients: tuple[tuple[Size, Size], ...]  # a layer's forward moments: (saved so far, alive beyond it)
    head_backward: Size      # what a method's output head makes in its backward beyond the logits' gradient
    forward_held: Size       # held by the model's output while the loss is computed
    input_leaf: Size         # the embedding output kept as a separate leaf (checkpointing, prompts)
    prompt_encoder: int      # P-tuning's encoder activations, alive until the very end of backward
    mlp_side_gradients: int  # a layer's gradients made before its MLP backward peaks (adapter, LoRA on the MLP)
    eager_masks: int         # distinct attention masks eager attention keeps (checkpointing holds them)
    head_saved: Size         # the final norm's and the head's saved tensors
    top_freed: Size          # what the top layer's MLP tail frees before its MLP backward peaks
    top_gradients: int       # the top layer's gradients made by then
    layer_temps: tuple[Size, ...]  # alternatives for what is alive inside one layer's MLP backward
    attention_temps: Size | None   # what eager attention's softmax backward holds (None: a fused kernel)
    layer_gradients: int     # one decoder layer's gradients
    mlp_gradients: int       # one decoder layer's MLP's gradients (made before its attention's backward)
    forms: act.LayerActivations   # layer 0, the later layers summed, the largest one, within and beyond windows
    checkpoint: Size
    outside: Size            # outside-the-layers saved set, as a form (see outside_form)
    outside_seq: int         # bytes per sequence position, independent of batch (rotary tables, position ids)
    a: int                   # activation bytes per element
    loss: lg.Loss            # what the loss keeps (the standard one: the three coefficients below)
    loss_bytes: int          # bytes per logit the loss saves (fp32 log_softmax)
    loss_forward: int        # bytes per logit alive beside it while the loss is computed
    loss_backward: int       # bytes per logit of the loss's gradients at the start of backward
    checkpointing: bool
    cuda: bool
    virtual_tokens: int
    prefix_tokens: int
    total_params: int
    trainable_params: int
    saved_file_bytes: int
    padding_free: bool = False          # one row of batch x sequence tokens
    in_backward: tuple[int, int] = ()   # optimizer in backward: (the largest gradient, its step's temporaries)
    offload: bool = False               # checkpointed inputs to host memory
    paged_states: int = 0               # optimizer states in CUDA unified memory (paged bitsandbytes optimizers)

    def counts(self, seq_len: int, batch_size: int) -> tuple[tuple[int, int, int, int, int], int]:
        """The form's variables (tokens, scores, mask, batch mask, batch) and the sequence length."""
        if self.padding_free:
            seq_len, batch_size = seq_len * batch_size, 1
        s = seq_len + self.virtual_tokens
        kv = s + self.prefix_tokens
        b = batch_size
        return (b * s, b * self.shape.num_heads * s * kv, s * kv, b * s * kv, b), s

    def phases(self, seq_len: int, batch_size: int, overhead: Overhead = DEFAULT_OVERHEAD) -> dict[str, list[int]]:
        """Bytes per category (in CATEGORIES order) for each phase's worst moment; ``overhead`` on a
        CUDA device."""
        out: dict[str, list[int]] = {}
        for phase, parts in self.moments(seq_len, batch_size):
            if phase not in out or sum(parts) > sum(out[phase]):
                out[phase] = parts
        if self.cuda:
            for parts in out.values():
                tensors = sum(parts)
                parts[7] = overhead.device_used(tensors) - tensors
        return out

    def moments(self, seq_len: int, batch_size: int) -> list[tuple[str, list[int]]]:
        """Every candidate for a phase's peak, tensors only (the overhead slot 0): the forward at the
        loss; in backward its start, the top layer's MLP backward or a recomputed layer at either end,
        and its end; the optimizer step. Sharding and offload change which is the worst, so all are
        kept."""
        shape = self.shape
        c, s = self.counts(seq_len, batch_size)
        batch_size = c[4]
        L = shape.num_layers
        first, later_all, largest = self.forms.at(s)
        later = largest.bytes(*c)          # one later layer (the largest, where layers differ)
        if self.checkpointing:
            A = (min(L, OFFLOAD_STASH) if self.offload else L) * self.checkpoint.bytes(*c)
        else:
            A = first.bytes(*c) + later_all.bytes(*c)
        A += self.outside.bytes(*c) + self.outside_seq * s
        V = shape.vocab_size
        # log_softmax's fp32 output and the labels; Gemma-2's final soft-capping (tanh) saves its
        # output in the logits' dtype too
        held, fwd_tr, bwd_loss, head_logits = self.loss.bytes(batch_size, s, V)
        loss = held + 8 * batch_size * (s + 1)
        # the final hidden states (lm_head's input) and, for prefix tuning, the cache of every
        # layer's keys and values with the prefix live in the model's output until the loss is read
        fwd_tr += self.forward_held.bytes(*c)
        bwd_tr = bwd_loss + self.early_gradients
        W, Q, G, S = self.weights, self.quant_state, self.gradients, self.optimizer_states
        attn = freed = None         # eager attention's softmax backward, and what its layer has freed by then
        if self.attention_temps is not None:
            attn, freed = self.attention_temps.bytes(*c), self.forms.attention_freed.bytes(*c)
        moments = [("forward", [W, Q, 0, S, A, loss, fwd_tr, 0]), ("backward", [W, Q, 0, S, A, loss, bwd_tr, 0])]
        head_bwd = self.head_backward.bytes(*c)
        if head_bwd:
            # the head's backward: the loss's saved tensors gone, one fp32 gradient of the logits left,
            # beside the head's own gradients (a trained head weight's) and every saved activation
            moments.append(("backward", [W, Q, 0, S, A, 0, head_logits + head_bwd + self.early_gradients, 0]))
        transients = [(before.bytes(*c), alive.bytes(*c)) for before, alive in self.transients]
        for before, alive in transients:
            # a method's forward temporaries in the top layer: every lower layer's saved set (every
            # checkpointed input, the top layer saving nothing then), and the top layer's so far
            held = A - self.head_saved.bytes(*c) + (0 if self.checkpointing else before - later)
            moments.append(("forward", [W, Q, 0, S, held, 0, alive, 0]))
        if self.checkpointing:
            # Recomputing one layer: at the last layer (backward's first) only the head's gradients
            # exist beside every checkpointed input; at layer 0 nearly all gradients exist beside one
            # layer's input. Gradients grow as inputs are freed, so the worse end is the peak.
            temps = max(x.bytes(*c) for x in self.layer_temps)
            # held: the checkpointed inputs still needed and the rotary tables (the loss is freed)
            one = self.checkpoint.bytes(*c)
            tables = self.outside_seq * s
            tables += self.input_leaf.bytes(*c) + self.prompt_encoder
            # eager attention's masks ride along as checkpoint inputs: Gemma-2 alternates a sliding
            # and a global one, and the last layers to go hold only the kind they use
            mask = self.a * c[3]
            ends = (
                (self.head_gradients + self.mlp_side_gradients,
                 (min(L, 2) if self.offload else L) * one + tables + self.eager_masks * mask),
                (self.head_gradients + (L - 1) * self.layer_gradients + self.mlp_side_gradients,
                 one + tables + min(self.eager_masks, 1) * mask),
            )
            for grads, held in ends:
                moments.append(("backward", [W, Q, grads, S, held, 0, later - self.top_freed.bytes(*c) + temps
                                             + self.tied_extra + self.early_gradients, 0]))
                if attn is not None:
                    # the recomputed layer's attention backward: its MLP side already freed
                    moments.append(("backward", [W, Q, grads, S, held, 0, max(later - freed, 0) + attn
                                                 + self.tied_extra + self.early_gradients, 0]))
                for before, alive in transients:
                    # the recomputed layer's forward at a method's temporaries: its own gradients not
                    # yet made, its input already held as the checkpoint
                    moments.append(("backward", [W, Q, grads - self.mlp_side_gradients, S, held, 0,
                                                 before - one + alive + self.tied_extra + self.early_gradients, 0]))
        else:
            # the top layer's MLP backward: every activation but the head's and the loss's, the
            # head's gradients (a tied head's as a temporary until it is summed into the embedding's)
            held = A - self.head_saved.bytes(*c) - self.top_freed.bytes(*c)
            moments.append(("backward", [W, Q, self.head_gradients + self.top_gradients, S, held, 0,
                                         max(x.bytes(*c) for x in self.layer_temps) + self.tied_extra
                                         + self.early_gradients, 0]))
            if attn is not None:
                # the top layer's attention backward: its MLP side freed, the MLP's gradients made
                moments.append(("backward", [W, Q, self.head_gradients + max(self.top_gradients, self.mlp_gradients), S,
                                             max(A - self.head_saved.bytes(*c) - freed, 0), 0,
                                             attn + self.tied_extra + self.early_gradients, 0]))
        moments.append(("backward", [W, Q, G, S, 0, 0, self.tied_extra, 0]))
        moments.append(("optimizer", [W, Q, G, S, 0, 0, self.optimizer_temporaries, 0]))
        if self.in_backward:
            # each gradient is stepped and freed as soon as it is made: at most one (the largest) and
            # its step's temporaries beside the rest of any backward moment; nothing is left to step
            one, step = self.in_backward
            for i, (phase, parts) in enumerate(moments):
                if phase == "optimizer":
                    moments[i] = (phase, [W, Q, 0, S, 0, 0, 0, 0])
                elif parts[2] > one:
                    parts[2] = one
                    parts[6] += step
        return moments

    def host_bytes(self, seq_len: int, batch_size: int) -> int:
        """Host memory the offloaded checkpointed inputs take (pinned), per GPU."""
        if not (self.offload and self.checkpointing):
            return 0
        c, _ = self.counts(seq_len, batch_size)
        return self.shape.num_layers * self.checkpoint.bytes(*c)

    def peak(self, seq_len: int, batch_size: int, overhead: Overhead = DEFAULT_OVERHEAD) -> int:
        """Peak bytes per GPU (the search's fast path; equals ``estimate(...).peak_bytes``: the
        overhead grows with the tensors, so the worst moment's tensors decide)."""
        tensors = max(sum(parts) for _, parts in self.moments(seq_len, batch_size))
        return overhead.device_used(tensors) if self.cuda else tensors


_TEMPLATES: dict[tuple, Template] = {}


_SIZES = ("seq_len", "batch_size", "gpus", "assumed")


def _key(shape: ModelShape, st: TrainingSetup) -> tuple:
    # everything but the sizes the template is evaluated at
    return (shape, st.checkpointing, st.uses_foreach, *(getattr(st, n) for n in st._fields if n not in _SIZES))


def template(shape: ModelShape, setup: TrainingSetup) -> Template:
    """The cached sequence- and batch-independent part of the estimate for ``shape`` and ``setup``."""
    key = _key(shape, setup)
    found = _TEMPLATES.get(key)
    if found is not None:
        return found
    m = setup.method
    groups = m.tensors(shape, setup)
    forms = act.activation_forms(shape, setup)
    outside, outside_seq, head_saved = act.outside_form(shape, setup)
    tied_extra = 0
    if m.trains_base and shape.tie_word_embeddings:
        tied_extra = nbytes(shape.embedding_params, setup.weight_dtype)
    L = shape.num_layers
    trainable = [g for g in groups if g.trainable]
    # gradients that exist when backward reaches the layers: the head's, the final norm's, and a
    # tied embedding's (it is the head); embeddings, positions and prompt encoders come last
    # (a tied head's gradient is a temporary until the embedding's backward sums into it: tied_extra)
    head_labels = ("lm_head.", shape.final_norm.name + ".")
    grad_per = (lambda g: 4 * g.elements) if setup.master_weights else (lambda g: g.data_bytes())
    layer_grads = sum(grad_per(g) for g in trainable if g.per_layer(L))
    mlp_names = tuple(x.name + "." for x in shape.matrices if x.role in _MLP_ROLES)
    mlp_grads = sum(grad_per(g) for g in trainable if g.per_layer(L) and g.label.startswith(mlp_names)) if mlp_names else 0
    head_grads = sum(grad_per(g) for g in trainable if g.label.startswith(head_labels))
    r = 4 if setup.mixed else setup.activation_bytes
    head_trains = m.trains_base or "lm_head" in setup.modules_to_save
    in_backward: tuple[int, int] = ()
    if setup.optimizer_in_backward and trainable:
        one = max(grad_per(g) // g.count for g in trainable)
        biggest = max(trainable, key=lambda g: g.data_bytes() // g.count)
        step = opt.optimizer_temporaries([TensorGroup(biggest.label, 1, biggest.numel, biggest.storage, True)], setup)
        in_backward = (one, step)
    # the final hidden states (lm_head's input), and what the method keeps in the model's output
    forward_held = Size(token=r * shape.hidden_size) + m.output_holds(shape, setup)
    mlp_side = m.mlp_first_gradients(shape, setup, layer_grads // L)
    input_leaf = Size()
    # with checkpointing transformers makes the embedding's output require grad; where virtual
    # tokens are concatenated after it or learned positions are added to it, that output is a leaf
    # apart from layer 0's input (a trained embedding's output has a grad_fn: no separate leaf then)
    if setup.checkpointing and not (m.trains_base or m.embedding_trains(setup)) and (setup.virtual_tokens or shape.position_embeddings):
        per = r * shape.hidden_size
        input_leaf = Size(token=per, batch=-per * setup.virtual_tokens)
    if setup.checkpointing and shape.dropout > 0:
        # the embedding dropout's mask (its input needs a gradient under checkpointing)
        input_leaf = input_leaf + Size(token=shape.hidden_size * (1 if setup.device == "cuda" else r))
    t = Template(
        shape=shape,
        method=m,
        groups=tuple(groups),
        weights=wt.weights(groups),
        quant_state=wt.quantization_state(groups, setup.double_quant),
        gradients=opt.gradients(groups, setup),
        optimizer_states=opt.optimizer_states(groups, setup),
        optimizer_temporaries=opt.optimizer_temporaries(groups, setup, shape.num_layers),
        tied_extra=tied_extra,
        head_gradients=head_grads,
        early_gradients=m.early_gradients(shape, setup),
        transients=forms.transients,
        head_backward=m.head_backward_temporaries(shape, setup),
        forward_held=forward_held,
        prompt_encoder=m.encoder_form(shape, setup).const,
        mlp_side_gradients=mlp_side,
        head_saved=head_saved,
        top_freed=act.top_layer_freed(shape, setup),
        top_gradients=mlp_side,
        layer_temps=act.layer_backward_temporaries(shape, setup),
        attention_temps=act.attention_backward_temporaries(shape, setup),
        eager_masks=shape.eager_mask_kinds if setup.attention == "eager" else 0,
        input_leaf=input_leaf,
        layer_gradients=layer_grads // L,
        mlp_gradients=mlp_grads // L,
        forms=forms,
        checkpoint=forms.checkpoint,
        outside=outside,
        outside_seq=outside_seq,
        a=setup.activation_bytes,
        loss=lg.loss_model(shape, setup, head_trains),
        **lg.loss_coefficients(shape, setup),
        checkpointing=setup.checkpointing,
        cuda=setup.device == "cuda",
        virtual_tokens=setup.virtual_tokens,
        prefix_tokens=setup.prefix_tokens,
        total_params=wt.total_params([g for g in groups if not g.added]),
        trainable_params=wt.trainable_params(groups),
        saved_file_bytes=wt.saved_file_bytes(groups, full=m.trains_base) + m.extra_file_bytes(shape, setup),
        padding_free=setup.packing == "padding-free",
        in_backward=in_backward,
        offload=setup.activation_offload,
        paged_states=opt.paged_state_bytes(groups, setup),
    )
    if len(_TEMPLATES) > 4096:
        _TEMPLATES.clear()
    _TEMPLATES[key] = t
    return t


@frozen
class Estimate:
    model: ModelEntry
    setup: TrainingSetup
    method: Method
    total_params: int
    trainable_params: int
    phases: dict[str, MemoryBreakdown]
    peak_phase: str
    saved_file_bytes: int
    layer_activation_bytes: tuple[int, int]   # layer 0, later layers (without checkpointing)
    overhead: Overhead = DEFAULT_OVERHEAD
    groups: tuple[TensorGroup, ...] = ()       # every tensor of the trained model
    moments: tuple[tuple[str, MemoryBreakdown], ...] = ()  # every candidate peak, tensors only
    host_bytes: int = 0                        # offloaded activations in pinned host memory (per GPU)
    paged_state_bytes: int = 0                 # optimizer states in CUDA unified memory (not in allocated)

    @property
    def allocated_bytes(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` will say (a paged optimizer's states are not in it)."""
        return self.overhead.allocated(self.peak.tensors - self.paged_state_bytes)

    @property
    def reserved_bytes(self) -> int:
        """What ``torch.cuda.max_memory_reserved`` will say (a paged optimizer's states are not in it)."""
        return self.overhead.reserved(self.peak.tensors - self.paged_state_bytes)

    @property
    def device_used_bytes(self) -> int:
        """What nvidia-smi / NVML will say (CUDA context included); equals peak_bytes on CUDA."""
        return self.overhead.device_used(self.peak.tensors)

    @property
    def band_bytes(self) -> int:
        """The calibration's uncertainty on the device-used figure, in bytes."""
        return int(self.device_used_bytes * self.overhead.band_fraction)

    @property
    def peak(self) -> MemoryBreakdown:
        return self.phases[self.peak_phase]

    @property
    def peak_bytes(self) -> int:
        return self.peak.total

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0


def estimate(model: ModelEntry, setup: TrainingSetup, overhead: Overhead = DEFAULT_OVERHEAD) -> Estimate:
    """Estimate one training configuration of ``model`` (see the module docstring).

    ``overhead``: the framework-overhead quantities (a calibration's, or the documented defaults).
    """
    t = template(model.shape, setup)
    raw = t.phases(setup.seq_len, setup.batch_size, overhead)
    phases = {name: MemoryBreakdown(*raw[name]) for name in PHASES}
    peak_phase = max(PHASES, key=lambda p: phases[p].total)
    c, _ = t.counts(setup.seq_len, setup.batch_size)
    return Estimate(
        model=model,
        setup=setup,
        method=t.method,
        total_params=t.total_params,
        trainable_params=t.trainable_params,
        phases=phases,
        peak_phase=peak_phase,
        saved_file_bytes=t.saved_file_bytes,
        layer_activation_bytes=tuple(f.bytes(*c) for f in (t.forms.at(c[0] // max(setup.batch_size, 1))[0],
                                                            t.forms.at(c[0] // max(setup.batch_size, 1))[2])),
        overhead=overhead,
        groups=t.groups,
        moments=tuple((p, MemoryBreakdown(*parts)) for p, parts in t.moments(setup.seq_len, setup.batch_size)),
        host_bytes=t.host_bytes(setup.seq_len, setup.batch_size),
        paged_state_bytes=t.paged_states,
    )
