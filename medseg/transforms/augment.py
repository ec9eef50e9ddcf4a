"""Random training transforms: patch draws, then the augmentation of ``augment.preset``.

Presets (probabilities; ``augment.*_prob`` overrides one):

============  =====  ======================================================================
transform     light  nnunet (nnU-Net v2's defaults and ranges)
============  =====  ======================================================================
rotation      -      0.2, +-30 deg about each axis            (MONAI RandAffined)
scaling       -      0.2, x0.7-1.4                            (RandAffined)
elastic       -      0 (off, as nnU-Net)                      (Rand3DElasticd)
noise         -      0.1, variance 0-0.1                      (RandGaussianNoised)
blur          -      0.2, sigma 0.5-1 voxel                   (RandGaussianSmoothd)
brightness    *      0.15, x0.75-1.25                         (RandScaleIntensityd)
contrast      -      0.15, x0.75-1.25 about the mean          (RandScaleIntensityFixedMeand)
low res.      -      0.25, zoom 0.5-1                         (RandSimulateLowResolutiond)
gamma         -      0.3, 0.7-1.5; 0.1 on the inverted image  (RandAdjustContrastd)
mirroring     flip   0.5 per axis                             (RandFlipd's draws)
============  =====  ======================================================================

``site`` is ``nnunet`` plus what changes between hospitals, each on its own draw: noise 0.2
(variance up to 0.2), brightness and contrast 0.3 (x0.6-1.4), gamma 0.4 (0.5-2.0), a bias field
0.3 (MONAI RandBiasField, degree 3, coefficients 0-0.3), thick slices 0.25 (2-6 voxels along one
axis, :class:`medseg.transforms.site.RandThickSlicesd`), a body mask eroded or dilated by 1-3
voxels 0.2 (:class:`medseg.transforms.site.RandBodyEdged`), motion 0.1 and ghosting 0.1 (TorchIO
RandomMotion and RandomGhosting through MONAI's RandTorchIO).

``augment.faint_prob`` (off in every preset) makes lesions fainter: their contrast to the tissue
around them x0.5-1 (:class:`medseg.transforms.site.RandFaintLesionsd`). Fainter lesions come first
(they need the labels as drawn), then the mask edge (it needs the zero background), then the
scanner effects, then nnU-Net's intensity transforms. ``augment.renorm_prob`` (off in every preset)
moves the body's z-scores as another brain mask would (:class:`medseg.transforms.site.RandRenormd`),
after the mask edge; ``augment.tail_prob`` (off in every preset) lowers the contrast of everything
above the body's median (:class:`medseg.transforms.site.RandTailScaled`), after that.

``light`` is medseg 0.2's augmentation: flips with ``augment.mirror_prob`` and, with
``augment.intensity_prob``, a +-10 % intensity scale and shift.

Spatial transforms (rotation, scaling, elastic) work on a larger crop, so that the corners they
rotate in come from the scan, then the centre is cut to the patch: no padded border leaks into
the patch. Labels and lesion ids are resampled nearest-neighbour and stay binary / integer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import numpy as np
import torch
from monai.transforms import (
    Affine,
    CenterSpatialCrop,
    MapTransform,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    RandTorchIOd,
)

from medseg.config.plan import AUGMENTATIONS, Augmentation
from medseg.config.schema import AugmentConfig
from medseg.runtime.device import plain_tensor
from medseg.transforms.sampling import INSTANCE_KEY, RandLesionCropd
from medseg.transforms.site import RandBodyEdged, RandFaintLesionsd, RandRenormd, RandTailScaled, RandThickSlicesd

NNUNET = {
    "rotate": 0.2,
    "scale": 0.2,
    "elastic": 0.0,
    "noise": 0.1,
    "blur": 0.2,
    "brightness": 0.15,
    "contrast": 0.15,
    "lowres": 0.25,
    "gamma": 0.3,
    "mirror": 0.5,
}
PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "light": {"mirror": 0.5},
    "nnunet": NNUNET,
    "site": {
        **NNUNET,
        "noise": 0.2,
        "brightness": 0.3,
        "contrast": 0.3,
        "gamma": 0.4,
        "bias": 0.3,
        "thick": 0.25,
        "edge": 0.2,
        "motion": 0.1,
        "ghost": 0.1,
    },
}
# the site preset's wider intensity ranges (nnU-Net's: x0.75-1.25, gamma 0.7-1.5, noise variance <= 0.1)
SITE_RANGES = {"intensity_range": 0.4, "gamma_range": (0.5, 2.0), "noise_variance": 0.2}


def resolve(aug: AugmentConfig) -> Augmentation:
    """The probabilities of ``aug.preset`` with the config's overrides (the plan's augmentation:
    called by :func:`medseg.planning.resolve.assemble` only)."""
    base = PRESETS[aug.preset]
    probs = {
        k: float(getattr(aug, f"{k}_prob") if getattr(aug, f"{k}_prob") is not None else base.get(k, 0.0))
        for k in AUGMENTATIONS
    }
    ranges = SITE_RANGES if aug.preset == "site" else {}
    return Augmentation(probs, aug.rotate_deg, tuple(aug.scale_range), aug.intensity_prob or 0.0, **ranges)


def crop_size(patch: Sequence[int], aug: Augmentation) -> tuple[int, ...]:
    """Size of the crop the spatial transforms start from: the patch's extent once rotated by up
    to ``rotate_deg`` about each axis and zoomed out to the smallest scale (as nnU-Net's
    get_patch_size), so the centre cut holds scan everywhere."""
    if not aug.spatial:
        return tuple(int(p) for p in patch)
    half = np.array(patch, float) / 2
    angle = math.radians(aug.rotate_deg) if aug.probs["rotate"] > 0 else 0.0
    corners = np.array(list(product(*[(-h, h) for h in half])))
    extent = half.copy()
    for a, b, c in product((-angle, 0.0, angle), repeat=3):
        extent = np.maximum(extent, np.abs(corners @ _rotation(a, b, c).T).max(0))
    zoom = aug.scale_range[1] if aug.probs["scale"] > 0 else 1.0  # scale > 1 samples a wider field (zoom out)
    return tuple(int(math.ceil(2 * e * max(zoom, 1.0))) for e in extent)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """Rotation matrix about x by a, y by b, z by c (radians)."""
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw(
    keys: list[str], size: Sequence[int], samples: int, pos_fraction: float, strategy: str, size_power: float
) -> list:
    if strategy == "lesion":
        return [RandLesionCropd(keys, size, samples, pos_fraction, size_power)]
    return [
        RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=tuple(size),
            pos=pos_fraction,
            neg=1.0 - pos_fraction,
            num_samples=samples,
            allow_smaller=True,
        )
    ]


class RandRotateScaleCropd(Randomizable, MapTransform):
    """Rotate (probability ``rotate_prob``, uniform +-``rotate_rad`` about each axis) and scale
    (``scale_prob``, one factor for all axes in ``scale_range``, as nnU-Net) the larger crop,
    resampling only the ``patch``-sized centre on MONAI ``Affine``'s grid; when neither fires, cut
    (and copy) the centre exactly. Written here because MONAI's RandAffined resamples the whole
    input, and its ``spatial_size`` cut shifts by half a voxel (interpolating) when it does not
    fire. Image bilinear, label and lesion ids nearest-neighbour (one call for both). Outputs are
    plain float32 tensors (C, *patch), never views of the input: the patch's affine means nothing
    once it is rotated."""

    def __init__(
        self,
        keys: Sequence[str],
        patch: Sequence[int],
        rotate_prob: float,
        rotate_rad: float,
        scale_prob: float,
        scale_range: tuple[float, float],
    ) -> None:
        MapTransform.__init__(self, keys)
        self.patch = tuple(int(p) for p in patch)
        self.rotate_prob, self.rotate_rad, self.scale_prob, self.scale_range = (
            rotate_prob,
            rotate_rad,
            scale_prob,
            scale_range,
        )
        self.rotate: tuple[float, ...] | None = None
        self.scale: float | None = None

    def randomize(self, data: object = None) -> None:
        r = self.rotate_rad
        self.rotate = tuple(self.R.uniform(-r, r, 3)) if self.R.random_sample() < self.rotate_prob else None
        self.scale = float(self.R.uniform(*self.scale_range)) if self.R.random_sample() < self.scale_prob else None

    def __call__(self, data: dict) -> dict:
        self.randomize()
        d = dict(data)
        if self.rotate is None and self.scale is None:
            for key in self.keys:  # CenterSpatialCrop's slices on the plain tensor: no metadata to track
                x = plain_tensor(d[key])
                d[key] = x[(slice(None), *CenterSpatialCrop(self.patch).compute_slices(x.shape[1:]))].to(
                    torch.float32, copy=True
                )
            return d
        affine = Affine(
            rotate_params=self.rotate or (0.0, 0.0, 0.0),
            scale_params=(self.scale or 1.0,) * 3,
            spatial_size=self.patch,
            padding_mode="zeros",
            image_only=True,
        )
        grid, _ = affine.affine_grid(spatial_size=self.patch, lazy=False)  # (4, *patch) voxel offsets from the centre
        points = torch_points(grid, d["image"].shape[1:])
        d["image"] = grid_sample(plain_tensor(d["image"]), points, self.patch, "bilinear")
        others = [key for key in self.keys if key != "image"]
        if others:  # one call for all nearest-neighbour keys
            stacked = (
                torch.cat([plain_tensor(d[key]) for key in others]) if len(others) > 1 else plain_tensor(d[others[0]])
            )
            sampled = grid_sample(stacked, points, self.patch, "nearest")
            for key, channels in zip(others, sampled.split([d[k].shape[0] for k in others])):
                d[key] = channels
        return d


class RandPlainFlipd(RandFlipd):
    """MONAI's RandFlipd draw (``prob`` on one ``spatial_axis``, the same random stream, so that
    ``light`` stays medseg 0.2's augmentation seed for seed) applied as a plain ``torch.flip``;
    outputs plain tensors. Written here because RandFlipd wraps each patch in a MetaTensor and
    records the operation even when it does not flip: 0.8 ms per volume (two patches, image and
    label) for each axis, about half of what a light draw costs."""

    def __call__(self, data: dict, lazy: bool | None = None) -> dict:
        """``data[key]``: (C, X, Y, Z)."""
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            x = plain_tensor(d[key])
            d[key] = torch.flip(x, [self.flipper.spatial_axis + 1]) if self._do_transform else x
        return d


def torch_points(grid: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """MONAI's affine ``grid`` (4, *out) for an input of spatial ``shape`` as the points torch's
    ``grid_sample`` takes: (parts, P, 1, 1, 3), (z, y, x) in [-1, 1] as MONAI's ``Resample``
    converts them (torch backend, align_corners False). The output points are cut into
    ``parts = torch.get_num_threads()`` batch items (the last one padded) because torch's CPU 3D
    grid_sample spreads over threads by batch item only, and Resample passes one."""
    scale = torch.tensor([2.0 / max(2, n) for n in shape[::-1]], dtype=torch.float32)
    points = (plain_tensor(grid)[[2, 1, 0]].to(torch.float32).moveaxis(0, -1) * scale).reshape(-1, 3)
    total, parts = points.shape[0], max(1, torch.get_num_threads())
    per = -(-total // parts)
    return torch.cat([points, points.new_zeros(per * parts - total, 3)]).reshape(parts, per, 1, 1, 3)


def grid_sample(x: torch.Tensor, points: torch.Tensor, out: Sequence[int], mode: str) -> torch.Tensor:
    """``x`` (C, X, Y, Z) sampled at :func:`torch_points` (zeros outside): (C, *out) float32,
    bitwise what MONAI's ``Resample`` returns, each thread sampling a share of the points."""
    c, parts = x.shape[0], points.shape[0]
    y = torch.nn.functional.grid_sample(
        x.to(torch.float32)[None].expand(parts, *x.shape), points, mode=mode, padding_mode="zeros", align_corners=False
    )
    return y.movedim(1, 0).reshape(c, -1)[:, : math.prod(out)].reshape(c, *out)


def _spatial(keys: list[str], patch: Sequence[int], aug: Augmentation) -> list:
    """Elastic deformation (optional, on the whole crop), then rotation and scaling to the patch."""
    p = aug.probs
    steps = []
    if p["elastic"] > 0:
        modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
        steps.append(
            Rand3DElasticd(
                keys, sigma_range=(9, 13), magnitude_range=(0, 200), prob=p["elastic"], mode=modes, padding_mode="zeros"
            )
        )
    return steps + [
        RandRotateScaleCropd(keys, patch, p["rotate"], math.radians(aug.rotate_deg), p["scale"], aug.scale_range)
    ]


def _intensity(aug: Augmentation) -> list:
    """Noise, blur, brightness, contrast, low resolution and gamma on the image only."""
    p, steps = aug.probs, []
    if p["noise"] > 0:
        steps.append(RandGaussianNoised("image", prob=p["noise"], std=math.sqrt(aug.noise_variance), sample_std=True))
    if p["blur"] > 0:
        steps.append(
            RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=p["blur"])
        )
    if p["brightness"] > 0:
        steps.append(RandScaleIntensityd("image", factors=aug.intensity_range, prob=p["brightness"]))
    if p["contrast"] > 0:
        steps.append(
            RandScaleIntensityFixedMeand("image", factors=aug.intensity_range, preserve_range=True, prob=p["contrast"])
        )
    if p["lowres"] > 0:
        steps.append(RandSimulateLowResolutiond("image", prob=p["lowres"], zoom_range=(0.5, 1.0)))
    if p["gamma"] > 0:
        steps += [
            RandAdjustContrastd(
                "image", prob=p["gamma"] / 3, gamma=aug.gamma_range, invert_image=True, retain_stats=True
            ),
            RandAdjustContrastd("image", prob=p["gamma"], gamma=aug.gamma_range, invert_image=False, retain_stats=True),
        ]
    if aug.jitter > 0:
        steps += [
            RandScaleIntensityd("image", factors=0.1, prob=aug.jitter),
            RandShiftIntensityd("image", offsets=0.1, prob=aug.jitter),
        ]
    return steps


def _site(keys: list[str], aug: Augmentation) -> list:
    """Site shifts: fainter lesions, body mask edge (image and labels), bias field, thick slices,
    motion, ghosting."""
    p, steps = aug.probs, []
    if p["faint"] > 0:
        steps.append(RandFaintLesionsd(keys[:2], p["faint"]))  # the image, then the label
    if p["edge"] > 0:
        steps.append(RandBodyEdged(keys, p["edge"]))
    if p["renorm"] > 0:
        steps.append(RandRenormd(["image"], p["renorm"]))
    if p["tail"] > 0:
        steps.append(RandTailScaled(["image"], p["tail"]))
    if p["bias"] > 0:
        steps.append(RandBiasFieldd("image", degree=3, coeff_range=(0.0, 0.3), prob=p["bias"]))
    if p["thick"] > 0:
        steps.append(RandThickSlicesd(["image"], p["thick"]))
    if p["motion"] > 0:  # TorchIO's own probability argument is p
        steps.append(RandTorchIOd(["image"], name="RandomMotion", p=p["motion"], degrees=5, translation=5))
    if p["ghost"] > 0:
        steps.append(
            RandTorchIOd(["image"], name="RandomGhosting", p=p["ghost"], num_ghosts=(2, 6), intensity=(0.2, 0.6))
        )
    return steps


def augment(
    patch_size: Sequence[int],
    crop: Sequence[int],
    samples: int,
    pos_fraction: float,
    aug: Augmentation,
    strategy: str = "lesion",
    size_power: float = 0.0,
    instances: bool = False,
) -> list:
    """Random training transforms: draw ``samples`` patches (a share ``pos_fraction`` centred on
    lesions: one lesion picked uniformly then a voxel in it (``lesion``), or a lesion voxel picked
    uniformly (``voxel``, MONAI's RandCropByPosNegLabeld)), then ``aug``. With ``instances`` the
    lesion id map moves with the label. Draws are ``crop`` (the plan's :func:`crop_size` for ``aug``)
    and input volumes must be padded to it."""
    keys = ["image", "label"] + ([INSTANCE_KEY] if instances else [])
    steps = _draw(keys, crop, samples, pos_fraction, strategy, size_power)
    if aug.spatial:
        steps += _spatial(keys, patch_size, aug)
    if aug.probs["mirror"] > 0:  # before the intensity transforms (they commute): light keeps 0.2's order and seeds
        steps += [RandPlainFlipd(keys, prob=aug.probs["mirror"], spatial_axis=axis) for axis in range(3)]
    return steps + _site(keys, aug) + _intensity(aug)
