"""The ``plan`` command's entry point (also ``python -m fitplan``), and its one error path.

The main job, ``plan --model ... --gpu ...`` with plain ``--option value`` arguments, is parsed here
from the same option table as the click command (``fitplan.request.OPTIONS``) so that a cold start

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any
does not pay for importing click; anything else (a subcommand, ``--help``, ``--version``, an
``--option=value``, a repeated or unknown option, a value that is not plainly of its type) goes to
the click command (``fitplan.cli``), which parses it in full and words its errors. Both paths make
the same ``Request`` (a test holds them to it) and call the same ``execute``.

Every failure a user can cause ends here as one line on standard error and exit code 2: bad input
(``PlanError``, click's usage errors), a standard output that cannot be written (a closed pipe, a
full disk), an interrupt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from fitplan.errors import PlanError

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

# the root command's options beyond the request's: the picture and the JSON view
_OUTPUT_VALUE = {"--plot": "plot", "--format": "format"}
_OUTPUT_FLAG = {"--json": "json"}


def parse_plain(args: Sequence[str]) -> tuple[Any, str | None, bool, str | None] | None:
    """(request, picture path, JSON?, table format) for plain arguments of the main job, or None for
    click to parse."""
    from fitplan.request import OPTIONS, Request

    by_flag: dict[str, tuple[str, str, Any]] = {}
    for o in OPTIONS:
        flag = "--" + o.field.replace("_", "-")
        if o.kind == "switch":
            by_flag[flag] = (o.field, "switch", True)
            by_flag["--no-" + flag[2:]] = (o.field, "switch", False)
        elif o.kind == "flag":
            by_flag[flag] = (o.field, "flag", True)
        else:
            by_flag[flag] = (o.field, o.kind, None)
    values: dict[str, Any] = {}
    plot, as_json, fmt, seen = None, False, None, set()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in seen:
            return None                      # repeated: click's rules decide
        seen.add(arg)
        if arg in _OUTPUT_FLAG:
            as_json = True
            i += 1
            continue
        if arg in _OUTPUT_VALUE or arg in by_flag and by_flag[arg][1] in ("str", "int", "float"):
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                return None
            text = args[i + 1]
            if arg == "--plot":
                plot = text
            elif arg == "--format":
                fmt = text
            else:
                field, kind, _ = by_flag[arg]
                if field in values:
                    return None
                if kind == "int":
                    if not text.isdigit():
                        return None
                    values[field] = int(text)
                elif kind == "float":
                    try:
                        values[field] = float(text)
                    except ValueError:
                        return None
                else:
                    values[field] = text
            i += 2
            continue
        if arg in by_flag:
            field, _, value = by_flag[arg]
            if field in values:
                return None
            values[field] = value
            i += 1
            continue
        return None                          # a subcommand, --help, --opt=value, a typo: click's
    if "model" not in values:
        return None
    return Request(**values), plot, as_json, fmt


def execute(request: Any, plot: str | None, as_json: bool, fmt: str | None = None) -> None:
    """Plan the request and write its view (and picture)."""
    from fitplan.planning import plan

    if fmt is not None:
        from fitplan.render import FORMATS

        if fmt.strip().lower() not in FORMATS:
            from fitplan.errors import unknown_choice

            raise unknown_choice("table format", fmt, FORMATS)
        fmt = fmt.strip().lower()
        if as_json:
            raise PlanError("--json and --format are two views; give one")
    if plot:
        from fitplan.plot import check_path

        check_path(plot)  # a bad name fails before the work, not after
    result = plan(request)
    if plot:
        from fitplan.plot import plan_chart

        plan_chart(result, plot)
    if as_json:
        write(result.to_json())
    else:
        from fitplan.render import render

        write(render(result, fmt or "text"))


def write(text: str) -> None:
    """Write a line of output (an OSError here is reported by ``guarded``)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


_JSON = {"on": False}   # whether the command asked for JSON (the error goes there too)


def fail(message: str, code: int = 2) -> int:
    """One line on standard error (and, under --json, a JSON object on standard output); the code."""
    message = " ".join(str(message).split())   # one line, whatever the message held
    try:
        sys.stderr.write(f"plan: error: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass
    if _JSON["on"]:
        import json

        try:
            sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
            sys.stdout.flush()
        except OSError:
            _silence_stdout()
    return code


def _silence_stdout() -> None:
    """After a failed write, point standard output at nothing, so that the flush at exit is quiet."""
    import os

    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - kept open until exit
    except OSError:
        pass


def guarded(work: Callable[[], Any]) -> int:
    """Run ``work``; every failure a user can cause becomes one line on standard error."""
    try:
        work()
    except PlanError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # the reader went away (plan ... | head): nothing more to say to it
        _silence_stdout()
        _JSON["on"] = False
        return fail("standard output was closed before the answer was written")
    except OSError as exc:
        if exc.filename is None and getattr(exc, "errno", None) is not None:
            _silence_stdout()
            _JSON["on"] = False
            return fail(f"cannot write the output ({exc.strerror or exc})")
        return fail(f"{exc.filename}: {exc.strerror or exc}")
    except RecursionError:
        return fail("the input nests too deeply to read")
    except MemoryError:
        return fail("out of memory while planning; the input is too large")
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: one line, and the traceback on request
        import os

        if type(exc).__module__.startswith("click") or os.environ.get("FITPLAN_DEBUG"):
            raise   # click's usage errors: click prints them and exits 2
        return fail(f"internal error ({type(exc).__name__}: {exc}); please report it with the command "
                    "(FITPLAN_DEBUG=1 shows the traceback)", 1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _JSON["on"] = "--json" in args
    try:
        parsed = parse_plain(args)
    except PlanError as exc:
        return fail(str(exc))
    if parsed is None:
        from fitplan.cli import main as click_main

        return click_main(args)
    return guarded(lambda: execute(*parsed))


def run() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
