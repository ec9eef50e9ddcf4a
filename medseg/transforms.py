"""MONAI dictionary transforms.

``preprocess`` is deterministic and shared by training, validation and predict: load ->
channel-first -> orientation RAS -> resample to the target spacing (images linear, labels nearest
neighbour) -> lesion label to {0, 1} -> intensity normalisation. ``sampling_prep`` (cached) and
``augment`` (random) are training only: pad to the patch size, lesion-balanced or voxel-uniform
patch sampling with a positive/negative ratio, flips.
"""

from __future__ import annotations

from typing import Sequence

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


def preprocess(spacing: Sequence[float], normalize: str, with_label: bool = True, check_finite: bool = False) -> list:
    """Deterministic transforms on ``{"image": path[, "label": path]}``.

    Output: ``image`` float32 MetaTensor (1, X, Y, Z) in RAS at ``spacing``; ``label`` (1, X, Y, Z)
    in {0, 1} (every non-zero label value is lesion).
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    loader = LoadImaged(keys, image_only=True)
    loader.register(SimpleITKReader())  # NRRD / MetaImage; NIfTI stays with nibabel
    steps = [
        loader,
        *([FiniteCheckd(["image"])] if check_finite else []),
        EnsureChannelFirstd(keys),
        # nnU-Net's crop to the non-zero region: skull-stripped / masked scans lose their empty
        # border, so fewer windows are run; the prediction is pasted back at inference.
        CropForegroundd(keys, source_key="image", select_fn=nonzero, allow_smaller=True),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=tuple(spacing), mode=modes),
        EnsureTyped(keys, dtype="float32", track_meta=True),
    ]
    if with_label:
        steps.append(AsDiscreted("label", threshold=0.5))
    if normalize != "none":
        steps.append(NormalizeIntensityd("image", nonzero=normalize == "zscore_nonzero", channel_wise=True))
    return steps


def sampling_prep(patch_size: Sequence[int], strategy: str) -> list:
    """Deterministic, cacheable part of patch sampling: pad to the patch size and, for the
    lesion-balanced strategy, list each lesion's voxels."""
    steps = [SpatialPadd(["image", "label"], spatial_size=tuple(patch_size))]
    return steps + ([LesionIndicesd("label")] if strategy == "lesion" else [])


def augment(patch_size: Sequence[int], samples: int, pos_fraction: float, flip_prob: float,
            strategy: str = "lesion", size_power: float = 0.0) -> list:
    """Random training transforms: draw ``samples`` patches (a share ``pos_fraction`` centred on
    lesions: one lesion picked uniformly then a voxel in it (``lesion``), or a lesion voxel picked
    uniformly (``voxel``, MONAI's RandCropByPosNegLabeld)), then random flips along each axis."""
    if strategy == "lesion":
        steps = [RandLesionCropd(["image", "label"], patch_size, samples, pos_fraction, size_power)]
    else:
        steps = [RandCropByPosNegLabeld(["image", "label"], label_key="label", spatial_size=tuple(patch_size),
                                        pos=pos_fraction, neg=1.0 - pos_fraction, num_samples=samples,
                                        allow_smaller=True)]
    if flip_prob > 0:
        steps += [RandFlipd(["image", "label"], prob=flip_prob, spatial_axis=axis) for axis in range(3)]
    return steps
