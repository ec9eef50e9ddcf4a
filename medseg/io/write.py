"""Atomic writes: a temporary file in the target folder, renamed into place when complete, so an
interrupted write leaves nothing half-written behind.

The one writer every output goes through (masks, probability maps, checkpoints, CSV and JSON
tables, plans). The finished file gets the permissions a plain ``open(path, "w")`` would have
given it (``0o666`` less the umask): ``mkstemp`` creates its temporary file with mode 0600, and a
rename keeps that mode, which would leave masks and checkpoints unreadable to colleagues on a
shared server.
"""

from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from medseg.io.paths import IMAGE_SUFFIXES

PARTIAL = "partial-"  # marks a file being written; renamed into place when complete


def _umask() -> int:
    """The process umask (reading it means setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` with plain-write
    permissions, on failure delete it. The temporary name keeps the image suffix, so writers
    that choose the format by suffix (nibabel, SimpleITK) still do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(s for s in IMAGE_SUFFIXES if path.name.endswith(s))[:7] or path.suffix
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{PARTIAL}", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partials(folder: Path) -> int:
    """Delete files a killed run left half-written in ``folder``; returns how many."""
    stale = [p for p in folder.glob(f".*.{PARTIAL}*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return len(stale)


def write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_csv(rows: Sequence[dict[str, Any]], path: Path, fields: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV atomically; columns ``fields`` or the first row's keys."""
    with atomic_write(path) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fields if fields is not None else rows[0]))
            writer.writeheader()
            writer.writerows(rows)
