"""The volumes a scan page shows: gzip-compressed NIfTI files, base64-encoded into the page's data
(a page opened from ``file://`` may not fetch files; a script it includes may define data).

* The scan is stored as uint8 with the NIfTI scale ``scl_slope``/``scl_inter`` mapping 0..255 back
  to its 0.1-99.9th percentile intensity range (values outside are clipped): 256 grey levels
  for the eye, a quarter of float32's size; window and level still read in the scan's units.
* Masks are stored as uint8 0/1.
* A scan of more than ``max_voxels`` voxels is shown as a display copy on a coarser grid: every
  ``step`` voxels along each axis (the smallest ``step`` that fits), the scan averaged over each
  ``step``^3 block, a mask voxel set when any voxel of its block is (so no lesion vanishes).
  The copy's affine places each block's centre where it lies on the full grid, so world
  coordinates (the crosshair, the lesion centroids, which are computed on the full grid) agree
  with the written masks; only the display is coarser.
"""

from __future__ import annotations

import base64
import gzip
import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np

DEFAULT_MAX_VOXELS = 8_000_000  # a 200^3 scan; a browser tab holds this as WebGL textures comfortably


@dataclass(frozen=True)
class DisplayGrid:
    """The grid a page shows: ``step`` 1 is the mask's own grid; ``shape`` (3,) and ``affine``
    (4, 4) of the display copy."""

    step: int
    shape: tuple[int, int, int]
    affine: np.ndarray


def display_grid(shape: tuple[int, ...], affine: np.ndarray, max_voxels: int = DEFAULT_MAX_VOXELS) -> DisplayGrid:
    """The coarsest-needed grid: the smallest integer ``step`` with ``prod(ceil(shape / step)) <=
    max_voxels``, and its affine (block ``k`` centred on full-grid voxel ``step * k + (step - 1) / 2``)."""
    step = 1
    while math.prod(math.ceil(n / step) for n in shape[:3]) > max_voxels:
        step += 1
    scale = np.diag([step, step, step, 1.0])
    scale[:3, 3] = (step - 1) / 2.0
    return DisplayGrid(step, tuple(math.ceil(n / step) for n in shape[:3]), np.asarray(affine, float) @ scale)


def _blocks(data: np.ndarray, step: int, fill: float) -> np.ndarray:
    """(X/step, step, Y/step, step, Z/step, step) view of ``data`` (X, Y, Z) padded with ``fill``."""
    pad = [(0, -n % step) for n in data.shape]
    padded = np.pad(data, pad, constant_values=fill) if any(p for _, p in pad) else data
    x, y, z = (n // step for n in padded.shape)
    return padded.reshape(x, step, y, step, z, step)


def coarse_image(data: np.ndarray, step: int) -> np.ndarray:
    """Block means of a (X, Y, Z) scan over ``step``^3 blocks (edge blocks: their voxels only)."""
    if step == 1:
        return data
    blocks = _blocks(np.asarray(data, np.float32), step, np.nan)
    return np.nanmean(blocks, axis=(1, 3, 5)).astype(np.float32)


def coarse_mask(mask: np.ndarray, step: int) -> np.ndarray:
    """A (X, Y, Z) mask on the display grid: a block is set when any of its voxels is."""
    if step == 1:
        return mask.astype(bool)
    return _blocks(mask.astype(bool), step, False).any(axis=(1, 3, 5))


def intensity_range(data: np.ndarray) -> tuple[float, float]:
    """0.1th and 99.9th percentile of the finite voxels (sampled to ~1M voxels); a flat scan gives
    (v, v + 1)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    sample = finite[:: max(1, finite.size // 1_000_000)]
    lo, hi = (float(v) for v in np.percentile(sample, [0.1, 99.9]))
    return lo, hi if hi > lo else lo + 1.0


def _encode(img: nib.Nifti1Image) -> str:
    """gzip-compressed NIfTI bytes of ``img`` as base64 text (qform and sform: the given affine)."""
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def encode_image(data: np.ndarray, affine: np.ndarray) -> tuple[str, tuple[float, float]]:
    """A (X, Y, Z) scan as base64 ``.nii.gz`` text, uint8 scaled back to its intensity range
    (module docstring); returns the text and that range (lo, hi)."""
    lo, hi = intensity_range(data)
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    img = nib.Nifti1Image(np.rint(scaled * 255).astype(np.uint8), affine)
    img.header.set_slope_inter((hi - lo) / 255.0, lo)
    return _encode(img), (lo, hi)


def encode_mask(mask: np.ndarray, affine: np.ndarray) -> str:
    """A (X, Y, Z) mask as base64 ``.nii.gz`` text (uint8 0/1)."""
    return _encode(nib.Nifti1Image(mask.astype(np.uint8), affine))
