"""``medseg show``: one PNG of a case with its lesions, to look at before and after training.

Three orthogonal slices (axial, coronal, sagittal) through the centre of the largest lesion of
the ground-truth label (else of the prediction, else through the volume centre), shown in RAS
orientation whatever the file's own axis order (the closest canonical orientation of the affine,
as nibabel's ``as_closest_canonical``: R to the right, A and S up), with the voxel spacing as the
aspect ratio. Ground truth is outlined in green, the prediction in red. Multi-channel (4D) scans
show channel 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from medseg.errors import MedsegError
from medseg.io.outputs import OutputPlan
from medseg.io.paths import strip_suffix
from medseg.io.volumes import read_array
from medseg.lesions import label_lesions
from medseg.viz.plots import save_figure

GT_COLOUR, PRED_COLOUR = "lime", "red"


FIGSIZE, DPI = (12.0, 4.5), 100  # inches, dots per inch: the PNG is 1200 x 450 pixels


@dataclass(frozen=True)
class Volume:
    """A volume turned to RAS axis order: ``data`` (X, Y, Z) with axis 0 towards Right, 1 towards
    Anterior, 2 towards Superior; ``spacing`` (3,) mm along those axes; ``affine`` (4, 4) of
    the reoriented grid."""

    data: np.ndarray
    spacing: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class ShowResult:
    """What :func:`show_case` drew: the PNG, lesion counts (None = no such mask given) and the
    (x, y, z) RAS voxel the three slices pass through."""

    png: Path
    gt_lesions: int | None
    pred_lesions: int | None
    centre: tuple[int, int, int]


def to_ras(data: np.ndarray, affine: np.ndarray) -> Volume:
    """Flip and permute a (X, Y, Z) array into the closest RAS axis order.

    Args:
        data: (X, Y, Z) voxels in the file's order.
        affine: (4, 4) voxel-to-RAS-mm matrix of ``data``.
    """
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S")))
    out = apply_orientation(data, transform)
    new_affine = affine @ inv_ornt_aff(transform, data.shape)
    return Volume(np.ascontiguousarray(out), np.linalg.norm(new_affine[:3, :3], axis=0), new_affine)


def _read(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) voxels (channel 0 of a 4D file) and the (4, 4) affine of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: no such {what} file; check the path")
    data, affine = read_array(path)
    if data.ndim == 4:
        data = data[..., 0]
    elif data.ndim > 4 and all(s == 1 for s in data.shape[4:]):
        data = data.reshape(data.shape[:4])[..., 0]
    if data.ndim != 3 or min(data.shape) < 1:
        raise MedsegError(f"{path}: shape {data.shape} is not a 3D volume; medseg show draws 3D scans (4D: channel 0)")
    return data, affine


def read_mask(
    path: Path,
    image_shape: Sequence[int],
    image_affine: np.ndarray,
    image: Path,
    lesion_labels: Sequence[int] | None = None,
    atol: float = 1e-3,
) -> np.ndarray:
    """Boolean (X, Y, Z) lesion mask of a label or prediction file on the image's grid.

    Label values in ``lesion_labels`` are lesion (None: values above 0.5, i.e. any non-zero
    label, or a probability map thresholded at 0.5).

    Raises:
        MedsegError: missing file, or a grid (shape or affine) other than the image's.
    """
    data, affine = _read(path, "mask")
    if tuple(data.shape) != tuple(image_shape):
        raise MedsegError(
            f"{path}: shape {tuple(data.shape)} differs from the image's {tuple(image_shape)} ({Path(image).name}); "
            "use the mask made for this image"
        )
    if not np.allclose(affine, image_affine, atol=atol):
        raise MedsegError(
            f"{path}: affine differs from the image's ({Path(image).name}) by more than {atol} mm; "
            "resample the mask onto the image grid (nearest neighbour)"
        )
    # not lesions.lesion_mask (> 0): --pred may also be a probability map ('predict --save-prob'),
    # where every non-zero voxel would count; > 0.5 is the same rule for integer labels
    return np.isin(np.rint(data), list(lesion_labels)) if lesion_labels else data > 0.5


def lesion_centre(mask: np.ndarray) -> tuple[tuple[int, int, int] | None, int]:
    """The voxel of the largest 26-connected lesion of ``mask`` (X, Y, Z) nearest its centroid
    (so the three slices through it all cut the lesion), and the number of lesions; (None, 0) for
    an empty mask."""
    labels, n = label_lesions(mask)
    if n == 0:
        return None, 0
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    voxels = np.argwhere(labels == largest)
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return (int(nearest[0]), int(nearest[1]), int(nearest[2])), n


def _window(data: np.ndarray) -> tuple[float, float]:
    """Display range: 1st-99th percentile of the non-background voxels."""
    finite = data[np.isfinite(data)]
    body = finite[finite > finite.min()] if finite.size and (finite > finite.min()).any() else finite
    if body.size == 0:
        return 0.0, 1.0
    sample = body[:: max(1, body.size // 1_000_000)]
    lo, hi = (float(v) for v in np.percentile(sample, [1, 99]))
    return lo, hi if hi > lo else lo + 1.0


def draw(
    image: Volume,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    centre: tuple[int, int, int],
    title: str,
    out: Path,
) -> None:
    """Write the three-panel PNG.

    Args:
        image: the RAS-ordered volume; ``gt`` and ``pred``: (X, Y, Z) boolean masks on its grid
            (None = not given).
        centre: (x, y, z) voxel of ``image.data`` the slices pass through.
    """
    x, y, z = centre
    sx, sy, sz = (float(s) for s in image.spacing)
    # (name, slicer, horizontal spacing, vertical spacing, (left, right, bottom, top) direction letters)
    views = [
        (f"axial z={z}", np.s_[:, :, z], sx, sy, "LRPA"),
        (f"coronal y={y}", np.s_[:, y, :], sx, sz, "LRIS"),
        (f"sagittal x={x}", np.s_[x, :, :], sy, sz, "PAIS"),
    ]
    vmin, vmax = _window(image.data)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = fig.subplots(1, 3)
    for ax, (name, cut, h, v, letters) in zip(axes, views):
        ax.imshow(
            image.data[cut].T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax, aspect=v / h, interpolation="nearest"
        )
        for mask, colour, width in ((gt, GT_COLOUR, 2.2), (pred, PRED_COLOUR, 1.0)):  # both visible where they agree
            if mask is not None and mask[cut].any():
                ax.contour(mask[cut].T.astype(float), levels=[0.5], colors=colour, linewidths=width)
        for (px, py, ha, va), letter in zip(
            (
                (0.01, 0.5, "left", "center"),
                (0.99, 0.5, "right", "center"),
                (0.5, 0.01, "center", "bottom"),
                (0.5, 0.99, "center", "top"),
            ),
            letters,
        ):
            ax.text(px, py, letter, transform=ax.transAxes, color="yellow", fontsize=9, ha=ha, va=va)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([], [], color=c, linewidth=w, label=text)
        for m, c, w, text in ((gt, GT_COLOUR, 2.2, "ground truth"), (pred, PRED_COLOUR, 1.0, "prediction"))
        if m is not None
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.08, wspace=0.04)
    try:
        save_figure(fig, out, dpi=DPI)
    except OSError as err:
        raise MedsegError(f"{out}: cannot write the picture ({err.strerror or err}); pick another --out") from None


def show_case(
    image: Path,
    pred: Path | None = None,
    label: Path | None = None,
    out: Path | None = None,
    lesion_labels: Sequence[int] | None = None,
) -> ShowResult:
    """Draw ``image`` with the contours of ``label`` (ground truth) and ``pred`` into
    ``<out>/<case>_show.png`` (``out``: a folder, default the current directory).

    Args:
        image: scan (NIfTI, NRRD, MHA), (X, Y, Z) or (X, Y, Z, C) (channel 0 is shown).
        pred, label: masks on the scan's grid; ``lesion_labels`` picks the label values that are
            lesion (default: any non-zero value).

    Raises:
        MedsegError: a missing or unreadable file, a mask on another grid, an unwritable ``out``.
    """
    image = Path(image)
    case = strip_suffix(image)
    out = OutputPlan(
        Path(out) if out is not None else Path.cwd(), [p for p in (image, pred, label) if p is not None]
    ).claim(f"{case}_show.png", "the picture")
    data, affine = _read(image, "image")
    volume = to_ras(data.astype(np.float32, copy=False), affine)
    masks = {}
    for key, path, wanted in (("gt", label, lesion_labels), ("pred", pred, None)):
        if path is not None:
            masks[key] = to_ras(read_mask(Path(path), data.shape, affine, image, wanted), affine).data
    (gt_centre, n_gt), (pred_centre, n_pred) = (
        lesion_centre(masks[k]) if k in masks else (None, 0) for k in ("gt", "pred")
    )
    centre = gt_centre or pred_centre or tuple(int(s) // 2 for s in volume.data.shape)
    counts = [
        f"{what} {n} lesion(s)"
        for what, key, n in (("ground truth", "gt", n_gt), ("prediction", "pred", n_pred))
        if key in masks
    ]
    where = (
        "largest ground-truth lesion" if gt_centre else "largest predicted lesion" if pred_centre else "volume centre"
    )
    title = f"{case}: " + (", ".join(counts) if counts else "no masks") + f"  (slices through the {where})"
    draw(volume, masks.get("gt"), masks.get("pred"), centre, title, out)
    return ShowResult(out, n_gt if "gt" in masks else None, n_pred if "pred" in masks else None, centre)
