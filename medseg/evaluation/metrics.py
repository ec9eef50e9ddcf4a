"""Voxel-wise metrics of one case: Dice and HD95."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def dice(pred: np.ndarray, ref: np.ndarray, both_empty: float = 1.0) -> float:
    """Dice of two binary masks (X, Y, Z); ``both_empty`` (1.0, or NaN to leave the case out) when
    both are empty."""
    p, r = pred.astype(bool), ref.astype(bool)
    denom = p.sum() + r.sum()
    return float(both_empty) if denom == 0 else float(2.0 * np.logical_and(p, r).sum() / denom)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray, one_empty: float = float("nan")) -> float:
    """95th-percentile Hausdorff distance in mm (MONAI) of two binary masks (X, Y, Z); 0 when both
    are empty; ``one_empty`` when exactly one is (NaN: the case is excluded from the median and
    counted as excluded; a number: a penalty, e.g. 374 mm as BraTS 2023)."""
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float(one_empty)

    p = torch.as_tensor(pred[None, None].astype(np.float32))
    r = torch.as_tensor(ref[None, None].astype(np.float32))
    return float(compute_hausdorff_distance(p, r, percentile=95, spacing=spacing.tolist())[0, 0])
