"""The estimate of one training step: components, phases, the peak and what it needs to fit.

Phases of the second training step (the first has no optimizer state during forward and
backward; its optimizer step equals the second's), each a MemoryBreakdown:

- ``forward``: weights, optimizer states, every layer's saved activations, the loss's saved
  tensors and, at ``log_softmax``, the logits with their fp32 copy;
- ``backward``: the larger of the backward start (the loss's two fp32 gradients beside all
  saved activations), the recomputation of one checkpointed layer (its saved set plus the
  layer's gradient temporaries, about a x T x 2(h + i)), and the end of backward (all
  gradients; with tied embeddings one more embedding-sized gradient being accumulated);
- ``optimizer``: weights, gradients, states and the step's temporaries.

The peak is the largest phase's total; framework overhead is added on a CUDA device.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.architecture import ModelShape
from planner.breakdown import MemoryBreakdown
from planner.catalog import ModelEntry
from planner.dtypes import nbytes
from planner.memory import activations as act
from planner.memory import logits as lg
from planner.memory import optimizer as opt
from planner.memory import overhead as ovh
from planner.memory import weights as wt
from planner.methods import Method, TensorGroup, method as get_method
from planner.setup import TrainingSetup

PHASES = ("forward", "backward", "optimizer")


@dataclass(frozen=True)
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

    @property
    def peak(self) -> MemoryBreakdown:
        return self.phases[self.peak_phase]

    @property
    def peak_bytes(self) -> int:
        return self.peak.total

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0


def _groups(shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
    return get_method(setup.method).tensors(shape, setup)


def _with_overhead(b: MemoryBreakdown, setup: TrainingSetup) -> MemoryBreakdown:
    return MemoryBreakdown(**{**b.to_dict_no_total(), "overhead": ovh.framework_overhead(b.tensors, setup)})


def estimate(model: ModelEntry, setup: TrainingSetup) -> Estimate:
    """Estimate one training configuration of ``model`` (see the module docstring)."""
    shape = model.shape
    m = get_method(setup.method)
    groups = m.tensors(shape, setup)
    W = wt.weights(groups)
    Q = wt.quantization_state(groups, setup.double_quant)
    G = opt.gradients(groups)
    S = opt.optimizer_states(groups, setup)
    A = act.activations(shape, setup)
    outside = act.outside_saved(shape, setup)
    loss = lg.loss_saved(shape, setup)
    a = 4 if setup.compute_dtype == "fp32" else 2
    T = setup.batch_size * (setup.seq_len + setup.virtual_tokens)

    forward = MemoryBreakdown(
        weights=W, quantization_state=Q, optimizer_states=S,
        activations=A + outside, logits_loss=loss + lg.logits_forward_transient(shape, setup),
    )
    backward_start = MemoryBreakdown(
        weights=W, quantization_state=Q, optimizer_states=S,
        activations=A + outside, logits_loss=loss + lg.logits_backward_transient(shape, setup),
    )
    candidates = [backward_start]
    if setup.checkpointing:
        layer_temps = a * T * 2 * (shape.hidden_size + shape.intermediate_size)
        candidates.append(
            MemoryBreakdown(
                weights=W, quantization_state=Q, optimizer_states=S, gradients=G,
                activations=A + outside + act.recompute_bytes(shape, setup), temporaries=layer_temps,
            )
        )
    tied_extra = 0
    if setup.method == "full" and shape.tie_word_embeddings:
        tied_extra = nbytes(shape.embedding_params, setup.weight_dtype)
    candidates.append(
        MemoryBreakdown(weights=W, quantization_state=Q, optimizer_states=S, gradients=G, temporaries=tied_extra)
    )
    backward = max(candidates, key=lambda b: b.total)
    optimizer = MemoryBreakdown(
        weights=W, quantization_state=Q, gradients=G, optimizer_states=S,
        temporaries=opt.optimizer_temporaries(groups, setup),
    )
    phases = {
        name: _with_overhead(b, setup) for name, b in zip(PHASES, (forward, backward, optimizer))
    }
    peak_phase = max(PHASES, key=lambda p: phases[p].total)
    return Estimate(
        model=model,
        setup=setup,
        method=m,
        total_params=wt.total_params([g for g in groups if not g.added]),
        trainable_params=wt.trainable_params(groups),
        phases=phases,
        peak_phase=peak_phase,
        saved_file_bytes=wt.saved_file_bytes(groups, full=setup.method == "full"),
        layer_activation_bytes=act.layer_bytes(shape, setup),
    )
