"""Which torch device to run on.
"""

from __future__ import annotations

import torch

from medseg.errors import MedsegError


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MedsegError("device 'cuda' requested but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)
