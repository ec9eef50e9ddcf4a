"""The BraTS 2023 lesion-wise protocol (``medseg evaluate --protocol brats2023``).

As the challenge's evaluator (BraTS-2023-Metrics, Saluja et al.) computes it, for one region
(e.g. whole tumour):

1. GT lesions are the 26-connected components of the reference, *merged* when their regions grown
   by ``dilation`` voxels with the 18-connected structure touch (the merged lesion keeps only its
   original voxels).
2. Predicted lesions are the 26-connected components of the prediction, never filtered.
3. For each GT lesion, grown on its own by ``dilation`` (18-connected): every predicted lesion that
   touches the grown region is a true positive of it; its lesion-wise Dice and HD95 compare the GT
   lesion with the union of those predicted lesions. A GT lesion with no such prediction scores
   Dice 0 and HD95 374 mm.
4. Predicted lesions that touch no grown GT lesion are false positives.
5. GT lesions of ``min_mm3`` or less are left out of the scores and of TP/FN (ground truth only:
   a prediction touching a small GT lesion is still no false positive).
6. Lesion-wise Dice = sum(Dice of kept GT lesions) / (kept GT lesions + FP); lesion-wise HD95 =
   (sum(HD95) + 374 * FP) / (kept GT lesions + FP); a scan with neither scores Dice 1, HD95 0.

Presets (dilation voxels, min volume mm^3) follow the challenge's parameters per sub-challenge.
HD95 is MONAI's (percentile of all surface distances); the challenge uses DeepMind's
surfel-weighted ``surface_distance``, which can differ by a fraction of a voxel. MONAI and
panoptica have no merged-by-dilation GT rule, hence this file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.evaluation.metrics import dice, hd95
from medseg.lesions import label_lesions, structure

HD95_PENALTY_MM = 374.0


@dataclass(frozen=True)
class BratsProtocol:
    """One sub-challenge's lesion-wise parameters."""

    name: str
    dilation: int  # voxels, 18-connected structure
    min_mm3: float  # GT lesions of this volume or less are not scored


PROTOCOLS = {
    "brats2023": BratsProtocol("brats2023 (glioma)", 3, 50.0),
    "brats2023-gli": BratsProtocol("brats2023-gli (glioma)", 3, 50.0),
    "brats2023-ssa": BratsProtocol("brats2023-ssa (sub-Saharan glioma)", 3, 50.0),
    "brats2023-ped": BratsProtocol("brats2023-ped (paediatric)", 3, 50.0),
    "brats2023-men": BratsProtocol("brats2023-men (meningioma)", 1, 50.0),
    "brats2023-met": BratsProtocol("brats2023-met (metastases)", 1, 2.0),
}


def merged_gt_lesions(ref: np.ndarray, dilation: int) -> tuple[np.ndarray, int]:
    """GT lesions merged by dilation (step 1): (labels int32 (X, Y, Z), count)."""
    grown = (
        ndimage.binary_dilation(ref.astype(bool), structure(18), iterations=dilation) if dilation else ref.astype(bool)
    )
    labels, n = label_lesions(grown, 26)
    return np.where(ref.astype(bool), labels, 0).astype(np.int32), n


def _union_box(boxes: list[tuple[slice, ...]], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The smallest box holding every box of ``boxes``, grown by ``margin`` voxels (clipped to ``shape``)."""
    return tuple(
        slice(max(min(b[a].start for b in boxes) - margin, 0), min(max(b[a].stop for b in boxes) + margin, shape[a]))
        for a in range(len(shape))
    )


@dataclass
class LesionScore:
    """One merged GT lesion: volume (mm^3), matched predicted lesion ids, Dice, HD95 (mm)."""

    volume_mm3: float
    hits: list[int]
    dice: float
    hd95_mm: float


def score_gt_lesions(
    p_lab: np.ndarray, g_lab: np.ndarray, n_g: int, dilation: int, spacing: np.ndarray, with_hd95: bool = True
) -> list[LesionScore]:
    """Steps 3 for every merged GT lesion ``1..n_g`` of ``g_lab`` against predicted lesions ``p_lab``
    (``with_hd95=False``: HD95 left NaN, for sweeps that rank by Dice only)."""
    voxel = float(np.prod(spacing))
    p_boxes = ndimage.find_objects(p_lab)
    scores = []
    for i, box in enumerate(ndimage.find_objects(g_lab, n_g)):
        if box is None:  # a dilated component holds no GT voxel only if dilation merged nothing there
            continue
        grown_box = _union_box([box], dilation, g_lab.shape)
        gt = g_lab[grown_box] == i + 1
        grown = ndimage.binary_dilation(gt, structure(18), iterations=dilation) if dilation else gt
        hits = sorted(int(h) for h in np.unique(p_lab[grown_box][grown]) if h)
        # HD95 and Dice are unchanged by cropping to both masks plus a margin: the GT lesion's box
        # and its hits' boxes, not the whole volume once per lesion (MS scans hold dozens)
        roi = _union_box([box, *(p_boxes[h - 1] for h in hits)], 1, g_lab.shape)
        gt_roi = g_lab[roi] == i + 1
        pred_roi = np.isin(p_lab[roi], hits) if hits else np.zeros_like(gt_roi)
        scores.append(
            LesionScore(
                float(gt.sum()) * voxel,
                hits,
                dice(pred_roi, gt_roi),
                hd95(pred_roi, gt_roi, spacing, HD95_PENALTY_MM) if with_hd95 else float("nan"),
            )
        )
    return scores


def brats_case(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray, protocol: BratsProtocol, with_hd95: bool = True
) -> tuple[dict, list[LesionScore], int, set[int]]:
    """Lesion-wise scores of one scan (binary masks (X, Y, Z), spacing in mm; ``with_hd95=False``:
    the HD95 figures NaN).

    Returns:
        (row with lesionwise_dice, lesionwise_hd95_mm, tp, fn, fp, gt_lesions, pred_lesions;
        scores of every merged GT lesion; number of predicted lesions; ids of the predicted lesions
        that touch a grown GT lesion, the true positives).
    """
    p_lab, n_p = label_lesions(pred, 26)
    g_lab, n_g = merged_gt_lesions(ref, protocol.dilation)
    scores = score_gt_lesions(p_lab, g_lab, n_g, protocol.dilation, np.asarray(spacing, float), with_hd95)
    tp_pred = set().union(*(s.hits for s in scores)) if scores else set()
    fp = n_p - len(tp_pred)
    kept = [s for s in scores if s.volume_mm3 > protocol.min_mm3]
    n = len(kept) + fp
    row = {
        "lesionwise_dice": sum(s.dice for s in kept) / n if n else 1.0,
        "lesionwise_hd95_mm": (sum(s.hd95_mm for s in kept) + HD95_PENALTY_MM * fp) / n if n else 0.0,
        "gt_lesions": len(kept),
        "pred_lesions": n_p,
        "tp": sum(bool(s.hits) for s in kept),
        "fn": sum(not s.hits for s in kept),
        "fp": fp,
    }
    return row, scores, n_p, tp_pred
