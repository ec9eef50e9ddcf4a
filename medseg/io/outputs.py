"""The one output rule: every file a command writes is claimed here before the first write.

A claimed path must

* lie inside the output folder the command was given (after resolving symlinks and ``..``),
* not be any input of the command (same path, or the same file through another name: samefile),
* not be claimed by another output of the same batch (two scans, or a scan's mask and another
  scan's lesion map, never share a file).

The whole batch is claimed first, so a violation stops the command before anything is written.
:func:`medseg.io.names.check_name` is the rule for the names that build these paths; this module
checks the paths themselves, whatever the names were.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medseg.errors import MedsegError


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OutputPlan:
    """The files one command run will write into ``root``.

    Args:
        root: the output folder (``--out``); it need not exist yet.
        inputs: every file the command reads (scans, labels, lists, checkpoints).
        option: the option that named ``root``, for messages.
    """

    def __init__(self, root: Path | str, inputs: Iterable[Path | str] = (), option: str = "--out") -> None:
        self.root = Path(root)
        self.real_root = Path(os.path.realpath(self.root))
        self.option = option
        self.input_paths = {Path(os.path.realpath(p)): Path(p) for p in inputs}
        self.input_ids = {ident: p for real, p in self.input_paths.items() if (ident := _identity(real)) is not None}
        self.claims: dict[Path, str] = {}

    def claim(self, name: str | Path, owner: str) -> Path:
        """The path ``root/name`` for ``owner`` (e.g. ``"mask of scans/a.nii.gz"``).

        Raises:
            MedsegError: the path leaves the output folder, is an input, or is already claimed
                by another owner (exit code 2, before anything is written).
        """
        path = self.root / name
        real = Path(os.path.realpath(path))
        if real != self.real_root and self.real_root not in real.parents:
            linked = Path(os.path.abspath(path)) != real  # a link on the way, not the name, leads out
            fix = f"remove the link {path}" if linked else "rename the case or class so that it is a plain file name"
            raise MedsegError(f"{owner}: would be written to {real}, outside {self.option} {self.root}; {fix}")
        source = self.input_paths.get(real) or self.input_ids.get(_identity(real) or (-1, -1))
        if source is not None:
            raise MedsegError(
                f"{owner}: would overwrite the input {source}; pick an {self.option} folder "
                "that holds none of the inputs"
            )
        other = self.claims.get(real)
        if other is not None and other != owner:
            raise MedsegError(
                f"{other} and {owner}: both would be written as {path}; rename one of the inputs "
                f"(or write them into different {self.option} folders)"
            )
        self.claims[real] = owner
        return path


def refuse_input_folder(out: Path | str, folders: Iterable[Path | str], option: str = "--out") -> None:
    """An output folder that is also a folder of inputs would mix outputs into the inputs (the
    next run on that folder would read masks as scans): refuse it.

    Raises:
        MedsegError: naming the folder and the fix.
    """
    real = os.path.realpath(out)
    for folder in folders:
        if os.path.realpath(folder) == real:
            raise MedsegError(
                f"{option} {out}: is the folder of the input scans; write the outputs into another "
                f"folder, e.g. {option} {Path(out).name}_masks"
            )


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` on its directory descriptor), so
    processes writing into one output folder take turns at a read-modify-write such as merging
    ``summary.csv``. Written by hand because a lock *file* (the filelock package) would leave a
    file in the user's output folder; a directory's flock leaves nothing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
