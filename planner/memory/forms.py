"""Bytes as linear forms in the sizes of one step, so that one trace serves every batch and sequence.

A ``Size`` holds bytes per token (``T = batch x (seq + virtual tokens)``), per attention score
(``batch x heads x seq x kv_seq``), per mask element (``seq x kv_seq``), per batch mask element
(``batch x seq x kv_seq``), per sequence of the batch, and a constant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """Bytes as a linear form: per token, per attention score, per mask element, and constant."""

    token: int = 0
    score: int = 0
    mask: int = 0
    const: int = 0
    bmask: int = 0   # per batch x seq x kv_seq (a materialised attention mask)
    batch: int = 0   # per sequence of the batch (prefix keys and values)

    def __add__(self, other: Size) -> Size:
        return Size(
            self.token + other.token, self.score + other.score, self.mask + other.mask, self.const + other.const,
            self.bmask + other.bmask, self.batch + other.batch,
        )

    def bytes(self, tokens: int, scores: int, mask: int, bmask: int = 0, batch: int = 0) -> int:
        return (
            self.token * tokens + self.score * scores + self.mask * mask + self.const
            + self.bmask * bmask + self.batch * batch
        )
