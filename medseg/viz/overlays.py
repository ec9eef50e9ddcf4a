"""Overlays of the worst validation cases (an axial slice through the largest missed lesion and one
through the largest false positive, ground truth in green, prediction in red).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medseg.lesions import label_lesions


def _largest_unmatched(mask: np.ndarray, other: np.ndarray) -> int | None:
    """Axial (z) index through the largest component of ``mask`` that ``other`` does not touch."""
    labels, n = label_lesions(mask)
    best, z = 0, None
    for i in range(1, n + 1):
        comp = labels == i
        size = int(comp.sum())
        if size > best and not (comp & other).any():
            best, z = size, int(np.round(np.nonzero(comp)[2].mean()))
    return z


def overlays(case_id: str, image: np.ndarray, pred: np.ndarray, ref: np.ndarray, out_dir: Path) -> list[Path]:
    """PNGs through the largest missed lesion and the largest false positive of one case
    (volumes (X, Y, Z) on the model grid); nothing when there is neither."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, z in (("missed", _largest_unmatched(ref, pred)), ("false_positive", _largest_unmatched(pred, ref))):
        if z is None:
            continue
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
        for mask, colour in ((ref, "lime"), (pred, "red")):
            if mask[:, :, z].any():
                ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors=colour, linewidths=1)
        ax.set_title(f"{case_id}: largest {kind.replace('_', ' ')} (z={z})", fontsize=9)
        ax.axis("off")
        path = out_dir / f"{case_id}_{kind}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        written.append(path)
    return written
