"""Units: every memory figure is an int of bytes until a person reads it, and then says its unit.

GiB is 2**30 bytes and MiB 2**20 (binary units, labelled as such); GB, where a source uses it, is 10**9.
"""

from __future__ import annotations

GIB = 2**30
MIB = 2**20
GB = 10**9


def gib(n: int) -> str:
    """Bytes as GiB with one decimal (``gib(3 * 2**30) == "3.0"``)."""
    return f"{n / GIB:.1f}"


def mib(n: int | None) -> str:
    """Bytes as MiB with one decimal and thousands separators; ``-`` for None."""
    return "-" if n is None else f"{n / MIB:,.1f}"


def count(n: int) -> str:
    """A parameter count in short form: 1.23B, 4.59M, 20.48K, 512."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
