"""Trainable tokens (peft's ``TrainableTokensConfig``): only the embedding rows of chosen token ids
train, as peft 0.21 builds it. ``--num-token-indices`` says how many ids (peft's ``token_indices``,
a list; memory depends only on its length).

Tensors (``tuners/trainable_tokens/layer.py`` 157-158): ``trainable_tokens_delta`` (n x h, fp32
after ``autocast_adapter_dtype``) and the ``trainable_tokens_original`` buffer (n x h, fp32), on the
input embedding; with tied embeddings the head gets a tied layer sharing the delta (``model.py``
55-75). The adapter file holds the delta once per wrapped layer: twice on a tied model.

Forward (``layer.py`` 219-276): every call builds ``W' = W.index_copy(0, idx, delta)``, a full
``V x h`` copy in the weight's dtype; the embedding's ``F.embedding(ids, W')`` keeps only the ids,
so that copy is a temporary; a tied head's ``F.linear(x, W')`` saves its own ``W'`` (``V x h``)
and its input (``T x h``). The embedding's output depends on the delta, so the whole backward runs
down to layer 0 and layer 0's input needs a gradient.

A tied head's backward makes the dense ``V x h`` gradient of its ``W'`` beside every saved
activation (``head_backward_temporaries``).

Known limitations: the dense ``V x h`` gradient in the embedding's backward (the last step of
backward, where little else is alive) is not counted.
"""

from __future__ import annotations

from fitplan.memory.forms import Size
from fitplan.methods.base import ADAPTER_DTYPE, Method, TensorGroup

TYPE_CHECKING = False  # typing is not imported at run time: the cold start

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from fitplan.architecture import ModelShape
    from fitplan.memory.activations import Trace, TraceTensor
    from fitplan.setup import TrainingSetup


class TrainableTokens(Method):
    name = "trainable-tokens"
    title = "trainable tokens"
    strength = 16
    options = frozenset({"num_token_indices"})
    input_requires_grad = True
    trains_embedding = True

    def added_tensors(self, shape: ModelShape, setup: TrainingSetup) -> list[TensorGroup]:
        n, h = setup.num_token_indices, shape.hidden_size
        return [
            TensorGroup("embed_tokens.trainable_tokens_delta", 1, n * h, ADAPTER_DTYPE, True, True),
            TensorGroup("embed_tokens.trainable_tokens_original", 1, n * h, ADAPTER_DTYPE, False, True, in_file=False),
        ]

    def extra_file_bytes(self, shape: ModelShape, setup: TrainingSetup) -> int:
        """A tied head's adapter writes the delta again (``lm_head.trainable_tokens_delta``)."""
        return 4 * setup.num_token_indices * shape.hidden_size if shape.tie_word_embeddings else 0

    def trace_head(self, trace: Trace, y: TraceTensor) -> None:
        shape = trace.shape
        if shape.tie_word_embeddings:
            trace.save(y)                                              # F.linear(x, W') saves x ...
            trace.save_size(Size(const=shape.vocab_size * shape.hidden_size * trace.w))   # ... and W'

    def head_backward_temporaries(self, shape: ModelShape, setup: TrainingSetup) -> Size:
        """A tied head's backward: the dense ``V x h`` gradient of ``W'`` and its input's gradient."""
        if not shape.tie_word_embeddings:
            return Size()
        a = 4 if setup.mixed else setup.activation_bytes
        return Size(token=a * shape.hidden_size, const=shape.vocab_size * shape.hidden_size
                    * (4 if setup.weight_dtype == "fp32" else 2))

    def peft_config(self, shape: ModelShape, setup: TrainingSetup) -> Any:
        import peft

        return peft.TrainableTokensConfig(token_indices=list(range(setup.num_token_indices)))


TRAINABLE_TOKENS = TrainableTokens()
