"""Atomic writes: a temporary file in the target folder, renamed into place when complete, so an
interrupted write leaves nothing half-written behind.

The one writer every output goes through (masks, probability maps, checkpoints, CSV and JSON
tables, plans). The finished file gets the permissions a plain ``open(path, "w")`` would have
given it (``0o666`` less the umask): ``mkstemp`` creates its temporary file with mode 0600, and a
rename keeps that mode, which would leave masks and checkpoints unreadable to colleagues on a
shared server.

A temporary file is named after its owner, ``.<name>.partial-<pid>@<host>.<random><suffix>``, and
is flushed to disk (``fsync``) before the rename, the folder after it: a power loss leaves the
old file or the new one, never an empty one. :func:`remove_partials` deletes the temporary files
of processes that are gone (a ``kill -9`` leaves them), never one that another process (another
``medseg predict`` on the same ``--out``, another fold) is still writing.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medseg.io.paths import IMAGE_SUFFIXES

PARTIAL = "partial-"  # marks a file being written; renamed into place when complete
OWNER = re.compile(rf"\.{PARTIAL}(\d+)@([A-Za-z0-9-]+)\.")  # .partial-<pid>@<host>. in a temporary file's name
STALE_S = 24 * 3600  # a temporary file untouched this long is stale whoever made it (another host's, a reused pid)


def _umask() -> int:
    """The process umask (reading it means setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    """This machine's name as it goes into a temporary file's name (letters, digits, ``-``)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def _fsync(path: Path) -> None:
    """Flush a file, or a folder (its entries: a rename), to disk. Some file systems (network
    mounts) refuse to flush a folder: the rename is done, and then stays as safe as they make it."""
    is_dir = path.is_dir()
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not is_dir:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (named after this process, see the module
    docstring); on success flush it to disk and rename it onto ``path`` with plain-write
    permissions, then flush the folder; on failure delete it. The temporary name keeps the image
    suffix, so writers that choose the format by suffix (nibabel, SimpleITK) still do.

    Raises:
        OSError: the folder cannot be made or written (what the writer raises passes through).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(s for s in IMAGE_SUFFIXES if path.name.endswith(s))[:7] or path.suffix
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.{PARTIAL}{os.getpid()}@{_host()}.", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _owner_gone(path: Path) -> bool:
    """Whether the process that wrote the temporary file ``path`` is gone: its pid is not running
    on this host, or the file is older than :data:`STALE_S`. A file of another host counts as
    gone only by age; one without an owner in its name (an older medseg's) counts as gone."""
    try:
        if time.time() - path.stat().st_mtime > STALE_S:
            return True
    except FileNotFoundError:  # its owner renamed or deleted it meanwhile
        return False
    owner = OWNER.search(path.name)
    if owner is None:
        return True
    if owner.group(2) != _host():
        return False
    try:
        os.kill(int(owner.group(1)), 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def remove_partials(folder: Path) -> int:
    """Delete the temporary files in ``folder`` whose writer is gone (:func:`_owner_gone`: a
    killed run's); the files other live processes are writing stay. Returns how many were deleted."""
    stale = [p for p in folder.glob(f".*.{PARTIAL}*") if p.is_file() and _owner_gone(p)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def remove_partials_below(folder: Path, depth: int | None = None) -> int:
    """:func:`remove_partials` in ``folder`` and its subfolders down to ``depth`` levels (all
    with None). Returns how many files were deleted."""
    if not folder.is_dir():
        return 0
    levels = [folder]
    found = remove_partials(folder)
    while levels and (depth is None or depth > 0):
        levels = [sub for level in levels for sub in _subfolders(level)]
        found += sum(remove_partials(sub) for sub in levels)
        depth = None if depth is None else depth - 1
    return found


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` (not links to folders); none when it cannot be listed."""
    try:
        return [sub for sub in folder.iterdir() if sub.is_dir() and not sub.is_symlink()]
    except OSError:  # unreadable, or removed meanwhile: nothing of ours to clean there
        return []


def write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_csv(rows: Sequence[dict[str, Any]], path: Path, fields: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV atomically; columns ``fields`` or the first row's keys."""
    with atomic_write(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields if fields is not None else rows[0]))
        writer.writeheader()
        writer.writerows(rows)
