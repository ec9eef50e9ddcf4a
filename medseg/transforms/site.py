"""Training transforms for what changes between hospitals that MONAI and TorchIO do not offer as such.

- :class:`RandThickSlicesd`: a 2D acquisition with thick slices, resampled onto the model's grid:
  the image is averaged over ``k`` voxels along one axis (the slice profile), then linearly
  upsampled back. MONAI's ``RandSimulateLowResolution`` zooms all three axes alike.
- :class:`RandBodyEdged`: another skull-stripping or body mask: the body (non-zero voxels) is
  eroded or dilated by a few voxels; eroded voxels become background in the image and in the
  labels (a lesion cut away by the mask cannot be seen), dilated ones take a dark body intensity.
- :class:`RandRenormd`: another brain mask under the same z-score: a tighter or looser body shifts
  the mean and standard deviation the scan is normalised with, so the body's values move by an
  affine map (MSLesSeg's held-out scan with its mask eroded by 3-8 voxels: ``(z - 0.18..0.25) / 0.89``
  in the original z). MONAI's intensity shifts also move the zero background.
- :class:`RandFaintLesionsd`: lesions less conspicuous than in the training scans (another field
  strength, sequence or preprocessing: on one MS site lesions sit 1.3-1.5 brain standard
  deviations above the brain's mean, on another 1.8-2.3): inside the labelled lesions, softened
  at their edge, the image is pulled towards the tissue around them. The labels stay: a faint
  lesion is still a lesion. Whole-image intensity transforms (gamma, contrast) move lesions and
  normal tissue together and cannot do this.
- :class:`RandTailScaled`: less contrast above the typical tissue (another sequence or field
  strength): every body value above the body's median is pulled towards it, lesions and normal
  bright tissue alike, so their order is kept. MONAI's contrast and gamma transforms act on the
  whole range, the background and the dark tissue included.

Bias fields (MONAI ``RandBiasField``), motion and ghosting (TorchIO through MONAI's ``RandTorchIO``)
come from the libraries (:mod:`medseg.transforms.augment`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.transforms import GaussianSmooth, MapTransform, RandomizableTransform

THICK_FACTORS = (2, 6)  # slice thickness in voxels (at 1 mm: 2-6 mm slices)
EDGE_VOXELS = (1, 3)
FAINT_FACTORS = (0.5, 1.0)  # share of the lesions' contrast to their surroundings that is kept
RENORM_SHIFT = 0.3  # z -> (z - b) / a on the body: b within +-0.3, a within 0.85-1.15
RENORM_SCALE = (0.85, 1.15)
TAIL_FACTORS = (0.5, 1.0)  # share of the distance above the body's median that is kept


class RandRenormd(RandomizableTransform, MapTransform):
    """With probability ``prob``: the body of ``image`` (C, X, Y, Z; voxels non-zero in any channel)
    mapped ``z -> (z - b) / a`` with ``b`` drawn from +-``shift`` and ``a`` from ``scale`` (one draw
    for all channels); the background stays 0."""

    def __init__(
        self, keys: Sequence[str], prob: float, shift: float = RENORM_SHIFT, scale: tuple[float, float] = RENORM_SCALE
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.shift, self.scale = shift, scale
        self.b, self.a = 0.0, 1.0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.b = float(self.R.uniform(-self.shift, self.shift))
        self.a = float(self.R.uniform(*self.scale))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        d = dict(data)
        image = d[self.keys[0]]
        image = image.clone() if isinstance(image, torch.Tensor) else torch.as_tensor(image).clone()
        body = (image != 0).any(0)
        image[:, body] = (image[:, body] - self.b) / self.a
        d[self.keys[0]] = image
        return d


class RandFactord(RandomizableTransform, MapTransform):
    """With probability ``prob``, one factor drawn uniformly from ``factors`` (the subclass's
    ``FACTORS`` unless given) per call, as ``self.factor``; the subclass's ``__call__`` applies it."""

    FACTORS: tuple[float, float] = (1.0, 1.0)

    def __init__(self, keys: Sequence[str], prob: float, factors: tuple[float, float] | None = None) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.factors = factors or self.FACTORS
        self.factor = self.factors[1]

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.factor = float(self.R.uniform(*self.factors))


class RandTailScaled(RandFactord):
    """With probability ``prob``: in each channel of ``image`` (C, X, Y, Z) the body values (voxels
    non-zero in any channel) above the body's median ``m`` mapped ``z -> m + k (z - m)``, ``k`` drawn
    from ``factors`` (one draw for all channels); the rest, the background included, unchanged."""

    FACTORS = TAIL_FACTORS

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        d = dict(data)
        image = torch.as_tensor(d[self.keys[0]]).clone()
        body = (image != 0).any(0)
        if not body.any():
            return data
        for c in range(image.shape[0]):
            values = image[c][body]
            m = values.float().median().to(image.dtype)
            image[c][body] = torch.where(values > m, m + self.factor * (values - m), values)
        d[self.keys[0]] = image
        return d


RING_VOXELS = (1, 3)  # the surroundings: body voxels 2-3 voxels from a lesion


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
        body = (image != 0).any(0)
        if not body.any() or body.all():
            return data
        new = ~dilate(~body, self.radius) if self.erode else dilate(body, self.radius)  # erosion: the outside grown
        for key in self.keys:
            img = d[key].clone() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key]).clone()
            if self.erode:
                img[:, ~new] = 0
            elif key == self.keys[0]:
                shell = new & ~body
                for c in range(img.shape[0]):
                    img[c][shell] = torch.quantile(img[c][body].float(), 0.05).to(img.dtype)
            d[key] = img
        return d


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``mask`` (X, Y, Z bool) dilated by a cube of ``radius`` voxels, as three 1D max-pools: the
    same as one 3D max-pool of side 2r + 1, 40x faster on a CPU for r = 3."""
    x = mask[None, None].float()
    for k in ((2 * radius + 1, 1, 1), (1, 2 * radius + 1, 1), (1, 1, 2 * radius + 1)):
        x = F.max_pool3d(x, k, stride=1, padding=tuple(n // 2 for n in k))
    return x[0, 0] > 0


def faint_lesions(image: torch.Tensor, lesion: torch.Tensor, factor: float) -> torch.Tensor:
    """``image`` (C, X, Y, Z) with the contrast of the ``lesion`` voxels (X, Y, Z bool) to the
    tissue around them scaled by ``factor``: each channel moves towards the median of the body
    voxels (non-zero) 2-3 voxels outside the lesions, fully inside them and partly over a
    1-voxel Gaussian edge. Background voxels stay 0. Unchanged without lesions or surroundings."""
    if not lesion.any():  # a background patch: nothing to compute
        return image
    body = (image != 0).any(0)
    grown = [dilate(lesion, r) for r in RING_VOXELS]
    ring = grown[1] & ~grown[0] & body
    if int(ring.sum()) < 8:
        return image
    soft = (torch.maximum(GaussianSmooth(sigma=1.0)(lesion[None].float())[0], lesion.float()) * body).to(image.dtype)
    out = image.clone()
    for c in range(image.shape[0]):
        level = image[c][ring].float().median().to(image.dtype)
        out[c] = image[c] - (1.0 - factor) * soft * (image[c] - level)
    return out


class RandFaintLesionsd(RandFactord):
    """With probability ``prob``: :func:`faint_lesions` on ``image`` (C, X, Y, Z) with a factor drawn
    from ``factors``; the lesions are the voxels non-zero in any channel of the label. Keys: the
    image, then the label (not changed)."""

    FACTORS = FAINT_FACTORS

    def __call__(self, data: dict) -> dict:
        self.randomize()
        if not self._do_transform:
            return data
        d = dict(data)
        image_key, label_key = self.keys[0], self.keys[1]
        lesion = (torch.as_tensor(d[label_key]) != 0).any(0)
        d[image_key] = faint_lesions(torch.as_tensor(d[image_key]), lesion, self.factor)
        return d
