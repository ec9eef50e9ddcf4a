"""The one exception type for user mistakes.

A :class:`MedsegError` carries a message meant for a person: it names the file or key at fault
and says how to fix it. The CLI prints it on one line and exits non-zero, without a traceback.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sized


class MedsegError(Exception):
    """A user-facing error (bad config, missing or corrupt file, mismatched image/label).

    Args:
        message: one line naming the file or key and the fix.
        exit_code: process exit code the CLI uses (2 = bad input, 1 = some items failed).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# A bounded repr: at most 3 levels deep, 6 items per container and 40 characters per string, so
# the text of a YAML alias bomb (billions of shared references) costs a few hundred element visits.
_BOUNDED = reprlib.Repr()
_BOUNDED.maxlevel = 3
_BOUNDED.maxlist = _BOUNDED.maxtuple = _BOUNDED.maxset = _BOUNDED.maxfrozenset = _BOUNDED.maxdeque = (
    _BOUNDED.maxarray
) = 6
_BOUNDED.maxdict = 6
_BOUNDED.maxstring = _BOUNDED.maxother = 40
_BOUNDED.maxlong = 40


def clip(value: object, limit: int = 200) -> str:
    """``repr(value)`` for echoing user input in a message, at most ``limit`` characters plus a
    note: a longer text is cut and ends with ``… (N characters)`` (strings and bytes: their
    length) or ``… (N items)`` (other containers). Never builds the full repr: strings are sliced
    first and containers are walked with a bounded :class:`reprlib.Repr` (3 levels, 6 items each,
    elided with ``...``), so a huge or deeply shared structure costs the same as a small one.

    Args:
        value: anything taken from a user's file or command line.
        limit: characters of repr kept before the note.

    Returns:
        One line (newlines in the input appear escaped, as in ``repr``).
    """
    if isinstance(value, (str, bytes)):
        text = repr(value[: limit + 1])
        return text if len(value) <= limit and len(text) <= limit else f"{text[:limit]}… ({len(value)} characters)"
    try:
        text = _BOUNDED.repr(value)
    except Exception:  # a repr that raises (e.g. an int over Python's 4300-digit limit): name the type
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    try:
        size = f" ({len(value)} items)" if isinstance(value, Sized) else ""
    except Exception:  # a broken __len__ of a foreign object
        size = ""
    return f"{text[:limit]}…{size}"


def shorten(text: str, limit: int = 200) -> str:
    """``text`` itself (no quotes), cut after ``limit`` characters with ``… (N characters)``: for
    names and paths taken from user input, where :func:`clip`'s quotes would be noise."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def yaml_syntax_error(path: object, exc: Exception) -> MedsegError:
    """A YAML parse error of ``path`` as one line with the line and column it stopped at; a value
    starting with ``${`` inside ``[...]`` (a flow sequence) is the usual cause in case lists."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
    hint = "; quote values that start with ${ inside [...]" if "flow" in str(exc) else ""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return MedsegError(f"{where}: not a readable YAML file ({shorten(first)}); fix its syntax{hint}")


def missing_extra(option: str, packages: str, extra: str) -> MedsegError:
    """The one-line error of an ``option`` whose optional ``packages`` (an extra of medseg) are not
    installed, naming the ``pip install 'medseg[extra]'`` that brings them."""
    return MedsegError(
        f"{option}: needs {packages}, which are not installed; install the extra: pip install 'medseg[{extra}]'"
    )
