"""Exact resume: the random state of everything that draws random numbers during training, as
plain tensors and lists (so checkpoints still load with ``weights_only=True``).

Captured at the start of an epoch (before the loader draws its shuffle order and its workers'
seeds), restored on resume; the batches of the epoch already trained are then drawn again and
skipped without a forward pass, so a resumed run sees exactly the batches an uninterrupted run
would have seen. Workers are not persistent (:func:`medseg.data.make_loader`) so that their
transform seeds, too, come from the loader's generator.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def _transforms(dataset: Dataset) -> list:
    """The randomizable transforms of a MONAI dataset's pipeline (each holds its own RandomState)."""
    compose = getattr(dataset, "transform", None)
    return [t for t in getattr(compose, "transforms", ()) if hasattr(t, "R")]


def _np_state(state: tuple) -> list:
    kind, keys, pos, has_gauss, cached = state
    return [kind, torch.as_tensor(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]


def _np_tuple(state: list) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return kind, np.asarray(keys.numpy(), dtype=np.uint32), pos, has_gauss, cached


def capture_rng(dataset: Dataset, generator: torch.Generator) -> dict[str, Any]:
    """Python, numpy, torch, loader-generator and per-transform random states."""
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": _np_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": generator.get_state(),
        "transforms": [_np_state(t.R.get_state()) for t in _transforms(dataset)],
    }


def restore_rng(state: dict[str, Any], dataset: Dataset, generator: torch.Generator) -> None:
    """Undo :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_np_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["loader"])
    for t, s in zip(_transforms(dataset), state["transforms"]):
        t.R.set_state(_np_tuple(s))
