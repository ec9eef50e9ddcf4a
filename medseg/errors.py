"""The one exception type for user mistakes.

A :class:`MedsegError` carries a message meant for a person: it names the file or key at fault
and says how to fix it. The CLI prints it on one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class MedsegError(Exception):
    """A user-facing error (bad config, missing or corrupt file, mismatched image/label).

    Args:
        message: one line naming the file or key and the fix.
        exit_code: process exit code the CLI uses (2 = bad input, 1 = some items failed).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def yaml_syntax_error(path: object, exc: Exception) -> MedsegError:
    """A YAML parse error of ``path`` as one line with the line and column it stopped at; a value
    starting with ``${`` inside ``[...]`` (a flow sequence) is the usual cause in case lists."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
    hint = "; quote values that start with ${ inside [...]" if "flow" in str(exc) else ""
    return MedsegError(f"{where}: not a readable YAML file ({str(exc).splitlines()[0]}); fix its syntax{hint}")
