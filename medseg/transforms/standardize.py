"""Site-robust MRI intensity standardisation and background detection.

z-scoring over the non-zero voxels (``zscore_nonzero``) makes the scale depend on what the brain
mask holds: a tighter mask (less CSF, less cortex) or a different lesion load moves the mean and
the standard deviation, so "bright" means something else at another site. The methods here tie
the scale to brain tissue instead:

- ``robust``: clip each channel to its foreground's 0.5-99.5 percentiles, subtract the median and
  divide by the robust standard deviation (interquartile range / 1.349);
- ``whitestripe``: the normal-tissue stripe of WhiteStripe (Shinohara et al. 2014): the largest
  peak of the smoothed foreground histogram is normal-appearing tissue (white matter on T1, white
  and grey matter on FLAIR and T2); the voxels whose quantile lies within +-5 % of that peak's
  quantile form the stripe. The image becomes ``(x / stripe_mean - 1) / 0.2``: intensities as a
  ratio to normal tissue (0 = normal tissue, 1 = 20 % brighter). WhiteStripe proper divides by the
  stripe's standard deviation, 1-2 % of its mean on the MS scans here, which puts lesions 20-500
  units up, depending on the noise and on whether the skull is in the scan; MR magnitude is
  proportional, so the ratio holds across scanners (lesion / stripe mean 1.39-1.66 on both MS
  sites here, skull on or off). It needs raw magnitude intensities (a positive stripe);
- ``nyul``: Nyúl and Udupa's piecewise-linear histogram standardisation: the foreground
  percentiles :data:`LANDMARK_PERCENTILES` of every scan are mapped onto standard landmarks fitted
  on the training cases (:func:`fit_landmarks`, stored in the plan and the checkpoint).

Each works on the foreground (the non-zero voxels once the background is zeroed) and leaves the
background at 0, as MONAI's ``NormalizeIntensity(nonzero=True)`` does.

``background: otsu`` (:class:`OtsuForegroundd`) finds the head or brain without assuming the
background is zero or the minimum: Otsu's threshold on each channel, the largest connected
component of their union, closed and with its holes filled; voxels outside it are set to 0.
Spline-resampled scans with small negative values at the brain's edge, or skull-on scans with
noisy air, get a clean zero background this way.

MONAI has no WhiteStripe, no Nyúl standardisation and no 3D Otsu body mask (its ``ForegroundMask``
works on 2D RGB pathology tiles); TorchIO's ``HistogramStandardization`` works on whole TorchIO
subjects and files, not on MONAI dictionaries, hence these transforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import MapTransform
from scipy import ndimage
from skimage.filters import threshold_otsu

from medseg.config.plan import LANDMARK_PERCENTILES
from medseg.errors import MedsegError

STRIPE_TAU = 0.05  # WhiteStripe's half-width, in quantiles
STRIPE_SCALE = 0.2  # whitestripe: one unit = 20 % above normal tissue (about a brain's robust SD / mean)
HISTOGRAM_BINS = 2000
MAX_NEGATIVE = 0.05  # whitestripe: share of the foreground below 0 beyond which a scan is not raw magnitudes


def robust_parameters(values: np.ndarray) -> tuple[float, float, float, float]:
    """(low, high, centre, scale) of foreground ``values`` (N,): 0.5 and 99.5 percentiles, median,
    interquartile range / 1.349 (the standard deviation of a normal distribution with that IQR)."""
    low, q25, median, q75, high = np.percentile(values, (0.5, 25, 50, 75, 99.5))
    return float(low), float(high), float(median), max(float(q75 - q25) / 1.349, 1e-6)


def whitestripe_mean(values: np.ndarray, tau: float = STRIPE_TAU) -> float:
    """Mean of the WhiteStripe of foreground ``values`` (N,): the voxels whose quantile is within
    ``tau`` of the quantile of the smoothed histogram's largest peak."""
    low, high = np.percentile(values, (0.5, 99.5))
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))
    smooth = ndimage.gaussian_filter1d(counts.astype(float), sigma=HISTOGRAM_BINS / 200)
    top = int(np.argmax(smooth))
    peak = 0.5 * (edges[top] + edges[top + 1])
    q = float(np.mean(values <= peak))
    lo, hi = np.quantile(values, (max(q - tau, 0.0), min(q + tau, 1.0)))
    stripe = values[(values >= lo) & (values <= hi)]
    return float(stripe.mean()) if stripe.size else float(peak)


def raw_tissue_mean(values: np.ndarray, name: str) -> float:
    """:func:`whitestripe_mean` of foreground ``values`` (N,) of the scan ``name``, checked to be a
    raw magnitude image: MR magnitudes are not negative (spline resampling leaves well under 1 %
    of the foreground below 0; 0-0.3 % on the MS and BraTS scans here) while a z-scored scan has
    about half its foreground below 0 and may still have a positive normal-tissue peak, which would
    give ratios of nothing.

    Raises:
        MedsegError: over :data:`MAX_NEGATIVE` of the foreground below 0, or normal tissue not positive.
    """
    negative = float(np.mean(values < 0))
    if negative > MAX_NEGATIVE:
        found = f"{negative:.0%} of its foreground is below 0"
    elif (mean := whitestripe_mean(values)) > 0:
        return mean
    else:
        found = f"its normal-tissue intensity is {mean:.3g}"
    raise MedsegError(
        f"{name}: {found} (already normalised?); preprocess.normalize whitestripe needs raw MRI "
        "intensities, use robust or zscore_nonzero"
    )


def scan_landmarks(values: np.ndarray) -> np.ndarray:
    """(L,) foreground percentiles of one scan at :data:`LANDMARK_PERCENTILES`."""
    return np.percentile(values, LANDMARK_PERCENTILES)


def fit_landmarks(per_scan: Sequence[np.ndarray]) -> list[float]:
    """Standard landmarks (L,) from each training scan's :func:`scan_landmarks` (Nyúl): each scan's
    landmarks are mapped linearly so its first and last land on 0 and 100, averaged over scans, then
    shifted and scaled so the median landmark is 0 and the 10-90 percentile span is 2.563 (as a unit
    normal's), so the network sees z-score-like values."""
    mapped = [100 * (lm - lm[0]) / max(lm[-1] - lm[0], 1e-6) for lm in per_scan]
    standard = np.mean(mapped, axis=0)
    mid = LANDMARK_PERCENTILES.index(50.0)
    p10, p90 = LANDMARK_PERCENTILES.index(10.0), LANDMARK_PERCENTILES.index(90.0)
    scale = max(float(standard[p90] - standard[p10]) / 2.563, 1e-6)
    return [round(float(v), 5) for v in (standard - standard[mid]) / scale]


def apply_landmarks(x: np.ndarray, source: np.ndarray, standard: Sequence[float]) -> np.ndarray:
    """Map ``x`` piecewise linearly from the scan's landmarks ``source`` (L,) onto ``standard`` (L,),
    extending the first and last segments linearly beyond the ends (``np.interp`` would clip)."""
    src = np.maximum.accumulate(np.asarray(source, float))  # equal percentiles (a flat histogram) stay ordered
    src = src + np.arange(src.size) * 1e-6
    std = np.asarray(standard, float)
    out = np.interp(x, src, std)
    lo_slope = (std[1] - std[0]) / (src[1] - src[0])
    hi_slope = (std[-1] - std[-2]) / (src[-1] - src[-2])
    out = np.where(x < src[0], std[0] + (x - src[0]) * lo_slope, out)
    return np.where(x > src[-1], std[-1] + (x - src[-1]) * hi_slope, out)


class Standardized(MapTransform):
    """Per-channel standardisation of ``image`` (C, X, Y, Z) over its non-zero voxels (``method``
    robust, whitestripe or nyul; ``landmarks``: nyul's standard landmarks, one list per channel).
    Background voxels (0) stay 0; a channel without foreground is left as it is."""

    def __init__(self, keys: Sequence[str], method: str, landmarks: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__(keys)
        self.method = method
        self.landmarks = [list(lm) for lm in landmarks or []]

    def channel(self, x: np.ndarray, c: int, name: str = "image") -> np.ndarray:
        """The standardised copy of channel ``c`` (X, Y, Z) of the scan ``name``.

        Raises:
            MedsegError: whitestripe on a scan whose normal tissue is not positive.
        """
        fg = x != 0
        values = x[fg].astype(np.float64)
        if values.size < 2:
            return x
        out = np.zeros_like(x)
        if self.method == "robust":
            low, high, centre, scale = robust_parameters(values)
            out[fg] = (np.clip(values, low, high) - centre) / scale
        elif self.method == "whitestripe":
            out[fg] = (values / raw_tissue_mean(values, name) - 1) / STRIPE_SCALE
        else:
            out[fg] = apply_landmarks(values, scan_landmarks(values), self.landmarks[c])
        return out

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.keys:
            img = d[key]
            arr = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img, dtype=np.float32)
            name = str(getattr(img, "meta", {}).get("filename_or_obj", key))
            out = np.stack([self.channel(arr[c], c, name) for c in range(arr.shape[0])]).astype(np.float32)
            if isinstance(img, torch.Tensor):  # a MetaTensor keeps its affine and history
                d[key] = img.clone()
                d[key][:] = torch.from_numpy(out)
            else:
                d[key] = out
        return d


def otsu_foreground(channels: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool head/brain mask of ``channels`` (C, X, Y, Z): the largest connected component
    of the union of each channel's Otsu foreground, closed (2 voxels) and with its holes filled."""
    union = np.zeros(channels.shape[1:], bool)
    for x in channels:
        if np.ptp(x) > 0:
            union |= x > threshold_otsu(x)
    labels, n = ndimage.label(union)
    if n == 0:
        return union
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    closed = ndimage.binary_closing(largest, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    return ndimage.binary_fill_holes(closed | largest)


class OtsuForegroundd(MapTransform):
    """``image`` (C, X, Y, Z): every voxel outside :func:`otsu_foreground` set to 0 in every
    channel (the background cropping and the non-zero normalisations expect)."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.keys:
            img = d[key]
            arr = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img, dtype=np.float32)
            keep = torch.as_tensor(otsu_foreground(arr))
            d[key] = img * keep.to(img.dtype) if isinstance(img, torch.Tensor) else arr * keep.numpy()
        return d
