"""Checkpoints: plain tensors and JSON-like values only, so they load with ``weights_only=True``.

A checkpoint carries everything ``predict`` needs: the resolved config, the preprocessing (target
spacing, normalisation, input channels) and the operating point (threshold, minimum lesion volume).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError

FORMAT = "medseg-checkpoint/1"


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a medseg checkpoint safely (``weights_only=True``: pickled code is refused).

    Raises:
        MedsegError: missing file, not a checkpoint, or one containing arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: checkpoint not found; pass the best.pt written by 'medseg train'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedsegError(f"{path}: not a loadable medseg checkpoint ({first[:160]}); use a best.pt/last.pt from 'medseg train'") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MedsegError(f"{path}: not a medseg checkpoint (no '{FORMAT}' marker); use a best.pt/last.pt from 'medseg train'")
    return ckpt
