"""Training/validation splits and the dataset's median spacing.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from medseg.data.case import Case
from medseg.errors import MedsegError
from medseg.io.geometry import ras_spacing, read_geometry


def split_cases(cases: Sequence[Case], val_fraction: float, seed: int,
                val_ids: Optional[Sequence[str]] = None) -> tuple[list[Case], list[Case]]:
    """The named ``val_ids`` as validation, or shuffle with ``seed`` and hold out
    ``round(n * val_fraction)`` (at least 1) cases.

    Raises:
        MedsegError: fewer than 2 cases, or a named validation case that does not exist.
    """
    if len(cases) < 2:
        raise MedsegError(f"dataset has {len(cases)} case(s); training needs at least 2 (one for validation)")
    if val_ids:
        known = {c.case_id for c in cases}
        unknown = [v for v in val_ids if v not in known]
        if unknown:
            raise MedsegError(f"data.val_cases: {unknown[0]!r} is not a case of the dataset (cases: {', '.join(sorted(known)[:8])}...)")
        if len(set(val_ids)) >= len(cases):
            raise MedsegError("data.val_cases: names every case; leave at least one for training")
        return [c for c in cases if c.case_id not in val_ids], [c for c in cases if c.case_id in val_ids]
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, round(len(cases) * val_fraction)))
    val = [cases[i] for i in sorted(order[:n_val])]
    train = [cases[i] for i in sorted(order[n_val:])]
    return train, val


def median_spacing(cases: Sequence[Case]) -> tuple[float, float, float]:
    """Median RAS spacing over the cases' headers (no voxels read)."""
    spacings = np.array([ras_spacing(read_geometry(c.image)[1]) for c in cases])
    return tuple(float(round(s, 4)) for s in np.median(spacings, axis=0))
