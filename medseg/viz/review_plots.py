"""Pictures of the review site: pixel-exact thumbnails (one voxel, ``scale`` x ``scale`` pixels),
predicted against reference lesion volumes, and the Dice of each scan.

A thumbnail is an axial slice of a RAS-ordered volume (:func:`medseg.viz.show.to_ras`) drawn as
``medseg show`` draws it: R to the right, A up. Prediction voxels are tinted red (60 % red over the
grey scan), the reference's outline (its voxels with a neighbour outside it, in the slice) drawn
green over everything; so a test can read the mask back from the PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave
from scipy import ndimage

from medseg.io.write import atomic_write
from medseg.viz.plots import save_figure

PRED_RGB, REF_RGB = np.array([255, 0, 0]), np.array([0, 255, 0])
PRED_ALPHA = 0.6


def most_lesion_slice(mask: np.ndarray) -> int | None:
    """The axial index (axis 2) of a (X, Y, Z) mask with the most lesion voxels; None when empty."""
    counts = mask.reshape(-1, mask.shape[2]).sum(axis=0)
    return int(np.argmax(counts)) if counts.any() else None


def _outline(mask: np.ndarray) -> np.ndarray:
    """Voxels of a 2D mask with a 4-neighbour outside it."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def thumbnail_rgb(
    image: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, window: tuple[float, float], scale: int = 2
) -> np.ndarray:
    """RGB uint8 (Y * scale, X * scale, 3) picture of one axial slice (X, Y) of a RAS volume.

    Args:
        image: (X, Y) scan slice; pred, ref: (X, Y) bool masks (ref None: not drawn).
        window: (lo, hi) intensity mapped to black..white.
    """
    lo, hi = window
    grey = np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[pred] = (1 - PRED_ALPHA) * rgb[pred] + PRED_ALPHA * PRED_RGB
    if ref is not None:
        rgb[_outline(ref)] = REF_RGB
    rgb = np.rint(rgb).astype(np.uint8).transpose(1, 0, 2)[::-1]  # rows: A at the top; columns: R at the right
    return np.kron(rgb, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else rgb


def write_png(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 (H, W, 3) array as a PNG, pixel for pixel, atomically."""
    with atomic_write(path) as tmp:
        imsave(tmp, rgb, format="png")


def plot_lesion_volumes(ref_mm3: Sequence[float], pred_mm3: Sequence[float], path: Path) -> None:
    """Predicted against reference lesion volume (log axes), one point per lesion pair: a
    reference lesion and the predicted lesions it matches. A missed lesion (pred 0) and a false
    positive (ref 0) are drawn on the axes' floor with their own marks."""
    ref, pred = np.asarray(ref_mm3, float), np.asarray(pred_mm3, float)
    positive = np.concatenate([ref[ref > 0], pred[pred > 0], [1.0]])
    floor, top = positive.min() / 3, positive.max() * 3
    fig = Figure(figsize=(5, 4.4))
    ax = fig.subplots()
    both, missed, false = (ref > 0) & (pred > 0), (ref > 0) & (pred == 0), (ref == 0) & (pred > 0)
    ax.plot([floor, top], [floor, top], color="grey", linewidth=0.8, label="equal volume")
    ax.scatter(ref[both], pred[both], s=14, color="tab:blue", label=f"matched ({both.sum()})")
    ax.scatter(
        ref[missed], np.full(missed.sum(), floor), marker="v", color="tab:green", label=f"missed ({missed.sum()})"
    )
    ax.scatter(
        np.full(false.sum(), floor), pred[false], marker="<", color="tab:red", label=f"false positive ({false.sum()})"
    )
    ax.set(xscale="log", yscale="log", xlim=(floor / 1.5, top), ylim=(floor / 1.5, top))
    ax.set_xlabel("reference lesion volume (mm³)")
    ax.set_ylabel("predicted lesion volume (mm³)")
    ax.set_title("Lesion volume: prediction against reference")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.16, right=0.96, top=0.92, bottom=0.12)
    save_figure(fig, path, dpi=100)


def plot_case_dice(names: Sequence[str], dice: Sequence[float], path: Path) -> None:
    """The Dice of each scan as horizontal bars, lowest at the top."""
    order = np.argsort(np.asarray(dice, float), kind="stable")
    fig = Figure(figsize=(5, max(2.0, 0.22 * len(names) + 1.0)))
    ax = fig.subplots()
    ax.barh(range(len(order)), [dice[i] for i in order], color="tab:blue")
    ax.set_yticks(range(len(order)), [names[i] for i in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice")
    ax.set_title("Dice per scan (worst at the top)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.3, right=0.96, top=1 - 0.5 / fig.get_figheight(), bottom=0.6 / fig.get_figheight())
    save_figure(fig, path, dpi=100)
