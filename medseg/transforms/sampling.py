"""Lesion-balanced patch sampling.

MONAI's ``RandCropByPosNegLabeld`` (like nnU-Net) picks a foreground *voxel* uniformly, so a
10,000-voxel lesion gets 1,000 times the patches of a 10-voxel one and small lesions, the ones
users miss, are rarely seen. Here a positive patch first picks a *lesion* (26-connected component)
uniformly, or with weight ``size ** -size_power``, then a voxel inside it as the patch centre;
the other patches are centred on a uniformly random voxel. MONAI has no per-component sampler
(``RandCropByLabelClassesd`` needs a fixed number of classes), hence this file.

Two transforms: ``LesionIndicesd`` (deterministic, cached with the volume) lists each lesion's
voxels; ``RandLesionCropd`` (random) draws the patches from them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable, SpatialCrop, SpatialPadd
from monai.transforms.utils import correct_crop_centers

from medseg.lesions import label_lesions

INDEX_KEY = "lesion_voxels"
INSTANCE_KEY = "instances"


class LesionInstancesd(MapTransform):
    """Add ``instances``: (1, X, Y, Z) int32 lesion ids of ``label`` (C, X, Y, Z), 0 = background,
    a lesion being a component of the union of the channels. Deterministic, so cached with the
    volume; the random crops and flips then move it with the label (the blob loss's input)."""

    def __init__(self, label_key: str = "label", connectivity: int = 26) -> None:
        super().__init__([label_key])
        self.label_key, self.connectivity = label_key, connectivity

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        labels, _ = label_lesions(np.asarray(d[self.label_key]).any(0), self.connectivity)
        d[INSTANCE_KEY] = torch.as_tensor(labels[None])
        return d


class LesionIndicesd(MapTransform):
    """Add ``lesion_voxels``: a list with one int64 array of flat voxel indices per lesion of
    ``label`` (C, X, Y, Z; a lesion is a component of the union of the channels)."""

    def __init__(self, label_key: str = "label", connectivity: int = 26) -> None:
        super().__init__([label_key])
        self.label_key, self.connectivity = label_key, connectivity

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        labels, n = label_lesions(np.asarray(d[self.label_key]).any(0), self.connectivity)  # lesions of any class
        flat = labels.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(1, n + 2))
        d[INDEX_KEY] = [order[bounds[i] : bounds[i + 1]].astype(np.int64) for i in range(n)]
        return d


def choose_centres(
    rng: np.random.RandomState,
    lesions: Sequence[np.ndarray],
    shape: Sequence[int],
    count: int,
    pos_fraction: float,
    size_power: float = 0.0,
) -> list[tuple[int, int, int]]:
    """Patch centres (voxel coordinates): lesion-balanced positives, uniform others.

    Args:
        lesions: flat voxel indices of each lesion in a volume of ``shape``.
        size_power: lesion ``i`` is picked with weight ``len(lesions[i]) ** -size_power`` (0 = uniform).
    """
    centres = []
    weights = None
    if lesions:
        w = np.array([len(v) for v in lesions], dtype=float) ** -size_power
        weights = w / w.sum()
    for _ in range(count):
        if weights is not None and rng.random_sample() < pos_fraction:
            voxels = lesions[rng.choice(len(lesions), p=weights)]
            flat = int(voxels[rng.randint(len(voxels))])
            centres.append(tuple(int(c) for c in np.unravel_index(flat, tuple(shape))))
        else:
            centres.append(tuple(int(rng.randint(n)) for n in shape))
    return centres


class RandLesionCropd(Randomizable, MapTransform):
    """Crop ``num_samples`` patches of ``spatial_size`` from ``keys`` (channel-first, already padded
    to at least ``spatial_size``), centred as :func:`choose_centres` draws. Returns a list of dicts."""

    def __init__(
        self,
        keys: Sequence[Hashable],
        spatial_size: Sequence[int],
        num_samples: int,
        pos_fraction: float,
        size_power: float = 0.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.num_samples, self.pos_fraction, self.size_power = num_samples, pos_fraction, size_power
        self._centres: list[tuple[int, int, int]] = []

    def randomize(self, lesions: Sequence[np.ndarray], shape: Sequence[int]) -> None:
        self._centres = choose_centres(self.R, lesions, shape, self.num_samples, self.pos_fraction, self.size_power)

    def __call__(self, data: dict) -> list[dict]:
        d = dict(data)
        lesions = d.pop(INDEX_KEY, [])
        shape = tuple(d[self.keys[0]].shape[1:])
        self.randomize(lesions, shape)
        out = []
        for centre in self._centres:
            fixed = correct_crop_centers(list(centre), self.spatial_size, shape, allow_smaller=True)
            crop = SpatialCrop(roi_center=[int(c) for c in fixed], roi_size=self.spatial_size)
            item = dict(d)
            for key in self.keys:
                item[key] = crop(d[key])
            out.append(item)
        return out


def sampling_prep(patch_size: Sequence[int], strategy: str, instances: bool = False) -> list:
    """Deterministic, cacheable part of patch sampling: with ``instances`` the lesion id map
    (:class:`LesionInstancesd`), pad to the patch size and, for the lesion-balanced strategy, list
    each lesion's voxels."""
    keys = ["image", "label"] + ([INSTANCE_KEY] if instances else [])
    steps = ([LesionInstancesd("label")] if instances else []) + [SpatialPadd(keys, spatial_size=tuple(patch_size))]
    return steps + ([LesionIndicesd("label")] if strategy == "lesion" else [])
