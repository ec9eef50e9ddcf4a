"""File names of scans: image suffixes, stripping them, ``$VAR`` expansion.
"""

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
        raise MedsegError(f"{path}: environment variable ${missing[0]} is not set; export it with the folder it should point to, or write the path into the config")
    return text


def output_suffix(path: Path) -> str:
    """NIfTI scans give .nii.gz outputs, other formats keep their own suffix."""
    suffix = next((s for s in IMAGE_SUFFIXES if path.name.endswith(s)), ".nii.gz")
    return ".nii.gz" if suffix in (".nii", ".nii.gz") else suffix
