"""From the model's grid back to the scan's own grid, exactly where possible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample


def _axis_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """If model-grid voxels map onto scan-grid voxels by axis permutation, flips and an integer
    shift (orientation change and crop, no resampling), return (signed permutation R, shift t)
    with ``dst_index = R @ src_index + t``; else None."""
    transform = np.linalg.inv(dst_affine) @ src_affine
    r, t = transform[:3, :3], transform[:3, 3]
    r_int, t_int = np.rint(r), np.rint(t)
    ok = np.allclose(r, r_int, atol=1e-4) and np.allclose(t, t_int, atol=1e-3)
    if not ok or not all(np.count_nonzero(row) == 1 for row in r_int) or abs(abs(np.linalg.det(r_int)) - 1) > 1e-6:
        return None
    return r_int.astype(int), t_int.astype(int)


def restore_grid(
    prob: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int]
) -> np.ndarray:
    """Put a (1, X', Y', Z') probability map on the model grid back onto the scan grid (X, Y, Z).

    Orientation changes and crops are undone exactly by transposing, flipping and pasting (zeros
    outside the crop); anything else (a spacing change) by one bilinear affine resampling with
    MONAI's ``SpatialResample``. Probabilities only: masks are thresholded afterwards.
    """
    mapping = _axis_map(src_affine, dst_affine)
    if mapping is None:
        back = SpatialResample(mode="bilinear", padding_mode="zeros")(
            MetaTensor(prob, affine=torch.as_tensor(src_affine)),
            dst_affine=torch.as_tensor(dst_affine),
            spatial_size=list(dst_shape),
        )
        return np.asarray(back[0], dtype=np.float32)
    r, t = mapping
    arr = prob[0].numpy()
    src_axes = [int(np.nonzero(r[d])[0][0]) for d in range(3)]
    arr = arr.transpose(src_axes)
    offsets = []
    for d in range(3):
        if r[d, src_axes[d]] < 0:
            arr = np.flip(arr, d)
            offsets.append(t[d] - (arr.shape[d] - 1))
        else:
            offsets.append(t[d])
    out = np.zeros(tuple(dst_shape), dtype=np.float32)
    dst = tuple(slice(max(o, 0), min(o + n, size)) for o, n, size in zip(offsets, arr.shape, dst_shape))
    src = tuple(slice(s.start - o, s.stop - o) for s, o in zip(dst, offsets))
    out[dst] = arr[src]
    return out
