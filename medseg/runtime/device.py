"""Which torch device to run on, what its CPU runs natively, and MetaTensors as plain tensors for it."""

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


def plain_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor of a MetaTensor without its metadata (a tensor as is, when meta tracking is off)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX): there bf16 convolutions
    are faster than float32 ones; elsewhere they are emulated and slower."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
