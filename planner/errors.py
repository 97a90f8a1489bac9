"""The one error type a user sees: a clear line, exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class PlanError(ValueError):
    """Bad input: an unknown name, a malformed config, an impossible setting.

    The message is one line that names the problem and, where there is a closed set, the valid
    choices. The command line prints it and exits with code 2.
    """


def unknown_choice(
    what: str, given: str, choices: Iterable[str], limit: int = 40, also_matching: Iterable[str] = ()
) -> PlanError:
    """Build the error for a name that is not in a closed set, with close matches first.

    ``also_matching`` are accepted spellings (aliases) searched for close matches but not listed.
    """
    import difflib

    choices = sorted(set(choices))
    close = difflib.get_close_matches(str(given).lower(), sorted(set(choices) | set(also_matching)), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(choices[:limit]) + (", ..." if len(choices) > limit else "")
    return PlanError(f"unknown {what} {given!r}.{hint} Valid: {shown}")
