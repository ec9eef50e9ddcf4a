"""The one rule for names that come from data and become parts of file names.

Case ids (from case lists, ``dataset.json``, file stems), lesion class names (from configs and
checkpoints) and channel names end up in output file names (``<case>.nii.gz``,
``<case>_<class>_lesions.csv``). A name that holds a path separator, or is ``..``, would write
outside the output folder; one that starts with ``.`` would hide the file or collide with medseg's
own temporary files; one that starts with ``-`` reads as an option in a shell. Such names are refused
where they are read, with one line naming the source.
"""

from __future__ import annotations

import re

from medseg.errors import MedsegError

MAX_NAME = 100  # characters; file systems allow 255 bytes and outputs add suffixes such as _lesions.csv
_CHAR = re.compile(r"[\w.+\- ]")  # \w: letters of any script, digits, '_'
_SAFE = re.compile(r"\w([\w.+\- ]*[\w.+\-])?")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be part of a file name, or None when it can.

    Allowed: letters (any script), digits, ``_``, ``-``, ``.``, ``+`` and inner spaces, starting
    with a letter, digit or ``_``, at most :data:`MAX_NAME` characters (so never ``.`` or ``..``).
    """
    if not isinstance(name, str) or not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long (at most {MAX_NAME})"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if not _SAFE.fullmatch(name):
        bad = sorted({c for c in name if not _CHAR.fullmatch(c)})
        return (
            f"contains {', '.join(repr(c) for c in bad[:5])}"
            if bad
            else "starts with '.', '-' or a space, or ends with a space"
        )
    return None


def check_name(name: str, what: str, source: str) -> str:
    """``name`` unchanged when it is safe as part of a file name (see :func:`name_problem`).

    Args:
        name: the name read from data.
        what: what it is, e.g. ``"case_id"`` or ``"class name"``.
        source: the file it was read from.

    Raises:
        MedsegError: one line naming ``source``, the name and the fix (exit code 2).
    """
    problem = name_problem(name)
    if problem is not None:
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60]) + "…"
        raise MedsegError(
            f"{source}: {what} {shown} {problem}; use letters, digits, '_', '-', '.' and '+' only "
            "(names become output file names)"
        )
    return name
