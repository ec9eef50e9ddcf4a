"""File names of scans: image suffixes, stripping them, ``$VAR`` expansion."""

from __future__ import annotations

import os
import re
from pathlib import Path

from medseg.errors import MedsegError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def strip_suffix(path: Path | str) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def expand(path: str | Path) -> str:
    """``$VAR``/``~`` expansion; a variable that is unset is an error naming it."""
    text = os.path.expanduser(os.path.expandvars(str(path)))
    missing = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    if missing:
        raise MedsegError(
            f"{path}: environment variable ${missing[0]} is not set; export it with the folder it should point to, "
            "or write the path into the config"
        )
    return text


def output_suffix(path: Path) -> str:
    """NIfTI scans give .nii.gz outputs, other formats keep their own suffix."""
    suffix = next((s for s in IMAGE_SUFFIXES if path.name.endswith(s)), ".nii.gz")
    return ".nii.gz" if suffix in (".nii", ".nii.gz") else suffix


def header_data_files(path: Path) -> list[str]:
    """The data files a detached header points to: a MetaImage ``.mhd`` (``ElementDataFile``: one
    name, ``LIST`` then one name a line, ``LOCAL`` for none) or a NRRD ``.nrrd``/``.nhdr``
    (``data file:``, also ``LIST``). Reads at most the first 64 KiB, where such headers end."""
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("latin-1")
    return data_files_in_header(head, str(path).lower().endswith((".nrrd", ".nhdr")))


def data_files_in_header(text: str, nrrd: bool) -> list[str]:
    """The data files named in the text of a NRRD (``nrrd``) or MetaImage header; see
    :func:`header_data_files`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if nrrd and not line.strip():
            return []  # the blank line that ends a NRRD header
        key, _, value = line.partition(":" if nrrd else "=")
        if key.strip().lower() in (("data file", "datafile") if nrrd else ("elementdatafile",)):
            value = value.strip()
            if not value or value.upper() == "LOCAL":
                return []
            if value.split()[0].upper() == "LIST":
                return [name.strip() for name in lines[i + 1 :] if name.strip()]
            return [value]
    return []


def check_data_files(path: Path | str) -> None:
    """A detached header's data files must lie in its own folder or below (the containment rule
    of the dataset layouts, :func:`medseg.data.sources.common.inside_root`): an absolute path or
    ``..`` would make reading a scan read any file on disk, e.g. a device that never ends.

    Raises:
        MedsegError: naming the header and the data file.
    """
    if not str(path).lower().endswith((".mhd", ".nrrd", ".nhdr")):
        return
    base = os.path.abspath(Path(path).parent)
    for name in header_data_files(Path(path)):
        target = os.path.abspath(os.path.join(base, name))
        if os.path.commonpath([base, target]) != base or "%" in name:
            raise MedsegError(
                f"{path}: its data file {name[:80]!r} is not a file beside the header; "
                "keep the data file in the header's folder and name it without a path"
            )
