"""Frozen record classes without generated code: the planner's value types.

``@frozen`` does what ``@dataclass(frozen=True)`` does for the planner's classes (an ``__init__``
taking the annotated fields in order, with defaults; equality and hashing over the compared fields;
a ``repr``; no assignment after creation; ``__post_init__`` where a class defines it), with methods
shared by every class instead of code compiled for each. On CPython 3.11 a dataclass costs 1-4 ms
to create, and the planner defines about thirty: most of its cold start. Instances are made a
little more slowly (a loop over the fields), which the planner's hot paths, built on plain tuples
and integers, do not feel.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


_MISSING: Any = object()


class _Field:
    __slots__ = ("default", "factory", "compare", "repr")

    def __init__(self, default: Any, factory: Any, compare: bool, repr: bool):  # noqa: A002
        self.default, self.factory, self.compare, self.repr = default, factory, compare, repr


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING, compare: bool = True,
          repr: bool = True) -> Any:  # noqa: A002
    """A field's options, as ``dataclasses.field`` takes them."""
    return _Field(default, default_factory, compare, repr)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    names, defaults = cls._fields, cls._defaults
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, {len(args)} given")
    put = object.__setattr__
    for name, value in zip(names, args):
        put(self, name, value)
    for name in names[len(args):]:
        if name in kwargs:
            put(self, name, kwargs.pop(name))
        elif name in defaults:
            default = defaults[name]
            put(self, name, default() if isinstance(default, _Factory) else default)
        else:
            raise TypeError(f"{cls.__name__}() missing argument {name!r}")
    if kwargs:
        raise TypeError(f"{cls.__name__}() got unexpected argument(s) {', '.join(sorted(kwargs))}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Any):
        self.make = make

    def __call__(self) -> Any:
        return self.make()


def _key(self: Any) -> tuple:
    return tuple(getattr(self, n) for n in type(self)._compared)


def _eq(self: Any, other: Any) -> bool:
    if type(other) is not type(self):
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(_key(self))


def _repr(self: Any) -> str:
    cls = type(self)
    return f"{cls.__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in cls._shown) + ")"


def _setattr(self: Any, name: str, value: Any) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: cannot assign {name!r}")


def frozen(cls: type) -> type:
    """Make ``cls`` a frozen record of its annotated fields (see the module docstring)."""
    names: list[str] = []
    defaults: dict[str, Any] = {}
    compared: list[str] = []
    shown: list[str] = []
    for base in reversed(cls.__mro__[1:]):
        for name in getattr(base, "_fields", ()):
            if name not in names:
                names.append(name)
        defaults.update(getattr(base, "_defaults", {}))
        compared += [n for n in getattr(base, "_compared", ()) if n not in compared]
        shown += [n for n in getattr(base, "_shown", ()) if n not in shown]
    for name in cls.__dict__.get("__annotations__", {}):
        if name.startswith("_") or "ClassVar" in str(cls.__annotations__[name]):
            continue
        value = cls.__dict__.get(name, _MISSING)
        compare = show = True
        if isinstance(value, _Field):
            compare, show = value.compare, value.repr
            value = _Factory(value.factory) if value.factory is not _MISSING else value.default
            if value is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value)
        if value is not _MISSING:
            defaults[name] = value
        elif names and any(n in defaults for n in names):
            raise TypeError(f"{cls.__name__}: field {name!r} without a default follows one with a default")
        if name not in names:
            names.append(name)
        for group, flag in ((compared, compare), (shown, show)):
            if flag and name not in group:
                group.append(name)
    cls._fields, cls._defaults, cls._compared, cls._shown = tuple(names), defaults, tuple(compared), tuple(shown)
    cls.__init__ = _init
    cls.__eq__ = _eq
    cls.__hash__ = _hash
    cls.__repr__ = _repr
    cls.__setattr__ = _setattr
    cls.__delattr__ = _setattr
    return cls


def fields(obj_or_cls: Any) -> tuple[str, ...]:
    """The field names of a frozen record (class or instance), in order."""
    return obj_or_cls._fields


def replace(obj: Any, **changes: Any) -> Any:
    """A copy of ``obj`` with some fields changed (its ``__post_init__`` checks run again)."""
    values = {n: getattr(obj, n) for n in obj._fields}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {', '.join(sorted(unknown))}")
    values.update(changes)
    return type(obj)(**values)


def asdict(obj: Any) -> Any:
    """The record as a dict, nested records, lists and tuples converted too."""
    if hasattr(type(obj), "_fields") and hasattr(type(obj), "_compared"):
        return {n: asdict(getattr(obj, n)) for n in obj._fields}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(x) for x in obj)
    if isinstance(obj, dict):
        return {k: asdict(v) for k, v in obj.items()}
    return obj
