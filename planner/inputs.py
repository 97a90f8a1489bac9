"""Every file that comes in, read bounded and typed: one clear line naming the file (and the line or
field) for anything wrong with it, never a traceback, never an unbounded read.

Limits: a JSON file at most ``MAX_JSON_BYTES`` and nested at most ``MAX_DEPTH`` levels; a CSV or
JSON Lines file at most ``MAX_TABLE_BYTES``. Only regular files are read: a folder, a device
(``/dev/zero``) or a pipe is refused by name before a byte is read, so nothing waits or fills memory.
Standard input is not read (``-`` is refused, saying so).
"""

from __future__ import annotations

import errno
import json
import os
import stat

from fitplan.errors import PlanError

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

MAX_JSON_BYTES = 16 * 2**20     # a config.json, a calibration file
MAX_TABLE_BYTES = 256 * 2**20   # published rows, validation records
MAX_DEPTH = 64                  # nesting of a JSON document


def _stat(path: str, what: str) -> os.stat_result:
    if path == "-":
        raise PlanError(f"{what} '-': standard input is not read; give the path of a file")
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise PlanError(f"{what} {path}: a symbolic link to a file that does not exist") from None
        raise PlanError(f"{what} {path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PlanError(f"{what} {path}: symbolic link loop") from None
        raise PlanError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def read_bytes(path: str, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    path = os.fspath(path)
    st = _stat(path, what)
    if stat.S_ISDIR(st.st_mode):
        raise PlanError(f"{what} {path}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise PlanError(f"{what} {path}: not a regular file (a device, a pipe or a socket); give a file")
    if st.st_size > limit:
        raise PlanError(f"{what} {path}: {st.st_size:,} bytes, more than the {limit:,} a {what} may have")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise PlanError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise PlanError(f"{what} {path}: more than the {limit:,} bytes a {what} may have")
    return data


def read_text(path: str, what: str, limit: int) -> str:
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{what} {path}: not UTF-8 text (byte {exc.start:,} is {data[exc.start]:#04x})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (a scalar is 0), without recursion."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if level > MAX_DEPTH:
                return level
        children = item.values() if isinstance(item, dict) else item
        stack.extend([(c, level + 1) for c in children if isinstance(c, (dict, list))])
    return deepest


def parse_json(text: str, what: str, where: str) -> Any:
    """A JSON document (``where`` names it in messages: a path, or a path and line)."""
    if not text.strip():
        raise PlanError(f"{what} {where}: the file is empty")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise PlanError(f"{what} {where}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise PlanError(f"{what} {where}: not valid JSON ({exc})") from None
    # a document with fewer brackets than the limit cannot nest beyond it (counting is far cheaper)
    if text.count("{") + text.count("[") > MAX_DEPTH and depth(value) > MAX_DEPTH:
        raise PlanError(f"{what} {where}: nested deeper than {MAX_DEPTH} levels")
    return value


def read_json(path: str, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file: bounded in size and depth, UTF-8, standard JSON (no NaN)."""
    return parse_json(read_text(path, what, limit), what, os.fspath(path))
