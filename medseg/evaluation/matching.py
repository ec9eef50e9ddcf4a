"""Voxel and lesion-wise metrics.

* Lesion: a connected component of a binary mask (``connectivity`` 6, 18 or 26).
* Matching rules (named in every report):
  ``overlap`` - a GT lesion is found if any predicted voxel touches it; a predicted lesion is a
  true positive if it touches any GT lesion (many-to-one both ways);
  ``iou`` / ``dsc`` - a pair matches when its IoU (default 0.5) / Dice (default 0.1) reaches the
  threshold; a GT lesion is found if some predicted lesion matches it, a predicted lesion is a
  true positive if it matches some GT lesion.
* Recall = found GT lesions / GT lesions; precision = TP predicted lesions / predicted lesions;
  F1 their harmonic mean; FP per scan = unmatched predicted lesions / scans. With nothing to find
  recall is 1, with nothing predicted precision is 1: scans without lesions never give NaN.
* Dice per case: ``2|P∩G| / (|P| + |G|)``, 1.0 when both are empty.
* Options of the overlap rule: each GT lesion grown by ``dilate`` voxels on its own before the
  overlap test (see :func:`dilated_overlaps`), and lesions below ``min_voxels`` (GT and
  predicted) left out. This is not the BraTS 2023 lesion-wise protocol, which also merges GT
  lesions whose grown regions touch and drops small lesions from the ground truth only.

Connected-component labelling uses scipy (MONAI has no lesion matching; its
``get_largest_connected_component_mask`` keeps one component only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from medseg.lesions import label_lesions, structure

DEFAULT_THRESHOLDS = {"overlap": 0.0, "iou": 0.5, "dsc": 0.1}


@dataclass(frozen=True)
class LesionCounts:
    """Lesion-wise counts of one scan (or several, summed)."""

    n_ref: int = 0
    n_pred: int = 0
    found: int = 0  # GT lesions matched
    tp_pred: int = 0  # predicted lesions matched
    scans: int = 1

    def __add__(self, other: LesionCounts) -> LesionCounts:
        return LesionCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def fn(self) -> int:
        return self.n_ref - self.found

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp_pred

    def summary(self) -> dict[str, float]:
        """recall, precision, f1, fp_per_scan (see module docstring for the conventions)."""
        recall = self.found / self.n_ref if self.n_ref else 1.0
        precision = self.tp_pred / self.n_pred if self.n_pred else 1.0
        f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
        return {
            "lesion_recall": recall,
            "lesion_precision": precision,
            "lesion_f1": f1,
            "fp_per_scan": self.fp / self.scans if self.scans else 0.0,
        }


def dilated_overlaps(
    p_lab: np.ndarray, n_p: int, r_lab: np.ndarray, n_r: int, dilate: int, connectivity: int = 26
) -> np.ndarray:
    """Voxels of each predicted lesion inside each GT lesion grown by ``dilate`` voxels: (n_r, n_p).

    Each GT lesion is dilated on its own (inside its bounding box plus the margin), so two GT
    lesions closer than ``2 * dilate`` voxels both keep their grown region; a grey dilation of the
    label map would let the higher label overwrite the lower one and lose an exactly found lesion.
    """
    inter = np.zeros((n_r, n_p), np.int64)
    footprint = structure(connectivity)
    for i, box in enumerate(ndimage.find_objects(r_lab)):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - dilate, 0), min(s.stop + dilate, n)) for s, n in zip(box, r_lab.shape))
        region = ndimage.binary_dilation(r_lab[grown] == i + 1, footprint, iterations=dilate)
        inter[i] = np.bincount(p_lab[grown][region], minlength=n_p + 1)[1:]
    return inter


def assign_one_to_one(matched: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Keep at most one partner per lesion: the assignment of highest total IoU among the
    allowed pairs (Hungarian algorithm, scipy's ``linear_sum_assignment``, as panoptica and
    picai_eval match instances). ``matched`` and ``iou``: (n_ref, n_pred)."""
    if not matched.any():
        return matched
    rows, cols = linear_sum_assignment(np.where(matched, iou, 0.0), maximize=True)
    out = np.zeros_like(matched)
    keep = matched[rows, cols]
    out[rows[keep], cols[keep]] = True
    return out


def _matches(
    pred: np.ndarray,
    ref: np.ndarray,
    rule: str,
    threshold: float | None,
    connectivity: int,
    dilate: int = 0,
    min_voxels: int = 0,
    one_to_one: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matched bool (n_ref, n_pred), GT lesion sizes (n_ref,), predicted lesion sizes (n_pred,)).

    ``dilate``: each GT lesion grown by this many voxels before the overlap test (overlap rule);
    ``min_voxels``: GT and predicted lesions smaller than this are left out; ``one_to_one``: a
    lesion matches at most one lesion of the other mask (:func:`assign_one_to_one`), instead of
    many-to-one both ways.
    """
    p_lab, n_p = label_lesions(pred, connectivity)
    r_lab, n_r = label_lesions(ref, connectivity)
    r_size = np.bincount(r_lab.ravel(), minlength=n_r + 1)[1:]
    p_size = np.bincount(p_lab.ravel(), minlength=n_p + 1)[1:]
    keep_r, keep_p = r_size >= min_voxels, p_size >= min_voxels
    if n_p == 0 or n_r == 0:
        return np.zeros((int(keep_r.sum()), int(keep_p.sum())), bool), r_size[keep_r], p_size[keep_p]
    if rule == "overlap" and dilate > 0:
        inter = dilated_overlaps(p_lab, n_p, r_lab, n_r, dilate, connectivity)
    else:
        both = (p_lab > 0) & (r_lab > 0)
        pair = r_lab[both].astype(np.int64) * (n_p + 1) + p_lab[both]
        inter = np.bincount(pair, minlength=(n_r + 1) * (n_p + 1)).reshape(n_r + 1, n_p + 1)[1:, 1:]
    rs, ps = r_size[:, None], p_size[None, :]
    iou = inter / np.maximum(rs + ps - inter, 1)
    if rule == "overlap":
        matched = inter > 0
    else:
        t = DEFAULT_THRESHOLDS[rule] if threshold is None else threshold
        score = iou if rule == "iou" else 2 * inter / (rs + ps)
        matched = (score >= t) & (inter > 0)
    matched, iou = matched[keep_r][:, keep_p], iou[keep_r][:, keep_p]
    return (assign_one_to_one(matched, iou) if one_to_one else matched), r_size[keep_r], p_size[keep_p]


def match_lesions(
    pred: np.ndarray,
    ref: np.ndarray,
    rule: str = "overlap",
    threshold: float | None = None,
    connectivity: int = 26,
    dilate: int = 0,
    min_voxels: int = 0,
    one_to_one: bool = False,
) -> LesionCounts:
    """Count lesion matches between binary masks ``pred`` and ``ref`` (X, Y, Z) under ``rule``."""
    matched, r_size, p_size = _matches(pred, ref, rule, threshold, connectivity, dilate, min_voxels, one_to_one)
    return LesionCounts(len(r_size), len(p_size), int(matched.any(1).sum()), int(matched.any(0).sum()))


def gt_lesion_hits(
    pred: np.ndarray,
    ref: np.ndarray,
    rule: str = "overlap",
    threshold: float | None = None,
    connectivity: int = 26,
    dilate: int = 0,
    min_voxels: int = 0,
    one_to_one: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per GT lesion: (size in voxels (n_ref,), found bool (n_ref,)) — for recall by size."""
    matched, r_size, _ = _matches(pred, ref, rule, threshold, connectivity, dilate, min_voxels, one_to_one)
    return r_size, matched.any(1)


def lesion_pairs(
    pred: np.ndarray,
    ref: np.ndarray,
    rule: str = "overlap",
    threshold: float | None = None,
    connectivity: int = 26,
    dilate: int = 0,
    min_voxels: int = 0,
    one_to_one: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full match: (matched (n_ref, n_pred) bool, GT sizes, predicted sizes) in label order."""
    return _matches(pred, ref, rule, threshold, connectivity, dilate, min_voxels, one_to_one)
