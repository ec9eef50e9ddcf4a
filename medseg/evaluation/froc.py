"""FROC from probability maps, with picai_eval's candidates and matching.

* Candidates: one per local peak of the probability map (peaks >= 0.05), by PI-CAI's dynamic extraction
  (as ``report_guided_annotation.extract_lesion_candidates``, the function picai_eval documents for
  turning softmax maps into detection maps; re-implemented faster, see :func:`detection_map`):
  take the highest remaining probability ``m``, the component of ``p >= m / 2.5`` around it is a
  candidate with confidence ``m``, remove it, repeat (candidates touching an earlier one are
  dropped). So a blob of confident false positives that merges into one region touching a lesion
  still gives one candidate per peak.
* A candidate hits a GT lesion when their IoU (or Dice) reaches ``min_overlap`` (0.1, picai's
  default). Candidates and lesions are paired one-to-one, most pairs first, then the largest total
  overlap (Hungarian algorithm); an unpaired GT lesion is missed; a candidate overlapping no GT
  lesion enough is a false positive (one that overlaps enough but lost its lesion to another
  candidate is neither, as picai counts it).
* The curve: at each candidate confidence ``t`` (descending), recall = paired lesions with
  confidence >= t / GT lesions, FP per scan = false positives with confidence >= t / scans; the
  lowest threshold is extended to infinite FP as picai_eval does (so the least confident
  candidate counts only when some lesion is missed anyway). ``recall_at[r]`` = recall of
  the last point with FP per scan <= r; CPM = mean of ``recall_at`` over 1/8 .. 8 FP per scan.

The matching and curve are written here (picai_eval is a test oracle, not a dependency: its
evaluate() needs scikit-learn and reads whole cohorts); ``tests/test_peer_agreement.py`` checks
they agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from medseg.lesions import keep_inside, label_lesions

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Scan:
    """Probabilities (X, Y, Z), reference mask (X, Y, Z), voxel volume (mm^3) and spacing of the
    array axes (mm; None = isotropic voxels of that volume) of one scan; ``region``: optional bool
    (X, Y, Z) region mask (``medseg tune --mask``): lesions mostly outside it are not predictions."""

    prob: np.ndarray
    ref: np.ndarray
    voxel_mm3: float
    spacing: tuple[float, ...] | None = None
    region: np.ndarray | None = None

    def axis_spacing(self) -> np.ndarray:
        """(3,) mm per array axis."""
        if self.spacing is not None:
            return np.asarray(self.spacing, float)
        return np.full(self.prob.ndim, np.cbrt(self.voxel_mm3))


def detection_map(prob: np.ndarray, max_candidates: int = 50, floor: float = 0.05) -> np.ndarray:
    """(X, Y, Z) map: each candidate's voxels hold its confidence, 0 elsewhere (picai's y_det).

    PI-CAI's dynamic extraction (``report_guided_annotation.extract_lesion_candidates`` with
    ``threshold="dynamic"``, no minimum size), re-implemented with one labelling per candidate
    instead of a pass over the volume per blob: on the faint background of an undertrained sigmoid
    map (thousands of blobs) the original took minutes per scan. ``tests/test_peer_agreement.py``
    checks the maps are identical. Probabilities below ``floor`` are set to 0 first (candidates
    need a peak of at least ``floor``), and the work is done inside their bounding box.
    """
    det = np.zeros(prob.shape, np.float32)
    keep = prob >= floor
    if not keep.any():
        return det
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(keep))
    det[box] = _dynamic_candidates(
        np.where(keep[box], prob[box], 0.0).astype(np.float32), max_candidates
    )  # a fresh copy
    return det


def _dynamic_candidates(work: np.ndarray, max_candidates: int, factor: float = 2.5, stop: float = 0.01) -> np.ndarray:
    """The extraction loop: the component of ``work >= peak / factor`` holding the highest peak
    (ties: the blob first in raster order) becomes a candidate with confidence = peak unless it
    touches (26-connected) an earlier candidate; either way it leaves ``work``. Unlike PI-CAI the
    loop also ends after ``5 * max_candidates`` blobs (on maps of noise, thousands of peaks next
    to candidates would each cost a labelling of the volume; trained maps never get there)."""
    det, found, ones = np.zeros_like(work), 0, np.ones((3, 3, 3), bool)
    for _ in range(5 * max_candidates):
        if found >= max_candidates:
            break
        peak = work.max()  # float32, as PI-CAI's threshold arithmetic
        if peak < stop:
            break
        labels, _ = ndimage.label(work >= peak / factor, ones)
        blob = labels == labels[work == peak].min()  # the blobs holding the peak: the first in raster order
        region = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(blob))
        if not (ndimage.binary_dilation(blob[region], ones) & (det[region] > 0)).any():
            det[blob] = peak
            found += 1
        work[blob] = 0.0
    return det


def candidates(det: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label a detection map as picai_eval reads it: (labels (X, Y, Z), confidence per label)."""
    labels, n = ndimage.label(det > 0, np.ones((3, 3, 3)))
    conf = np.asarray(ndimage.maximum(det, labels, np.arange(1, n + 1)), float) if n else np.zeros(0)
    return labels, conf


def lesion_results(
    det: np.ndarray, ref: np.ndarray, min_overlap: float = 0.1, overlap: str = "iou", connectivity: int = 26
) -> list[tuple[int, float]]:
    """(is_lesion, confidence) per paired lesion, missed lesion (confidence 0) and false positive."""
    c_lab, conf = candidates(det)
    r_lab, n_r = label_lesions(ref, connectivity)
    if n_r == 0:
        return [(0, float(c)) for c in conf]
    n_c = len(conf)
    pair = r_lab.ravel().astype(np.int64) * (n_c + 1) + c_lab.ravel()
    inter = np.bincount(pair, minlength=(n_r + 1) * (n_c + 1)).reshape(n_r + 1, n_c + 1)[1:, 1:]
    rs = np.bincount(r_lab.ravel(), minlength=n_r + 1)[1:, None]
    cs = np.bincount(c_lab.ravel(), minlength=n_c + 1)[None, 1:]
    score = inter / np.maximum(rs + cs - inter, 1) if overlap == "iou" else 2 * inter / np.maximum(rs + cs, 1)
    score = np.where(score >= min_overlap, score, 0.0)
    score = np.where(score > 0, score + 1, 0.0)  # most pairs first, then most overlap
    rows, cols = linear_sum_assignment(score, maximize=True)
    keep = score[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    out = [(1, float(conf[c])) for c in cols] + [(1, 0.0)] * (n_r - len(rows))
    return out + [(0, float(conf[c])) for c in np.nonzero(~(score > 0).any(0))[0]]


def curve(results: Sequence[tuple[int, float]], scans: int) -> tuple[np.ndarray, np.ndarray]:
    """(FP per scan, recall) at each confidence threshold, descending (picai_eval's lesion curve)."""
    truth = np.array([r[0] for r in results], float)
    conf = np.array([r[1] for r in results], float)
    lesions = truth.sum()
    thresholds = np.unique(conf)[::-1]
    tp = np.array([(truth * (conf >= t)).sum() for t in thresholds])
    fp = np.array([((1 - truth) * (conf >= t)).sum() for t in thresholds])
    if len(tp) >= 2:
        tp[-1], fp[-1] = tp[-2], np.inf
    else:
        tp, fp = np.zeros(2), np.array([0.0, np.inf])
    return fp / scans, (tp / lesions if lesions else np.full(len(tp), np.nan))


def froc(
    scans: Sequence[Scan],
    connectivity: int = 26,
    min_overlap: float = 0.1,
    overlap: str = "iou",
    max_candidates: int = 50,
) -> dict:
    """FROC of ``scans`` (see module docstring): FP per scan and recall per threshold, recall at
    the standard FP rates and CPM. A scan's ``region`` drops the candidates mostly outside it."""
    results = []
    for s in scans:
        det = detection_map(s.prob, max_candidates)
        if s.region is not None:
            det = np.where(keep_inside(det > 0, s.region, connectivity), det, 0)
        results += lesion_results(det, s.ref, min_overlap, overlap, connectivity)
    fps, recall = curve(results, len(scans))
    at = {r: float(recall[fps <= r][-1]) if (fps <= r).any() else 0.0 for r in FP_RATES}
    finite = np.isfinite(fps)
    return {
        "fp_per_scan": fps[finite].tolist(),
        "recall": np.nan_to_num(recall[finite]).tolist(),
        "recall_at": at,
        "cpm": float(np.mean(list(at.values()))),
        "candidates": "picai dynamic",
        "min_overlap": min_overlap,
        "overlap": overlap,
    }
