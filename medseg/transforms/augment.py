"""Random training transforms: patch draws, flips, intensity jitter.
"""

from __future__ import annotations

from typing import Sequence

from monai.transforms import (
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from medseg.transforms.sampling import INSTANCE_KEY, RandLesionCropd


def augment(patch_size: Sequence[int], samples: int, pos_fraction: float, flip_prob: float,
            strategy: str = "lesion", size_power: float = 0.0, intensity_prob: float = 0.0,
            instances: bool = False) -> list:
    """Random training transforms: draw ``samples`` patches (a share ``pos_fraction`` centred on
    lesions: one lesion picked uniformly then a voxel in it (``lesion``), or a lesion voxel picked
    uniformly (``voxel``, MONAI's RandCropByPosNegLabeld)), then random flips along each axis and,
    with ``intensity_prob``, random intensity scaling and shifting. With ``instances`` the lesion
    id map (``instances``) is cropped and flipped with the label."""
    keys = ["image", "label"] + ([INSTANCE_KEY] if instances else [])
    if strategy == "lesion":
        steps = [RandLesionCropd(keys, patch_size, samples, pos_fraction, size_power)]
    else:
        steps = [RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(patch_size),
                                        pos=pos_fraction, neg=1.0 - pos_fraction, num_samples=samples,
                                        allow_smaller=True)]
    if flip_prob > 0:
        steps += [RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)]
    if intensity_prob > 0:
        steps += [RandScaleIntensityd("image", factors=0.1, prob=intensity_prob),
                  RandShiftIntensityd("image", offsets=0.1, prob=intensity_prob)]
    return steps
