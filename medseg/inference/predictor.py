"""Sliding-window prediction of one volume and of many files.

``predict_volume`` preprocesses a scan exactly as in training, runs Gaussian-blended sliding-window
inference, resamples the probability map back onto the scan's own grid (one affine resampling of
probabilities; labels are never interpolated) and thresholds it there, so the mask has the scan's
exact shape, affine and orientation.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from medseg.data.case import image_entry
from medseg.data.profile import PROFILE_KEY
from medseg.errors import MedsegError
from medseg.inference.model import LoadedModel
from medseg.inference.restore import restore_grid
from medseg.io.geometry import read_geometry, voxel_volume
from medseg.io.volumes import read_array
from medseg.lesions import binarize
from medseg.nn.window import sliding_window_probs
from medseg.transforms.preprocess import preprocess


@dataclass
class Prediction:
    """Outputs on the scan's own grid: ``prob`` float32 (X, Y, Z), ``mask`` uint8 (X, Y, Z);
    ``unlike_training``: how the scan lies outside the training scans' profile range
    (:meth:`medseg.data.profile.ProfileRange.unlike`; empty when it does not, or when unknown)."""

    prob: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    unlike_training: tuple[str, ...] = ()


def predict_classes(
    lm: LoadedModel,
    image_path: Path | str | Sequence[Path],
    threshold: float | None = None,
    min_lesion_mm3: float | None = None,
    tta: bool | None = None,
    fill_holes: bool | None = None,
    min_lesion_voxels: int = 0,
    region: np.ndarray | None = None,
    min_confidence: float | None = None,
) -> list[Prediction]:
    """Predict one scan: a file (3D, or 4D with the channels last) or one file per channel, in
    the model's channel order. One :class:`Prediction` per lesion class (``lm.preprocess.classes``), each on
    the (first) file's own voxel grid. ``min_lesion_voxels``: also remove predicted lesions of
    fewer voxels (the larger of the two minimums wins). ``threshold``, ``min_lesion_mm3``, ``tta``, ``fill_holes``:
    overrides of the model's settings (None = the checkpoint's).

    Args:
        region: optional bool (X, Y, Z) region mask (e.g. the brain) on the scan's own grid: lesions
            with more than half of their voxels outside it are removed (:func:`medseg.lesions.binarize`);
            the probability map is left as the model gave it.
        min_confidence: optional; lesions whose maximum probability is below it are removed.

    Raises:
        MedsegError: an unreadable scan, wrong channels, or a ``region`` of another shape than the scan.
    """
    try:
        files = [Path(image_path)] if isinstance(image_path, (str, Path)) else [Path(p) for p in image_path]
        image_path = files[0]
        _same_grid(files)
        steps = preprocess(lm.preprocess, with_label=False, check_finite=True, profile=True)
        data = Compose(steps)({"image": image_entry(files)})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError with the whole chain
        root = _root(exc)
        if isinstance(root, MedsegError):
            raise root from None
        if is_blank(files):  # cropping to the body left nothing: a valid scan with nothing to find
            return blank_prediction(files[0], len(lm.preprocess.classes))
        raise MedsegError(f"{image_path}: cannot be read as a 3D scan ({_last_line(exc)}); check the file") from None
    img = data["image"]
    _check_input(img, lm, image_path)
    probs = sliding_window_probs(lm.model, img[None], lm.icfg, lm.plan.roi_size, lm.device, tta)[0]
    affine = np.asarray(img.meta["original_affine"], dtype=float)
    shape = [int(s) for s in img.meta["spatial_shape"]][:3]
    voxel_mm3 = voxel_volume(affine)
    thr = lm.operating_point.threshold if threshold is None else threshold
    min_mm3 = lm.operating_point.min_lesion_mm3 if min_lesion_mm3 is None else min_lesion_mm3
    fill = lm.icfg.fill_holes if fill_holes is None else fill_holes
    inside = _region_on_grid(region, shape, image_path)
    unlike = tuple(lm.training_scans.unlike(data[PROFILE_KEY])) if lm.training_scans is not None else ()
    out = []
    for c in range(probs.shape[0]):
        prob_np = restore_grid(probs[c : c + 1], np.asarray(img.affine, dtype=float), affine, shape)
        min_voxels = max(min_mm3 / voxel_mm3, min_lesion_voxels)
        mask = binarize(prob_np, thr, min_voxels, lm.connectivity, fill, inside, min_confidence).astype(np.uint8)
        out.append(Prediction(prob_np, mask, affine, unlike))
    return out


def predict_volume(
    lm: LoadedModel,
    image_path: Path | str | Sequence[Path],
    threshold: float | None = None,
    min_lesion_mm3: float | None = None,
    tta: bool | None = None,
    fill_holes: bool | None = None,
    region: np.ndarray | None = None,
    min_confidence: float | None = None,
) -> Prediction:
    """:func:`predict_classes` for a one-class model (the common case); ``region``,
    ``min_confidence``: as there.

    Raises:
        MedsegError: a model with several lesion classes (use :func:`predict_classes`).
    """
    if len(lm.preprocess.classes) > 1:
        raise MedsegError(
            f"this model predicts {len(lm.preprocess.classes)} lesion classes ({', '.join(lm.preprocess.classes)}); "
            "use medseg predict (one mask per class) or medseg.inference.predict_classes"
        )
    return predict_classes(
        lm, image_path, threshold, min_lesion_mm3, tta, fill_holes, region=region, min_confidence=min_confidence
    )[0]


def _region_on_grid(region: np.ndarray | None, shape: Sequence[int], image_path: Path) -> np.ndarray | None:
    """``region`` as bool (X, Y, Z), checked against the scan's grid ``shape`` (None stays None).

    Raises:
        MedsegError: another shape than the scan's.
    """
    if region is None:
        return None
    region = np.asarray(region)
    if region.shape != tuple(shape):
        raise MedsegError(
            f"{image_path}: the region mask has shape {region.shape}, the scan {tuple(shape)}; pass a mask on the "
            "scan's own grid (resample it with nearest-neighbour interpolation first)"
        )
    return region.astype(bool)


def _check_input(img: torch.Tensor, lm: LoadedModel, image_path: Path) -> None:
    """The preprocessed ``img`` (C, X, Y, Z) is 3D with the model's channel count.

    Raises:
        MedsegError: naming the scan: another number of spatial dimensions or of channels.
    """
    if img.ndim != 4:
        raise MedsegError(
            f"{image_path}: has {img.ndim - 1} spatial dimension(s) (shape {tuple(img.shape[1:])}); medseg segments "
            "3D scans"
        )
    if img.shape[0] != lm.preprocess.in_channels:
        names = f" ({', '.join(lm.preprocess.channels)})" if lm.preprocess.channels else ""
        raise MedsegError(
            f"{image_path}: has {img.shape[0]} channel(s), the model expects {lm.preprocess.in_channels}{names}; "
            "pass one file per channel in that order (or a 4D file)"
        )


def _same_grid(files: Sequence[Path], atol: float = 1e-3) -> None:
    """Per-channel files must share one grid (MONAI would stack them without looking)."""
    shape0, affine0 = read_geometry(files[0])
    for path in files:  # each header read once
        shape, affine = (shape0, affine0) if path == files[0] else read_geometry(path)
        if len(shape) < 3 or len(shape) > 4:
            raise MedsegError(
                f"{path}: shape {tuple(shape)} has {len(shape)} dimensions; medseg segments 3D scans "
                "(a 4th axis only for channels)"
            )
        if tuple(shape[:3]) != tuple(shape0[:3]) or not np.allclose(affine, affine0, atol=atol):
            raise MedsegError(
                f"{path}: is on a different grid (shape {tuple(shape[:3])}) than {files[0].name} (shape "
                f"{tuple(shape0[:3])}); "
                "resample every channel onto the first one's grid"
            )


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _last_line(exc: BaseException) -> str:
    exc = _root(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:160]}" if text else type(exc).__name__


def is_blank(files: Sequence[Path]) -> bool:
    """Whether every channel holds one constant value (a failed acquisition, an empty phantom)."""
    for path in files:
        arr, _ = read_array(path)
        if arr.size and np.any(arr != arr.flat[0]):
            return False
    return True


def blank_prediction(path: Path, classes: int) -> list[Prediction]:
    """Empty masks (and zero probabilities) on the grid of a blank scan, with a ``warning:`` line."""
    shape, affine = read_geometry(path)
    print(f"warning: {path}: blank scan (every voxel has one value); its mask is empty", file=sys.stderr)
    return [Prediction(np.zeros(shape[:3], np.float32), np.zeros(shape[:3], np.uint8), affine) for _ in range(classes)]
