"""What a serving request carries, checked before anything is read (see :mod:`medseg.inference.pyfunc`
for the request format): base64 uploads whose format is told by their magic bytes, server paths
only inside ``$MEDSEG_SERVE_ROOT``, and the operating-point parameters. Every refusal is a
:class:`~medseg.errors.MedsegError` naming the row and column, never a path of the server.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.errors import MedsegError
from medseg.io.paths import data_files_in_header

ROOT_ENV = "MEDSEG_SERVE_ROOT"  # the folder whose files clients may name by path (unset: no paths)
NIFTI1_MAGIC = b"n+1\0"  # single-file NIfTI-1 at byte 344 (the header/image pair "ni1" names a second file: refused)
NIFTI2_MAGIC = b"n+2\0\r\n\x1a\n"  # single-file NIfTI-2 at byte 4
MAX_NRRD_HEADER = 1 << 20  # bytes; a NRRD header ends at its first empty line, long before this
PARAMS = {  # request parameter -> (MLflow param type, lowest, highest allowed): predict's operating-point options
    "threshold": ("double", 0.0, 1.0),
    "min_lesion_mm3": ("double", 0.0, 1e9),
    "min_confidence": ("double", 0.0, 1.0),
    "tta": ("boolean", None, None),
}
FIX_SEND = "send the scan file's bytes base64-encoded in 'scan' (a NIfTI .nii/.nii.gz or NRRD .nrrd file)"


def request_options(params: dict[str, Any] | None) -> dict[str, Any]:
    """``predict_classes`` keyword arguments from the request's ``params`` (:data:`PARAMS`; null or
    absent: the model's own setting).

    Raises:
        MedsegError: an unknown parameter (a path above all: never taken), a value of another type
            or out of its range.
    """
    options: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if name not in PARAMS:
            raise MedsegError(
                f"request parameter {str(name)[:40]!r}: not one of {', '.join(PARAMS)} (the operating point; this "
                f"model writes nothing where a client says); {FIX_SEND} and read the mask from the response"
            )
        if value is None:
            continue
        kind, low, high = PARAMS[name]
        if kind == "boolean":
            ok = isinstance(value, (bool, np.bool_))
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= float(value) <= high
        if not ok:
            span = "true or false" if kind == "boolean" else f"a number from {low:g} to {high:g}"
            raise MedsegError(f"request parameter {name!r}: {str(value)[:40]!r} is not {span}")
        options[name] = bool(value) if kind == "boolean" else float(value)
    return options


def serve_root() -> Path | None:
    """The resolved folder of ``$MEDSEG_SERVE_ROOT``, or None when unset (no paths accepted).

    Raises:
        MedsegError: the variable names no folder.
    """
    value = os.environ.get(ROOT_ENV)
    if not value:
        return None
    root = Path(value).resolve()
    if not root.is_dir():
        raise MedsegError(
            f"{ROOT_ENV}={value}: not a folder; set it to the folder whose scans clients may name, or unset it"
        )
    return root


def request_table(model_input: Any) -> pd.DataFrame:
    """The request as a table: a DataFrame as is, a mapping of columns, a list of rows, or a list
    of strings (read as server paths: the input of earlier medseg models)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        return pd.DataFrame({k: v if isinstance(v, (list, tuple)) else [v] for k, v in model_input.items()})
    items = list(model_input)
    return pd.DataFrame({"path": items}) if all(isinstance(x, str) for x in items) else pd.DataFrame(items)


def row_layout(row: dict[str, Any], index: int, channels: int) -> list[str]:
    """The columns that hold the scan of ``row``: ``scan``, ``channel0..``, ``path`` or ``path0..``.

    Raises:
        MedsegError: none of these, or several kinds mixed.
    """
    per_channel = channels > 1
    layouts = [["scan"], ["path"]] + (
        [[f"channel{k}" for k in range(channels)], [f"path{k}" for k in range(channels)]] if per_channel else []
    )
    known = {c for layout in layouts for c in layout}
    given = sorted(c for c, v in row.items() if c in known and isinstance(v, str) and v)
    for layout in layouts:
        if set(layout) == set(given):
            return layout
    channels_fix = f", or one file per channel in channel0..channel{channels - 1}" if per_channel else ""
    raise MedsegError(
        f"request row {index}: holds {', '.join(given) or 'no scan column'}; {FIX_SEND}{channels_fix} "
        f"(paths in 'path' only on servers started with {ROOT_ENV})"
    )


def write_upload(text: str, where: str, stem: Path) -> Path:
    """Decode a base64 scan and write it as ``stem`` plus the suffix of its format (readers
    choose by suffix).

    Raises:
        MedsegError: not base64, or not a NIfTI/NRRD file.
    """
    try:
        data = base64.b64decode("".join(text.split()), validate=True)  # whitespace: encoders that wrap lines
    except (binascii.Error, ValueError):
        looks_like_path = "/" in text[:4096] or "\\" in text[:4096] or text.endswith((".nii", ".nii.gz", ".nrrd"))
        hint = (
            f" (it looks like a path: paths go in 'path', on servers started with {ROOT_ENV})"
            if looks_like_path
            else ""
        )
        raise MedsegError(f"{where}: is not base64{hint}; {FIX_SEND}") from None
    path = stem.with_name(stem.name + scan_format(data, where))
    path.write_bytes(data)
    return path


def server_file(value: str, where: str, root: Path | None) -> Path:
    """A scan named by path: inside ``root`` once resolved (symlinks followed), a file, its
    content of the format its suffix says.

    Raises:
        MedsegError: no root (paths refused), a path outside it, no such file, another format.
    """
    if root is None:
        raise MedsegError(
            f"{where}: paths are refused (this server reads no files a client names); {FIX_SEND}, "
            f"or start the server with {ROOT_ENV}=<folder> to allow paths inside that folder"
        )
    try:
        path = (root / value).resolve()
    except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
        path = None
    if path is None or not path.is_relative_to(root):
        raise MedsegError(
            f"{where}: {value[:80]!r} lies outside the folder this server reads ({ROOT_ENV}); "
            "pass a path inside it (relative paths are taken inside it), or send the file's bytes in 'scan'"
        )
    if not path.is_file():
        raise MedsegError(
            f"{where}: {value[:80]!r}: no such file in the folder this server reads; pass a file inside it"
        )
    with path.open("rb") as fh:
        fmt = scan_format(fh.read(MAX_NRRD_HEADER), where)
    if not path.name.endswith(fmt):
        raise MedsegError(f"{where}: {value[:80]!r} holds a {fmt} file under another suffix; rename it to end in {fmt}")
    return path


def scan_format(head: bytes, where: str) -> str:
    """``.nii``, ``.nii.gz`` or ``.nrrd`` from a file's first bytes. (nibabel and SimpleITK pick
    a reader by file name; an upload has none, so the format is told by its magic bytes.)

    Raises:
        MedsegError: none of these formats, or a NRRD whose voxels are in another file.
    """
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(wbits=31).decompress(head, 548)  # gzip: only the NIfTI header is inflated
        except zlib.error:
            inner = b""
        if _is_nifti(inner):
            return ".nii.gz"
    elif _is_nifti(head):
        return ".nii"
    elif head.startswith(b"NRRD"):
        _check_nrrd(head, where)
        return ".nrrd"
    raise MedsegError(f"{where}: is not a single-file NIfTI (.nii, .nii.gz) or a NRRD (.nrrd) file; {FIX_SEND}")


def _is_nifti(head: bytes) -> bool:
    return (len(head) >= 348 and head[344:348] == NIFTI1_MAGIC) or head[4:12] == NIFTI2_MAGIC


def _check_nrrd(head: bytes, where: str) -> None:
    """Refuse a NRRD header that points at other files (``data file``: detached voxels, which
    would have the server read a file the client names). (SimpleITK follows such fields without
    an option to refuse them, hence this reading of the header's text.)"""
    end = re.search(rb"\r?\n\r?\n", head[:MAX_NRRD_HEADER])
    if end is None:
        raise MedsegError(
            f"{where}: the NRRD header does not end (no empty line in its first {MAX_NRRD_HEADER} bytes); "
            "send a NRRD file with its data attached"
        )
    if data_files_in_header(head[: end.start()].decode("latin-1"), nrrd=True):
        raise MedsegError(
            f"{where}: is a NRRD header whose voxels are in another file ('data file'); "
            "send one .nrrd file with its data attached"
        )
