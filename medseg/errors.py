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
