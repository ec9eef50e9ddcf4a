"""glibc malloc settings for CPU training, applied once at process start-up by :func:`tune_allocator`.

Why: PyTorch's CPU allocator keeps no cache; every tensor is one ``posix_memalign`` and one
``free``. glibc serves a request above its mmap threshold (adaptive, at most 32 MiB on 64-bit
Linux) with a fresh ``mmap`` and returns it with ``munmap`` when freed, and gives the top of
the heap back to the kernel above the trim threshold. A 3D network allocates and frees dozens
of such tensors per step (one activation of 8 patches x 16 channels x 64^3 float32 is 128 MiB),
so every step the kernel maps, zero-fills and faults in each of their 4 KiB pages again.
``benchmarks/cpu_profile.py`` on ``configs/brats_wt_flair.yaml`` (2 cores): 3.5 million minor
faults and 7.4 s of system time per step, 66 % of the step's user time, all in the forward pass,
the loss and the backward pass; with these settings none and 0.01 s, and the same losses.

What: ``M_MMAP_MAX`` 0 (no request is served by ``mmap``: large tensors come from the heap and
go back to it), ``M_TRIM_THRESHOLD`` -1 (the heap is never trimmed, so the next step reuses the
same, already mapped pages) and ``M_ARENA_MAX`` 1 (every thread allocates from the main heap: a
thread arena is at most 64 MiB, and glibc maps a larger request directly even with
``M_MMAP_MAX`` 0). ``M_MMAP_MAX`` 0 rather than a large ``M_MMAP_THRESHOLD``: older glibc
releases refuse thresholds above 32 MiB (half a thread arena).
The cost is memory: the process keeps its peak heap until it exits, and the heap fragments, so
the peak RSS of that config's training rose from 3.8 to 4.6-5.4 GB (the demo's did not change).

How: ``mallopt`` through ctypes, because glibc reads the ``MALLOC_*_`` environment variables
and ``GLIBC_TUNABLES`` only when a process starts, and the CLI is already running. It is written
here because neither PyTorch nor MONAI exposes malloc settings. ``MEDSEG_MALLOC=default`` keeps
glibc's defaults; a C library other than glibc (macOS, Windows, musl) is left alone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

from medseg.errors import MedsegError

ENV_VAR = "MEDSEG_MALLOC"
MODES = ("tuned", "default")

# mallopt parameter numbers (glibc <malloc.h>) and the values "tuned" sets, applied in this order
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
TUNED: dict[str, tuple[int, int]] = {
    "M_ARENA_MAX": (M_ARENA_MAX, 1),
    "M_MMAP_MAX": (M_MMAP_MAX, 0),
    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, -1),
}


def allocator_mode(environ: dict[str, str] | None = None) -> str:
    """The mode ``MEDSEG_MALLOC`` asks for: ``tuned`` (unset or empty) or ``default``.

    Raises:
        MedsegError: any other value.
    """
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip().lower() or "tuned"
    if value not in MODES:
        raise MedsegError(
            f"{ENV_VAR}: unknown value {value!r}; use 'tuned' (the default) or 'default' (glibc's own settings)"
        )
    return value


def glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt`` in this process, or None on another C library."""
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; None or an error elsewhere
    except (ValueError, OSError, AttributeError):
        return None
    if not libc_version or not libc_version.startswith("glibc"):
        return None
    mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded in this process
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def tune_allocator(mode: str | None = None) -> dict[str, int]:
    """Apply the ``tuned`` malloc settings (see the module docstring) unless ``mode`` (default:
    ``$MEDSEG_MALLOC``) is ``default``. Idempotent: calling it again sets the same values.

    Returns:
        The settings applied, name -> value (``{"M_ARENA_MAX": 1, "M_MMAP_MAX": 0,
        "M_TRIM_THRESHOLD": -1}`` on glibc); empty when nothing was changed (mode ``default``, or
        not glibc).

    Raises:
        MedsegError: ``$MEDSEG_MALLOC`` (or ``mode``) is neither ``tuned`` nor ``default``.
    """
    mode = allocator_mode() if mode is None else allocator_mode({ENV_VAR: mode})
    mallopt = glibc_mallopt() if mode == "tuned" else None
    if mallopt is None:
        return {}
    return {name: value for name, (param, value) in TUNED.items() if mallopt(param, value) == 1}
