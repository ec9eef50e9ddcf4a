"""FROC from probability maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from medseg.lesions import label_lesions

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Scan:
    """Probabilities (X, Y, Z), reference mask (X, Y, Z) and voxel volume (mm^3) of one scan."""

    prob: np.ndarray
    ref: np.ndarray
    voxel_mm3: float


def froc(scans: Sequence[Scan], floor: float = 0.05, connectivity: int = 26) -> dict:
    """FROC points and recall at the standard FP rates (see module docstring)."""
    confidences, is_tp, gt_best = [], [], []
    for s in scans:
        labels, n = label_lesions(s.prob >= floor, connectivity)
        ref_lab, n_ref = label_lesions(s.ref, connectivity)
        conf = np.asarray(ndimage.maximum(s.prob, labels, np.arange(1, n + 1))) if n else np.zeros(0)
        best = np.zeros(n_ref)  # highest confidence of a candidate touching each GT lesion
        for c in range(1, n + 1):
            hits = np.unique(ref_lab[(labels == c) & (ref_lab > 0)])
            confidences.append(conf[c - 1])
            is_tp.append(hits.size > 0)
            for h in hits:
                best[h - 1] = max(best[h - 1], conf[c - 1])
        gt_best += list(best)
    confidences, is_tp, gt_best = np.array(confidences), np.array(is_tp, bool), np.array(gt_best)
    levels = np.unique(np.concatenate([confidences, [1.01]]))[::-1]
    fps = np.array([np.sum(~is_tp & (confidences >= t)) / len(scans) for t in levels])
    recall = np.array([np.mean(gt_best >= t) if gt_best.size else 1.0 for t in levels])
    at = {r: float(recall[fps <= r].max()) if (fps <= r).any() else 0.0 for r in FP_RATES}
    return {"fp_per_scan": fps.tolist(), "recall": recall.tolist(), "recall_at": at, "cpm": float(np.mean(list(at.values())))}
