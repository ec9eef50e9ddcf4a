"""MONAI dictionary transforms.

``preprocess`` is deterministic and shared by training, validation and predict: load ->
channel-first -> orientation RAS -> resample to the target spacing (images linear, labels nearest
neighbour) -> lesion label to {0, 1} -> intensity normalisation. ``sampling_prep`` (cached) and
``augment`` (random) are training only: pad to the patch size, lesion-balanced or voxel-uniform
patch sampling with a positive/negative ratio, flips.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from monai.transforms import (
    AsDiscreted,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
    SpatialPadd,
)

from medseg.errors import MedsegError
from medseg.readers import SimpleITKReader
from medseg.sampling import LesionIndicesd, RandLesionCropd


def nonzero(x):
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


class SelectLesionClassesd(MapTransform):
    """Label (1, X, Y, Z) -> (C, X, Y, Z): channel c is 1 where the value is in ``classes[c]``,
    every other value is 0 (e.g. BraTS {1, 2, 3, 4} -> whole tumour; classes may overlap: whole
    tumour / core / enhancing). MONAI's ``MapLabelValued`` keeps unlisted values, so it cannot
    drop the others."""

    def __init__(self, keys: Sequence[str], classes: Sequence[Sequence[int]]) -> None:
        super().__init__(keys)
        self.classes = [torch.as_tensor(list(values)) for values in classes]

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.keys:
            values = torch.as_tensor(d[key][0]).round().long()
            out = d[key][:1].repeat(len(self.classes), *([1] * (d[key].ndim - 1)))  # a MetaTensor keeps its meta
            for c, wanted in enumerate(self.classes):
                out[c] = torch.isin(values, wanted)
            d[key] = out
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


def normalisation(normalize: str, ct_stats: Optional[Sequence[Sequence[float]]] = None) -> list:
    """Intensity normalisation steps on ``image`` (C, X, Y, Z), per channel.

    ``zscore_nonzero``: z-score over non-zero voxels (MRI); ``zscore``: over all voxels; ``ct``:
    clip to the dataset's foreground percentiles, then z-score with the dataset's foreground mean
    and std (``ct_stats``: one ``(low, high, mean, std)`` per channel, from ``medseg plan``).
    """
    if normalize == "none":
        return []
    if normalize == "ct":
        if not ct_stats:
            raise MedsegError("preprocess.normalize 'ct' needs preprocess.ct_stats ([low, high, mean, std] per channel); run 'medseg plan'")
        return [ClipChannelsd(["image"], [s[:2] for s in ct_stats]),
                NormalizeIntensityd("image", subtrahend=[s[2] for s in ct_stats], divisor=[s[3] for s in ct_stats], channel_wise=True)]
    return [NormalizeIntensityd("image", nonzero=normalize == "zscore_nonzero", channel_wise=True)]


def preprocess(spacing: Sequence[float], normalize: str, with_label: bool = True, check_finite: bool = False,
               lesion_classes: Optional[Sequence[Sequence[int]]] = None, ct_stats: Optional[Sequence[Sequence[float]]] = None,
               background: str = "zero") -> list:
    """Deterministic transforms on ``{"image": path or [path per channel][, "label": path]}``.

    Output: ``image`` float32 MetaTensor (C, X, Y, Z) in RAS at ``spacing``; ``label`` (1, X, Y, Z)
    in {0, 1}, every non-zero value being lesion; with ``lesion_classes`` (label values per
    class), ``label`` is (C, X, Y, Z), one channel per class.
    ``background``: ``zero`` (raw scans) or ``min`` (each channel's minimum is background, see
    :class:`MinToZerod`).
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    loader = LoadImaged(keys, image_only=True)
    loader.register(SimpleITKReader())  # NRRD / MetaImage; NIfTI stays with nibabel
    steps = [
        loader,
        *([FiniteCheckd(["image"])] if check_finite else []),
        EnsureChannelFirstd(keys),
        *([MinToZerod(["image"])] if background == "min" else []),
        *([SelectLesionClassesd(["label"], lesion_classes)] if with_label and lesion_classes else []),
        # nnU-Net's crop to the non-zero region: skull-stripped / masked scans lose their empty
        # border, so fewer windows are run; the prediction is pasted back at inference.
        CropForegroundd(keys, source_key="image", select_fn=nonzero, allow_smaller=True),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=tuple(spacing), mode=modes),
        EnsureTyped(keys, dtype="float32", track_meta=True),
    ]
    if with_label:
        steps.append(AsDiscreted("label", threshold=0.5))
    return steps + normalisation(normalize, ct_stats)


def sampling_prep(patch_size: Sequence[int], strategy: str) -> list:
    """Deterministic, cacheable part of patch sampling: pad to the patch size and, for the
    lesion-balanced strategy, list each lesion's voxels."""
    steps = [SpatialPadd(["image", "label"], spatial_size=tuple(patch_size))]
    return steps + ([LesionIndicesd("label")] if strategy == "lesion" else [])


def augment(patch_size: Sequence[int], samples: int, pos_fraction: float, flip_prob: float,
            strategy: str = "lesion", size_power: float = 0.0, intensity_prob: float = 0.0) -> list:
    """Random training transforms: draw ``samples`` patches (a share ``pos_fraction`` centred on
    lesions: one lesion picked uniformly then a voxel in it (``lesion``), or a lesion voxel picked
    uniformly (``voxel``, MONAI's RandCropByPosNegLabeld)), then random flips along each axis and,
    with ``intensity_prob``, random intensity scaling and shifting."""
    if strategy == "lesion":
        steps = [RandLesionCropd(["image", "label"], patch_size, samples, pos_fraction, size_power)]
    else:
        steps = [RandCropByPosNegLabeld(["image", "label"], label_key="label", spatial_size=tuple(patch_size),
                                        pos=pos_fraction, neg=1.0 - pos_fraction, num_samples=samples,
                                        allow_smaller=True)]
    if flip_prob > 0:
        steps += [RandFlipd(["image", "label"], prob=flip_prob, spatial_axis=axis) for axis in range(3)]
    if intensity_prob > 0:
        steps += [RandScaleIntensityd("image", factors=0.1, prob=intensity_prob),
                  RandShiftIntensityd("image", offsets=0.1, prob=intensity_prob)]
    return steps
