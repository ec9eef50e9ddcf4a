"""One scan of the review site: its page data (display volumes, lesion table, metrics), its
thumbnail and the crops around each missed and each false-positive lesion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.review.analysis import Analysis, Lesion
from medseg.review.display import (
    coarse_image,
    coarse_mask,
    display_grid,
    encode_image,
    encode_mask,
    intensity_range,
)
from medseg.viz.overlays import Focus, draw_focus
from medseg.viz.review_plots import most_lesion_slice, thumbnail_rgb, write_png
from medseg.viz.show import to_ras

CROP_KINDS = ("missed", "false_positive")  # the statuses whose lesions get a crop
MAX_CROPS_PER_KIND = 6  # per scan: a poor model's hundred false positives would take minutes of pictures


@dataclass(frozen=True)
class Thumbnail:
    """What a thumbnail shows: the axial slice ``z`` of the RAS-ordered volume (the one with the
    most predicted lesion, else the most reference lesion, else the middle one)."""

    z: int
    width: int
    height: int


def lesion_record(lesion: Lesion) -> dict[str, Any]:
    """A lesion as the page's JSON (volumes to 0.1 mm^3, coordinates to 0.01 mm)."""
    return {
        "key": lesion.key,
        "kind": lesion.kind,
        "id": lesion.id,
        "volume_mm3": round(lesion.volume_mm3, 1),
        "centroid_mm": [round(c, 2) for c in lesion.centroid_mm],
        "status": lesion.status,
        "matches": list(lesion.matches),
        "max_prob": lesion.max_prob,
        "mean_prob": lesion.mean_prob,
    }


def display_volumes(analysis: Analysis, max_voxels: int) -> dict[str, Any]:
    """The page's volumes (base64 ``.nii.gz``: ``image``, ``pred``, ``ref``; None when not given;
    a scan without its image shows an empty one) and the display grid (:mod:`medseg.review.display`)."""
    v = analysis.volumes
    grid = display_grid(v.pred.shape, v.affine, max_voxels)
    image = coarse_image(v.image, grid.step) if v.image is not None else np.zeros(grid.shape, np.float32)
    encoded, window = encode_image(image, grid.affine)
    return {
        "image": encoded,
        "pred": encode_mask(coarse_mask(v.pred, grid.step), grid.affine),
        "ref": encode_mask(coarse_mask(v.ref, grid.step), grid.affine) if v.ref is not None else None,
        "window": [round(window[0], 3), round(window[1], 3)],
        "step": grid.step,
        "shape": list(v.pred.shape),
        "display_shape": list(grid.shape),
    }


def write_thumbnail(analysis: Analysis, path: Path) -> Thumbnail:
    """Write the scan's thumbnail PNG (:func:`medseg.viz.review_plots.thumbnail_rgb`, 2 pixels per voxel)."""
    v = analysis.volumes
    pred = to_ras(v.pred, v.affine).data
    ref = to_ras(v.ref, v.affine).data if v.ref is not None else None
    image = to_ras(v.image, v.affine).data if v.image is not None else np.zeros(pred.shape, np.float32)
    z = most_lesion_slice(pred)
    z = z if z is not None else most_lesion_slice(ref) if ref is not None else None
    z = z if z is not None else pred.shape[2] // 2
    rgb = thumbnail_rgb(
        image[:, :, z], pred[:, :, z], ref[:, :, z] if ref is not None else None, intensity_range(image)
    )
    write_png(rgb, path)
    return Thumbnail(z, rgb.shape[1], rgb.shape[0])


def crop_lesions(analysis: Analysis, per_kind: int = MAX_CROPS_PER_KIND) -> list[Lesion]:
    """The lesions that get a crop: the ``per_kind`` largest missed and the ``per_kind`` largest
    false-positive lesions of the scan (every one is in its lesion table)."""
    chosen = []
    for status in CROP_KINDS:
        found = sorted((les for les in analysis.lesions if les.status == status), key=lambda les: -les.volume_mm3)
        chosen += found[:per_kind]
    return chosen


def write_crops(analysis: Analysis, claim: Callable[[str, str], Path]) -> list[dict[str, str]]:
    """A PNG around each lesion of :func:`crop_lesions` (:func:`medseg.viz.overlays.draw_focus`:
    its axial slice whole and zoomed, reference green, prediction red); ``claim(name, owner)``
    gives each file's path. Returns ``[{"key": "gt:2", "file": name}]``."""
    v = analysis.volumes
    image = v.image if v.image is not None else np.zeros(v.pred.shape, np.float32)
    ref = v.ref if v.ref is not None else np.zeros(v.pred.shape, bool)
    spacing = np.linalg.norm(v.affine[:3, :3], axis=0)
    crops = []
    for lesion in crop_lesions(analysis):
        name = f"img/crop_{analysis.case.name}_{lesion.kind}{lesion.id}.png"
        lo, hi = lesion.bbox_min, lesion.bbox_max
        focus = Focus((lo[2] + hi[2]) // 2, (lo[0], hi[0] + 1, lo[1], hi[1] + 1), lesion.volume_mm3)
        title = f"{analysis.case.name}: {lesion.status.replace('_', ' ')} lesion {lesion.key}"
        path = claim(name, f"the crop of lesion {lesion.key} of {analysis.case.name}")
        draw_focus(analysis.case.name, lesion.status, focus, image, v.pred, ref, spacing, path, title)
        crops.append({"key": lesion.key, "file": name})
    return crops


def scan_record(analysis: Analysis, thumb: Thumbnail, names: dict[str, str]) -> dict[str, Any]:
    """The scan's row of the index (no volumes): counts, volume, metrics, files."""
    m = analysis.metrics or {}
    statuses = [lesion.status for lesion in analysis.lesions]
    return {
        "name": analysis.case.name,
        "page": names["page"],
        "thumb": names["thumb"],
        "thumb_size": [thumb.width, thumb.height],
        "thumb_slice": thumb.z,
        "lesions": sum(1 for lesion in analysis.lesions if lesion.kind == "pred"),
        "volume_mm3": round(analysis.pred_volume_mm3, 1),
        "ref_volume_mm3": round(m["ref_volume_mm3"], 1) if m else None,
        "dice": round(m["dice"], 4) if m else None,
        "lesion_recall": round(m["lesion_recall"], 4) if m else None,
        "missed": statuses.count("missed"),
        "false_positives": statuses.count("false_positive"),
        "gt_lesions": m.get("gt_lesions"),
        "has_image": analysis.volumes.image is not None,
        "has_ref": analysis.volumes.ref is not None,
        "has_prob": analysis.volumes.prob is not None,
    }
