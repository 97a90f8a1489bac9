"""Bytes as linear forms in the sizes of one step, so that one trace serves every batch and sequence.

A ``Size`` holds bytes per token (``T = batch x (seq + virtual tokens)``), per attention score
(``batch x heads x seq x kv_seq``), per mask element (``seq x kv_seq``), per batch mask element
(``batch x seq x kv_seq``), per sequence of the batch, and a constant.
"""

from __future__ import annotations


class Size:
    """Bytes as a linear form: per token, per attention score, per mask element, and constant.

    (A plain class with slots: the layer trace makes thousands of these per model.)
    """

    __slots__ = ("token", "score", "mask", "const", "bmask", "batch")

    def __init__(self, token: int = 0, score: int = 0, mask: int = 0, const: int = 0, bmask: int = 0, batch: int = 0):
        self.token = token
        self.score = score
        self.mask = mask
        self.const = const
        self.bmask = bmask    # per batch x seq x kv_seq (a materialised attention mask)
        self.batch = batch    # per sequence of the batch (prefix keys and values)

    def _key(self) -> tuple[int, ...]:
        return (self.token, self.score, self.mask, self.const, self.bmask, self.batch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Size(" + ", ".join(f"{n}={v}" for n, v in zip(self.__slots__, self._key()) if v) + ")"

    def __add__(self, other: Size) -> Size:
        return Size(
            self.token + other.token, self.score + other.score, self.mask + other.mask, self.const + other.const,
            self.bmask + other.bmask, self.batch + other.batch,
        )

    def __sub__(self, other: Size) -> Size:
        return self + other.scaled(-1)

    def scaled(self, n: int) -> Size:
        """The form ``n`` times (``n`` layers alike)."""
        return Size(self.token * n, self.score * n, self.mask * n, self.const * n, self.bmask * n, self.batch * n)

    def bytes(self, tokens: int, scores: int, mask: int, bmask: int = 0, batch: int = 0) -> int:
        return (
            self.token * tokens + self.score * scores + self.mask * mask + self.const
            + self.bmask * bmask + self.batch * batch
        )
