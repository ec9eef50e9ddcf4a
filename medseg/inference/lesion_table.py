"""Per-lesion table of a predicted mask: id, volume (mm^3), centroid in world (scanner) mm,
bounding box (voxel indices), max and mean probability, confidence.

``confidence`` is the lesion's maximum probability (``max_prob``): the lesion confidence of the
design (a predicted component's peak), the score the FROC of :mod:`medseg.evaluation.froc` ranks
candidates by (a candidate's peak probability) and the one ``predict --min-confidence`` filters on.
It is not calibrated: a model's probabilities can be over- or under-confident, most of all on
another site's scans; rank lesions by it, and pick a cut-off on validation cases (the FROC).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.io.geometry import voxel_volume
from medseg.io.write import write_csv, write_text
from medseg.lesions import label_lesions

FIELDS = (
    "id",
    "voxels",
    "volume_mm3",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "bbox_min",
    "bbox_max",
    "max_prob",
    "mean_prob",
    "confidence",
)


def lesion_rows(mask: np.ndarray, prob: np.ndarray, affine: np.ndarray, connectivity: int = 26) -> list[dict[str, Any]]:
    """One row per connected component of ``mask`` (X, Y, Z), numbered 1.. in scan order.

    Args:
        prob: (X, Y, Z) probabilities on the same grid.
        affine: (4, 4) voxel-to-world matrix of that grid (NIfTI convention, RAS mm).
    """
    labels, n = label_lesions(mask, connectivity)
    if n == 0:
        return []
    # statistics over lesion voxels only (bincount), not over the whole volume: a scan is mostly background
    where = np.nonzero(labels)
    lab = labels[where]
    voxel_mm3 = voxel_volume(affine)
    sizes = np.bincount(lab, minlength=n + 1)[1:].astype(float)
    centroids = np.stack([np.bincount(lab, weights=w, minlength=n + 1)[1:] / sizes for w in where], axis=1)
    world = (affine[:3, :3] @ centroids.T).T + affine[:3, 3]
    values = prob[where].astype(np.float64)
    means = np.bincount(lab, weights=values, minlength=n + 1)[1:] / sizes
    maxima = np.full(n + 1, -np.inf)
    np.maximum.at(maxima, lab, values)
    maxima = maxima[1:]
    boxes = ndimage.find_objects(labels)
    rows = []
    for i in range(n):
        box = boxes[i]
        rows.append(
            {
                "id": i + 1,
                "voxels": int(sizes[i]),
                "volume_mm3": round(float(sizes[i]) * voxel_mm3, 3),
                "centroid_x_mm": round(float(world[i, 0]), 3),
                "centroid_y_mm": round(float(world[i, 1]), 3),
                "centroid_z_mm": round(float(world[i, 2]), 3),
                "bbox_min": [int(s.start) for s in box],
                "bbox_max": [int(s.stop) - 1 for s in box],
                "max_prob": round(float(maxima[i]), 4),
                "mean_prob": round(float(means[i]), 4),
                "confidence": round(float(maxima[i]), 4),
            }
        )
    return rows


def write_table(rows: list[dict[str, Any]], csv_path: Path, json_path: Path) -> None:
    """Write the rows to ``csv_path`` and ``json_path`` atomically (temporary name, then rename)."""
    csv_rows = [
        {**row, "bbox_min": " ".join(map(str, row["bbox_min"])), "bbox_max": " ".join(map(str, row["bbox_max"]))}
        for row in rows
    ]
    write_csv(csv_rows, csv_path, FIELDS)
    write_text(json.dumps(rows, indent=1), json_path)
