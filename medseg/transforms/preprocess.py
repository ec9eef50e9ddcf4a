"""MONAI dictionary transforms.

``preprocess`` is deterministic and shared by training, validation and predict: load ->
channel-first -> orientation RAS -> resample to the target spacing (images linear, labels nearest
neighbour) -> lesion label to {0, 1} -> intensity normalisation (site-robust methods in
:mod:`medseg.transforms.standardize`). ``sampling_prep`` (cached) and
``augment`` (random) are training only: pad to the patch size, lesion-balanced or voxel-uniform
patch sampling with a positive/negative ratio, flips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from medseg.config.plan import Preprocessing
from medseg.data.case import Case, image_entry
from medseg.data.profile import PROFILE_KEY, ProfileRange, scan_profile
from medseg.errors import MedsegError
from medseg.io.readers import SimpleITKReader
from medseg.transforms.labels import SelectLesionClassesd
from medseg.transforms.standardize import OtsuForegroundd, Standardized


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """Foreground for cropping: any non-zero voxel in any channel."""
    return x != 0


class FiniteCheckd(MapTransform):
    """Refuse an image with NaN or infinite voxels (they would spread through normalisation)."""

    def __call__(self, data: dict) -> dict:
        for key in self.keys:
            if not torch.isfinite(torch.as_tensor(data[key])).all():
                name = getattr(data[key], "meta", {}).get("filename_or_obj", key)
                raise MedsegError(f"{name}: contains NaN or infinite voxels; re-export the scan or replace them")
        return data


class MinToZerod(MapTransform):
    """Voxels at their channel's minimum -> 0: scans already normalised with a constant background
    (e.g. -3.6 outside the brain) get the zero background that cropping and z-scoring over
    non-zero voxels expect. Raw scans with a zero background are unchanged."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.keys:
            img = d[key].clone()
            for c in range(img.shape[0]):
                img[c][img[c] == img[c].min()] = 0
            d[key] = img
        return d


class ClipChannelsd(MapTransform):
    """Clip each channel of ``image`` (C, X, Y, Z) to its own [low, high] (CT: the foreground's
    0.5-99.5 percentiles, nnU-Net's CT normalisation). MONAI's clipping transforms take one range
    for all channels or per-image percentiles, not fixed per-channel ranges."""

    def __init__(self, keys: Sequence[str], ranges: Sequence[Sequence[float]]) -> None:
        super().__init__(keys)
        self.ranges = [(float(lo), float(hi)) for lo, hi in ranges]

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.keys:
            img = d[key].clone()
            for c, (lo, hi) in enumerate(self.ranges[: img.shape[0]]):
                img[c] = img[c].clamp(lo, hi)
            d[key] = img
        return d


def normalisation(pre: Preprocessing) -> list:
    """Intensity normalisation steps on ``image`` (C, X, Y, Z), per channel, over the body (background
    voxels are 0 by then and stay 0 except for ``zscore``).

    ``zscore_nonzero``: z-score over non-zero voxels (MRI); ``zscore``: over all voxels; ``ct``:
    clip to the dataset's foreground percentiles, then z-score with the dataset's foreground mean
    and std (``pre.ct_stats``: one ``(low, high, mean, std)`` per channel, from ``medseg plan``);
    ``robust``, ``whitestripe``, ``nyul`` (``pre.landmarks``): :mod:`medseg.transforms.standardize`.
    """
    if pre.normalize == "none":
        return []
    if pre.normalize in ("robust", "whitestripe", "nyul"):
        return [Standardized(["image"], pre.normalize, pre.landmarks)]
    if pre.normalize == "ct":
        stats = pre.ct_stats
        if not stats:
            raise MedsegError(
                "preprocess.normalize 'ct' needs preprocess.ct_stats ([low, high, mean, std] per channel); run "
                "'medseg plan'"
            )
        return [
            ClipChannelsd(["image"], [s[:2] for s in stats]),
            NormalizeIntensityd(
                "image", subtrahend=[s[2] for s in stats], divisor=[s[3] for s in stats], channel_wise=True
            ),
        ]
    return [NormalizeIntensityd("image", nonzero=pre.normalize == "zscore_nonzero", channel_wise=True)]


def background_step(background: str) -> list:
    """The step that zeroes the background of ``image``: none for ``zero``, :class:`MinToZerod` for
    ``min``, :class:`medseg.transforms.standardize.OtsuForegroundd` for ``otsu``."""
    if background == "min":
        return [MinToZerod(["image"])]
    if background == "otsu":
        return [OtsuForegroundd(["image"])]
    return []


def preprocess(
    pre: Preprocessing,
    with_label: bool = True,
    check_finite: bool = False,
    lesion_classes: Sequence[Sequence[int]] | None = None,
    profile: bool = False,
) -> list:
    """Deterministic transforms on ``{"image": path or [path per channel][, "label": path]}`` for
    the preprocessing ``pre`` (spacing, normalisation, background).

    Output: ``image`` float32 MetaTensor (C, X, Y, Z) in RAS at ``pre.spacing``; ``label`` (1, X, Y, Z)
    in {0, 1}, every non-zero value being lesion; with ``lesion_classes`` (label values per
    class), ``label`` is (C, X, Y, Z), one channel per class; with ``profile``, the scan's
    :class:`medseg.data.profile.ScanProfile` under ``PROFILE_KEY``.
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    steps = [
        *body_steps(pre, keys, check_finite, lesion_classes if with_label else None),
        *([ScanProfiled(["image"])] if profile else []),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=tuple(pre.spacing), mode=modes),
        EnsureTyped(keys, dtype="float32", track_meta=True),
    ]
    if with_label:
        steps.append(AsDiscreted("label", threshold=0.5))
    return steps + normalisation(pre)


def body_steps(
    pre: Preprocessing,
    keys: Sequence[str],
    check_finite: bool = False,
    lesion_classes: Sequence[Sequence[int]] | None = None,
) -> list:
    """The first steps of :func:`preprocess`: read ``keys``, channel first, background to 0, crop to
    the body; on the scan's own grid (``image`` (C, X, Y, Z))."""
    loader = LoadImaged(list(keys), image_only=True)
    loader.register(SimpleITKReader())  # NRRD / MetaImage; NIfTI stays with nibabel
    return [
        loader,
        *([FiniteCheckd(["image"])] if check_finite else []),
        EnsureChannelFirstd(list(keys)),
        *background_step(pre.background),
        *([SelectLesionClassesd(["label"], lesion_classes)] if lesion_classes else []),
        # nnU-Net's crop to the non-zero region: skull-stripped / masked scans lose their empty
        # border, so fewer windows are run; the prediction is pasted back at inference.
        CropForegroundd(list(keys), source_key="image", select_fn=nonzero, allow_smaller=True),
    ]


class ScanProfiled(MapTransform):
    """The :class:`medseg.data.profile.ScanProfile` of ``image`` (C, X, Y, Z MetaTensor on the scan's
    own grid, background 0: after :func:`body_steps`) under ``data[PROFILE_KEY]``."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        img = d[self.keys[0]]
        d[PROFILE_KEY] = scan_profile(img.numpy(), np.asarray(img.affine, dtype=float))
        return d


def training_profile(pre: Preprocessing, cases: Sequence[Case]) -> ProfileRange | None:
    """The range of the profiles of ``cases`` (their images read once more, labels not), as
    preprocessing ``pre`` sees them; None for no cases."""
    steps = Compose([*body_steps(pre, ["image"]), ScanProfiled(["image"])])
    return ProfileRange.of(steps({"image": image_entry(c.images)})[PROFILE_KEY] for c in cases)
