"""What the review shows of one scan: its volumes on the mask's grid, every predicted and
reference lesion with its volume, centroid (world mm), probabilities and match status, and the
scan's metrics.

Statuses follow ``medseg evaluate`` (:func:`medseg.evaluation.tables.case_tables`, the matching
rule named on every page): a predicted lesion is ``matched`` or a ``false_positive``, a reference
lesion ``matched`` or ``missed``; without a reference every predicted lesion is ``predicted``.
Lesion ids are those of ``predict``'s lesion tables and of ``evaluate``'s ``lesions.csv``: the
connected components numbered in scan order (:func:`medseg.lesions.label_lesions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.evaluation.tables import EvalOptions, case_tables
from medseg.inference.lesion_table import lesion_rows
from medseg.io.volumes import read_array, read_lesion_mask
from medseg.review.cases import ReviewCase

STATUSES = ("matched", "missed", "false_positive", "predicted")


@dataclass(frozen=True)
class Lesion:
    """One lesion of the prediction (``kind`` "pred") or of the reference ("gt").

    Attributes:
        centroid_mm: (x, y, z) centre of mass in world (scanner RAS) mm, as the lesion tables.
        bbox_min, bbox_max: voxel index box (inclusive) on the mask's grid.
        status: one of :data:`STATUSES`; matches: ids of the lesions of the other kind it matches.
        max_prob, mean_prob: over its voxels, when the mask has a probability map (else None).
    """

    kind: str
    id: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    bbox_min: tuple[int, int, int]
    bbox_max: tuple[int, int, int]
    status: str
    matches: tuple[int, ...] = ()
    max_prob: float | None = None
    mean_prob: float | None = None

    @property
    def key(self) -> str:
        """``pred:3`` / ``gt:1``: the lesion's name in reviewer marks."""
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class Volumes:
    """A scan's arrays on the mask's grid: ``pred`` and ``ref`` bool (X, Y, Z), ``image`` float32
    (X, Y, Z) (channel 0 of a 4D scan), ``prob`` float32 (X, Y, Z) in [0, 1]; None = not given.
    ``affine`` (4, 4): the mask's voxel-to-world matrix."""

    pred: np.ndarray
    affine: np.ndarray
    image: np.ndarray | None = None
    ref: np.ndarray | None = None
    prob: np.ndarray | None = None


@dataclass(frozen=True)
class Analysis:
    """The review of one scan: its volumes, lesions (predicted first, then reference) and the
    metrics row of ``medseg evaluate`` (None without a reference)."""

    case: ReviewCase
    volumes: Volumes
    lesions: tuple[Lesion, ...]
    metrics: dict[str, Any] | None = None
    pred_volume_mm3: float = 0.0


def _on_grid(path: Path, data: np.ndarray, affine: np.ndarray, volumes_affine: np.ndarray, shape: tuple) -> np.ndarray:
    """``data`` reduced to 3D (channel 0), checked to lie on the mask's grid.

    Raises:
        MedsegError: another shape or affine than the mask's.
    """
    data = data.reshape(data.shape[:3] + (-1,))[..., 0] if data.ndim > 3 else data
    if tuple(data.shape) != tuple(shape) or not np.allclose(affine, volumes_affine, atol=1e-3):
        raise MedsegError(
            f"{path}: grid {tuple(data.shape)} differs from its mask's {tuple(shape)} (or its affine does); "
            "review masks with the scan and label they were predicted on"
        )
    return data


def read_volumes(case: ReviewCase, lesion_labels: tuple[int, ...] | None = None) -> Volumes:
    """Read the mask and whatever else ``case`` names, every array checked against the mask's grid.

    Raises:
        MedsegError: an unreadable file, or one on another grid than the mask.
    """
    pred, affine = read_lesion_mask(case.mask)
    image = ref = prob = None
    if case.image is not None:
        data, aff = read_array(case.image)
        image = _on_grid(case.image, np.asarray(data, np.float32), aff, affine, pred.shape)
    if case.ref is not None:
        data, aff = read_lesion_mask(case.ref, lesion_labels)
        ref = _on_grid(case.ref, data, aff, affine, pred.shape)
    if case.prob is not None:
        data, aff = read_array(case.prob)
        prob = _on_grid(case.prob, np.asarray(data, np.float32), aff, affine, pred.shape)
        prob = prob if str(case.prob).endswith((".nii", ".nii.gz")) else prob / 255.0  # NRRD/MHA: 0-255
    return Volumes(pred, affine, image, ref, prob)


def _lesions(
    kind: str, mask: np.ndarray, prob: np.ndarray | None, affine: np.ndarray, connectivity: int, match: dict
) -> list[Lesion]:
    """The lesions of one mask; ``match``: ``{id: (status, matched ids)}``, a lesion not in it is
    ``predicted`` (no reference)."""
    rows = lesion_rows(mask, prob if prob is not None else np.zeros(mask.shape, np.float32), affine, connectivity)
    return [
        Lesion(
            kind,
            row["id"],
            row["volume_mm3"],
            (row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]),
            tuple(row["bbox_min"]),
            tuple(row["bbox_max"]),
            *match.get(row["id"], ("predicted", ())),
            max_prob=row["max_prob"] if prob is not None else None,
            mean_prob=row["mean_prob"] if prob is not None else None,
        )
        for row in rows
    ]


def analyse(case: ReviewCase, volumes: Volumes, opts: EvalOptions) -> Analysis:
    """Lesions, statuses and metrics of one scan under ``opts`` (its matching rule and dilation;
    lesion size filters and BraTS protocols are not applied: every lesion of the mask is listed)."""
    v, conn = volumes, opts.rule.connectivity
    plain = EvalOptions(rule=opts.rule, dilate=opts.dilate, lesion_labels=opts.lesion_labels)
    if v.ref is None:
        lesions = _lesions("pred", v.pred, v.prob, v.affine, conn, {})
        return Analysis(case, v, tuple(lesions), None, sum(les.volume_mm3 for les in lesions))
    row, table, _ = case_tables(v.pred, v.ref, v.affine, case.name, plain, with_hd95=False)
    status = {}
    for item in table:
        ids = tuple(int(i) for i in item["matches"].split())
        won = "matched" if item["matched"] else "false_positive" if item["kind"] == "pred" else "missed"
        status[(item["kind"], item["id"])] = (won, ids)
    pred = _lesions(
        "pred", v.pred, v.prob, v.affine, conn, {i: status[("pred", i)] for (k, i) in status if k == "pred"}
    )
    gt = _lesions("gt", v.ref, None, v.affine, conn, {i: status[("gt", i)] for (k, i) in status if k == "gt"})
    metrics = {k: row[k] for k in ("dice", "tp", "fn", "fp", "gt_lesions", "pred_lesions", "lesion_recall")}
    metrics["ref_volume_mm3"] = row["ref_volume_mm3"]
    return Analysis(case, v, tuple(pred + gt), metrics, row["pred_volume_mm3"])
