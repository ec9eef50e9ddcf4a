"""Reviewer decisions in ``medseg evaluate``'s tables (``--marks review_marks.json``).

A reviewer accepts or rejects lesions on the review site (:mod:`medseg.io.review_marks`). Rejecting a
predicted lesion says "this is not a lesion": a rejected false positive is a detection the
reviewer agrees is wrong; accepting a false positive says the reference missed a real lesion.

* ``lesions.csv`` gains a ``review`` column: ``accept``, ``reject``, ``stale`` (a mark on this
  lesion id whose lesion has moved: its recorded centroid lies more than
  :data:`CENTROID_TOLERANCE_MM` from this lesion's, so the mark was made on other masks and is
  not applied) or empty.
* ``summary.json`` gains ``review`` (:func:`review_summary`): how many predicted lesions were
  accepted and rejected, how many of the rejected ones are false positives, and the false
  positives per scan once the rejected false positives are removed
  (``fp_per_scan_after_review = (fp - rejected_false_positives) / scans``).

Lesions are named as on the review site: the connected components of the whole mask, numbered
in scan order (the ids of ``lesions.csv`` when no lesion size filter renumbers them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from medseg.lesions import label_lesions

CENTROID_TOLERANCE_MM = 0.5
DECISIONS = ("accept", "reject")


@dataclass(frozen=True)
class Verdict:
    """One reviewer decision on a lesion: ``decision`` (accept / reject) and, when the mark
    recorded it, the lesion's centroid (x, y, z) in world mm when it was marked."""

    decision: str
    centroid_mm: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class ReviewDecisions:
    """Reviewer decisions, read from ``source``: ``verdicts[mask name][(kind, lesion id)]``,
    kind ``pred`` or ``gt``."""

    source: str
    verdicts: Mapping[str, Mapping[tuple[str, int], Verdict]]

    def of_case(self, case: str) -> Mapping[tuple[str, int], Verdict]:
        """The verdicts on the lesions of the mask ``case``, by (kind, id)."""
        return self.verdicts.get(case, {})


def lesion_centroids(mask: np.ndarray, affine: np.ndarray, connectivity: int) -> np.ndarray:
    """World (x, y, z) mm centre of mass of each lesion of a (X, Y, Z) mask, in label order:
    (n, 3)."""
    labels, n = label_lesions(mask, connectivity)
    if n == 0:
        return np.zeros((0, 3))
    coords = np.nonzero(labels)  # lesion voxels only: memory follows the lesions, not the scan
    ids = labels[coords]
    sizes = np.bincount(ids, minlength=n + 1)[1:]
    voxel = np.stack([np.bincount(ids, weights=c, minlength=n + 1)[1:] / sizes for c in coords], axis=1)
    return voxel @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def apply_decisions(
    rows: list[dict],
    case: str,
    masks: tuple[np.ndarray, np.ndarray],
    affine: np.ndarray,
    connectivity: int,
    decisions: ReviewDecisions,
) -> set[tuple[str, str, int]]:
    """Add the ``review`` column to one case's lesion ``rows`` (kinds ``pred`` and ``gt``) from
    the verdicts on mask ``case``; ``masks``: (prediction, reference) bool (X, Y, Z). Returns
    the keys of the verdicts applied (or found stale)."""
    verdicts, found = decisions.of_case(case), set()
    centroids = {}
    if verdicts:
        centroids = {kind: lesion_centroids(m, affine, connectivity) for kind, m in zip(("pred", "gt"), masks)}
    for row in rows:
        verdict = verdicts.get((row["kind"], row["id"]))
        row["review"] = ""
        if verdict is None:
            continue
        found.add((case, row["kind"], row["id"]))
        here = centroids[row["kind"]][row["id"] - 1]
        moved = verdict.centroid_mm is not None and np.linalg.norm(here - verdict.centroid_mm) > CENTROID_TOLERANCE_MM
        row["review"] = "stale" if moved else verdict.decision
    return found


def review_summary(
    lesions: list[dict], scans: Collection[str], decisions: ReviewDecisions, found: Collection[tuple[str, str, int]]
) -> dict:
    """Counts of the verdicts applied to ``lesions`` (rows with their ``review`` column) of the
    masks ``scans`` (see the module docstring); ``stale``: marks not applied as their lesion
    moved; ``not_found``: marks on one of ``scans`` naming a lesion it does not have (``found``:
    the keys :func:`apply_decisions` met)."""
    pred = [row for row in lesions if row["kind"] == "pred"]
    gt = [row for row in lesions if row["kind"] == "gt"]
    rejected_fp = sum(1 for row in pred if row["review"] == "reject" and not row["matched"])
    fp = sum(1 for row in pred if not row["matched"])
    missing = [(c, *key) for c in set(scans) for key in decisions.of_case(c) if (c, *key) not in found]
    return {
        "marks": decisions.source,
        "pred_accepted": sum(1 for row in pred if row["review"] == "accept"),
        "pred_rejected": sum(1 for row in pred if row["review"] == "reject"),
        "rejected_false_positives": rejected_fp,
        "rejected_matched": sum(1 for row in pred if row["review"] == "reject" and row["matched"]),
        "accepted_false_positives": sum(1 for row in pred if row["review"] == "accept" and not row["matched"]),
        "gt_accepted": sum(1 for row in gt if row["review"] == "accept"),
        "gt_rejected": sum(1 for row in gt if row["review"] == "reject"),
        "stale": sum(1 for row in lesions if row["review"] == "stale"),
        "not_found": len(missing),
        "fp_after_review": fp - rejected_fp,
        "fp_per_scan_after_review": (fp - rejected_fp) / len(scans) if scans else float("nan"),
    }
