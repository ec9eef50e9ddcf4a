"""Training transforms for what changes between hospitals that MONAI and TorchIO do not offer as such.

- :class:`RandThickSlicesd`: a 2D acquisition with thick slices, resampled onto the model's grid:
  the image is averaged over ``k`` voxels along one axis (the slice profile), then linearly
  upsampled back. MONAI's ``RandSimulateLowResolution`` zooms all three axes alike.
- :class:`RandBodyEdged`: another skull-stripping or body mask: the body (non-zero voxels) is
  eroded or dilated by a few voxels; eroded voxels become background in the image and in the
  labels (a lesion cut away by the mask cannot be seen), dilated ones take a dark body intensity.

Bias fields (MONAI ``RandBiasField``), motion and ghosting (TorchIO through MONAI's ``RandTorchIO``)
come from the libraries (:mod:`medseg.transforms.augment`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

THICK_FACTORS = (2, 6)  # slice thickness in voxels (at 1 mm: 2-6 mm slices)
EDGE_VOXELS = (1, 3)


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """With probability ``prob``: ``image`` (C, X, Y, Z) averaged over ``k`` in ``factors`` voxels
    along one axis (z half the time, x or y a quarter each) and linearly upsampled back to its size."""

    def __init__(self, keys: Sequence[str], prob: float, factors: tuple[int, int] = THICK_FACTORS) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.factors = factors
        self.axis, self.factor = 2, factors[0]

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.axis = int(self.R.choice(3, p=(0.25, 0.25, 0.5)))
        self.factor = int(self.R.randint(self.factors[0], self.factors[1] + 1))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        d = dict(data)
        for key in self.keys:
            img = d[key]
            size = list(img.shape[1:])
            thick = size.copy()
            thick[self.axis] = max(1, round(size[self.axis] / self.factor))
            x = torch.as_tensor(img, dtype=torch.float32)[None]
            low = F.interpolate(x, size=thick, mode="area")  # each thick slice: the mean of its voxels
            back = F.interpolate(low, size=size, mode="trilinear", align_corners=False)[0]
            if isinstance(img, torch.Tensor):  # a MetaTensor keeps its affine
                d[key] = img.clone()
                d[key][:] = back
            else:
                d[key] = back.numpy()
        return d


class RandBodyEdged(RandomizableTransform, MapTransform):
    """With probability ``prob``: the body of ``image`` (C, X, Y, Z; voxels non-zero in any
    channel) eroded (half the time) or dilated by 1-3 voxels (a cube). Eroded voxels are set to 0
    in ``image`` and in every other key (labels, lesion ids); dilated voxels take each channel's
    5th percentile of the body. Keys: ``image`` first, then the label maps."""

    def __init__(self, keys: Sequence[str], prob: float, voxels: tuple[int, int] = EDGE_VOXELS) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.voxels = voxels
        self.erode, self.radius = True, voxels[0]

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.erode = bool(self.R.rand() < 0.5)
        self.radius = int(self.R.randint(self.voxels[0], self.voxels[1] + 1))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        d = dict(data)
        image = torch.as_tensor(d[self.keys[0]])
        body = (image != 0).any(0, keepdim=True).float()[None]
        if not body.any() or body.all():
            return data
        k = 2 * self.radius + 1
        if self.erode:  # erosion = 1 - dilation of the outside
            new = 1 - F.max_pool3d(1 - body, k, stride=1, padding=self.radius)
        else:
            new = F.max_pool3d(body, k, stride=1, padding=self.radius)
        new = new[0].bool()
        for key in self.keys:
            img = d[key].clone() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key]).clone()
            if self.erode:
                img[:, ~new[0]] = 0
            elif key == self.keys[0]:
                shell = new[0] & ~body[0, 0].bool()
                for c in range(img.shape[0]):
                    img[c][shell] = torch.quantile(img[c][body[0, 0].bool()].float(), 0.05).to(img.dtype)
            d[key] = img
        return d
