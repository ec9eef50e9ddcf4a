"""Overlays of the worst validation cases: for the largest missed lesion and the largest false
positive, an axial slice through the lesion's centre, whole (with a box where the lesion is) and
cropped around the lesion, ground truth outlined in green and prediction in red, with a legend
that names the colours and the lesion's volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from scipy import ndimage

from medseg.lesions import label_lesions
from medseg.viz.plots import save_figure

GT_COLOUR, PRED_COLOUR = "lime", "red"
MARGIN = 8  # voxels around the lesion in the cropped panel (at least 32 voxels wide)


@dataclass(frozen=True)
class Focus:
    """A lesion to show: its axial slice, in-plane box (x0, x1, y0, y1) and volume (mm^3)."""

    z: int
    box: tuple[int, int, int, int]
    volume_mm3: float


def largest_unmatched(mask: np.ndarray, other: np.ndarray, voxel_mm3: float = 1.0) -> Focus | None:
    """The largest component of ``mask`` (X, Y, Z) that ``other`` does not touch, or None."""
    labels, n = label_lesions(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    touched = np.unique(labels[other.astype(bool) & (labels > 0)])
    sizes[touched] = 0
    sizes[0] = 0
    best = int(np.argmax(sizes))
    if sizes[best] == 0:
        return None
    sx, sy, sz = ndimage.find_objects((labels == best).astype(np.int32))[0]
    return Focus((sz.start + sz.stop - 1) // 2, (sx.start, sx.stop, sy.start, sy.stop), float(sizes[best]) * voxel_mm3)


def _crop(box: tuple[int, int, int, int], shape: Sequence[int]) -> tuple[slice, slice]:
    """The box grown by :data:`MARGIN` (and to at least 32 voxels), clipped to the slice."""
    out = []
    for lo, hi, size in ((box[0], box[1], shape[0]), (box[2], box[3], shape[1])):
        half = max((hi - lo) // 2 + MARGIN, 16)
        centre = (lo + hi) // 2
        out.append(slice(max(centre - half, 0), min(centre + half, size)))
    return out[0], out[1]


def _panel(
    ax, image: np.ndarray, ref: np.ndarray, pred: np.ndarray, aspect: float, window: tuple[float, float]
) -> None:
    ax.imshow(
        image.T, cmap="gray", origin="lower", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest"
    )
    for mask, colour, width in ((ref, GT_COLOUR, 2.0), (pred, PRED_COLOUR, 1.2)):
        if mask.any():
            ax.contour(mask.T.astype(float), levels=[0.5], colors=colour, linewidths=width)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_focus(
    case_id: str,
    kind: str,
    focus: Focus,
    image: np.ndarray,
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    path: Path,
    title: str | None = None,
) -> None:
    """Write one overlay PNG (whole slice and crop) for ``focus``; volumes (X, Y, Z); ``title``
    replaces "<case>: largest <kind> lesion"."""
    z, aspect = focus.z, float(spacing[1]) / float(spacing[0])
    img, r, p = image[:, :, z], ref[:, :, z].astype(bool), pred[:, :, z].astype(bool)
    window = tuple(float(v) for v in np.percentile(img, (1, 99))) if img.size else (0.0, 1.0)
    fig = Figure(figsize=(8.4, 4.6), dpi=110)
    whole, zoom = fig.subplots(1, 2)
    _panel(whole, img, r, p, aspect, window)
    cx, cy = _crop(focus.box, img.shape)
    whole.add_patch(
        Rectangle(
            (cx.start, cy.start), cx.stop - cx.start, cy.stop - cy.start, fill=False, edgecolor="yellow", linewidth=1
        )
    )
    _panel(zoom, img[cx, cy], r[cx, cy], p[cx, cy], aspect, window)
    whole.set_title(f"axial slice z={z}", fontsize=9)
    zoom.set_title(f"{kind.replace('_', ' ')} lesion: {focus.volume_mm3:.0f} mm³ (zoomed)", fontsize=9)
    handles = [
        Line2D([], [], color=GT_COLOUR, linewidth=2, label="ground truth"),
        Line2D([], [], color=PRED_COLOUR, linewidth=1.2, label="prediction"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title or f"{case_id}: largest {kind.replace('_', ' ')} lesion", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.1, wspace=0.05)
    save_figure(fig, path, dpi=fig.dpi)


def overlays(
    case_id: str,
    image: np.ndarray,
    pred: np.ndarray,
    ref: np.ndarray,
    out_dir: Path,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> list[Path]:
    """PNGs for the largest missed lesion and the largest false positive of one case (volumes
    (X, Y, Z) on a grid of ``spacing`` mm); nothing when there is neither."""
    out_dir.mkdir(parents=True, exist_ok=True)
    voxel = float(np.prod(spacing))
    written = []
    for kind, focus in (
        ("missed", largest_unmatched(ref, pred, voxel)),
        ("false_positive", largest_unmatched(pred, ref, voxel)),
    ):
        if focus is not None:
            path = out_dir / f"{case_id}_{kind}.png"
            draw_focus(case_id, kind, focus, image, pred, ref, spacing, path)
            written.append(path)
    return written
