"""DICOM series as scans: which folders hold one, and which series of a folder is the scan.

A folder that holds DICOM files (Part 10 files: the ``DICM`` marker at byte 128, any file name)
is one scan. Its series are found with GDCM (SimpleITK's ``ImageSeriesReader``), and the slices
of a series come in GDCM's order (sorted by position along the slice normal).

The rule that picks the series of a folder (documented in docs/how-to/dicom.md): the series with
the most files (slices); on a tie, the one whose Series Instance UID sorts first. The series
left out are named in a ``warning:`` line, so a localizer or a second reconstruction in the same
folder never goes unnoticed. To predict another series, put its files in a folder of their own.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from medseg.errors import MedsegError

DICOM_MARKER = b"DICM"  # bytes 128-131 of a DICOM Part 10 file
MARKER_FILES = 64  # files of a folder looked at to decide whether it holds DICOM files
_WARNED: set[str] = set()


@dataclass(frozen=True)
class DicomSeries:
    """One series of a folder: its UID, its files in slice order, and the series left out
    (``(uid, number of files)`` each)."""

    folder: Path
    uid: str
    files: tuple[Path, ...]
    others: tuple[tuple[str, int], ...] = ()


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a regular file with the DICOM Part 10 marker (reads 132 bytes)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == DICOM_MARKER
    except OSError:
        return False


def holds_dicom(folder: Path) -> bool:
    """Whether one of the first :data:`MARKER_FILES` files of ``folder`` (by name, hidden files
    left out) is a DICOM file."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
    except OSError:
        return False
    return any(is_dicom_file(Path(folder) / name) for name in names[:MARKER_FILES])


def dicom_folders(folder: Path) -> list[Path]:
    """The scans of a folder given to ``predict``: the folder itself when it holds DICOM files,
    else each of its subfolders (one level, by name) that does."""
    if holds_dicom(folder):
        return [folder]
    try:
        subs = sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [sub for sub in subs if holds_dicom(sub)]


def find_series(folder: Path | str) -> DicomSeries:
    """The series of ``folder`` that is its scan (the rule of the module docstring), read once per
    state of the folder (its modification time) and process. Warns once when others are left out.

    Raises:
        MedsegError: the folder holds no readable DICOM series.
    """
    real = os.path.realpath(folder)
    try:
        stamp = os.stat(real).st_mtime_ns
    except OSError:
        raise MedsegError(f"{folder}: no such folder of DICOM files; check the path") from None
    series = _series(real, stamp)
    if series.others and real not in _WARNED:
        _WARNED.add(real)
        left = ", ".join(f"{uid} ({n} files)" for uid, n in series.others[:5])
        print(
            f"warning: {folder}: holds {len(series.others) + 1} DICOM series; using {series.uid} "
            f"({len(series.files)} files), not {left}; to predict another, move its files into a folder of their own",
            file=sys.stderr,
        )
    return DicomSeries(Path(folder), series.uid, series.files, series.others)


@functools.lru_cache(maxsize=64)
def _series(real: str, stamp: int) -> DicomSeries:
    """:func:`find_series` of a resolved folder at modification time ``stamp`` (the cache key)."""
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(real)
    found = sorted(((uid, sitk.ImageSeriesReader.GetGDCMSeriesFileNames(real, uid)) for uid in uids), key=_rank)
    found = [(uid, files) for uid, files in found if files]
    if not found:
        raise MedsegError(
            f"{real}: holds no readable DICOM series (GDCM found none); pass a folder of DICOM image files "
            "(one series per folder)"
        )
    (uid, files), rest = found[0], found[1:]
    return DicomSeries(Path(real), uid, tuple(Path(f) for f in files), tuple((u, len(f)) for u, f in rest))


def _rank(entry: tuple[str, tuple[str, ...]]) -> tuple[int, str]:
    """Sort key of the series rule: most files first, then the UID."""
    uid, files = entry
    return -len(files), uid
