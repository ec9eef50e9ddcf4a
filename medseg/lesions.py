"""The one lesion rule: a lesion is a connected component of a binary mask (6-, 18- or 26-connected).

Connected-component labelling and hole filling use scipy (MONAI's
``get_largest_connected_component_mask`` keeps one component only; its ``FillHoles`` is the same
scipy fill, but importing monai.transforms would cost this leaf module, which the evaluation
imports, some 3 s of start-up). :func:`binarize` is the one operating-point rule of validation,
``medseg tune`` and ``medseg predict``: threshold, optionally fill enclosed holes, drop small lesions
(and, at predict time only, lesions mostly outside a region mask or below a confidence).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def structure(connectivity: int) -> np.ndarray:
    """3x3x3 structuring element for 6-, 18- or 26-connectivity."""
    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def label_lesions(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label connected components of ``mask`` (X, Y, Z): (labels int32 (X, Y, Z), count)."""
    labels, n = ndimage.label(mask.astype(bool), structure(connectivity))
    return labels.astype(np.int32), int(n)


def remove_small(mask: np.ndarray, min_voxels: float, connectivity: int = 26) -> np.ndarray:
    """Drop components smaller than ``min_voxels`` voxels from a binary (X, Y, Z) mask."""
    if min_voxels <= 1:
        return mask.astype(bool)
    labels, n = label_lesions(mask, connectivity)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """``mask`` (X, Y, Z) with every cavity it encloses filled: background regions that do not
    reach the border, traced 6-connected for 18/26-connected lesions and 26-connected for
    6-connected ones (the dual connectivity, so a cavity never leaks out through a diagonal the
    lesion closes). Returns bool (X, Y, Z)."""
    return ndimage.binary_fill_holes(mask.astype(bool), structure(26 if connectivity == 6 else 6))


def above(prob: np.ndarray, threshold: float, connectivity: int = 26, fill: bool = False) -> np.ndarray:
    """``prob >= threshold`` (X, Y, Z), enclosed holes filled when ``fill`` (``inference.fill_holes``)."""
    mask = prob >= threshold
    return fill_holes(mask, connectivity) if fill else mask


MAX_OUTSIDE = 0.5  # a lesion with a larger fraction of its voxels outside the region is dropped


def binarize(
    prob: np.ndarray,
    threshold: float,
    min_voxels: float,
    connectivity: int = 26,
    fill: bool = False,
    region: np.ndarray | None = None,
    min_confidence: float | None = None,
) -> np.ndarray:
    """The operating point applied to a probability map (X, Y, Z): :func:`above`, then lesions
    under ``min_voxels`` voxels dropped (a filled cavity counts towards its lesion's size).

    Args:
        region: optional bool (X, Y, Z) region (a brain mask): a lesion with more than half of its
            voxels outside it (:data:`MAX_OUTSIDE`) is dropped whole; a kept lesion is not clipped.
        min_confidence: optional; a lesion whose confidence (its maximum probability, >= ``threshold``
            by construction) is below it is dropped whole.

    Returns:
        bool (X, Y, Z).
    """
    mask = above(prob, threshold, connectivity, fill)
    if region is None and min_confidence is None:
        return remove_small(mask, min_voxels, connectivity)
    labels, n = label_lesions(mask, connectivity)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_voxels
    keep &= _kept_by_region(labels, n, region) & _kept_by_confidence(labels, n, prob, min_confidence)
    keep[0] = False
    return keep[labels]


def keep_inside(mask: np.ndarray, region: np.ndarray | None, connectivity: int = 26) -> np.ndarray:
    """``mask`` (X, Y, Z) without the lesions that :func:`binarize` drops for ``region`` (bool
    (X, Y, Z), e.g. a brain mask: more than half of a lesion's voxels outside); unchanged without one."""
    if region is None:
        return mask
    labels, n = label_lesions(mask, connectivity)
    keep = _kept_by_region(labels, n, region)
    keep[0] = False
    return keep[labels]


def _kept_by_region(labels: np.ndarray, n: int, region: np.ndarray | None) -> np.ndarray:
    """(n + 1,) bool: lesion ``i`` of ``labels`` (X, Y, Z) has at most :data:`MAX_OUTSIDE` of its
    voxels outside ``region`` (bool (X, Y, Z)); all True without a region."""
    if region is None:
        return np.ones(n + 1, bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    outside = np.bincount(labels.ravel(), weights=~region.astype(bool).ravel(), minlength=n + 1)
    return outside <= MAX_OUTSIDE * sizes


def _kept_by_confidence(labels: np.ndarray, n: int, prob: np.ndarray, min_confidence: float | None) -> np.ndarray:
    """(n + 1,) bool: lesion ``i`` of ``labels`` (X, Y, Z) has a maximum of ``prob`` (X, Y, Z) of
    at least ``min_confidence``; all True without one."""
    if min_confidence is None or n == 0:
        return np.ones(n + 1, bool)
    peaks = ndimage.maximum(prob, labels, index=np.arange(1, n + 1))
    return np.concatenate([[True], np.asarray(peaks, float) >= min_confidence])


def lesion_mask(labels: np.ndarray, lesion_labels: Sequence[int] | None = None) -> np.ndarray:
    """Boolean lesion mask of a label array: values in ``lesion_labels``, or every non-zero value
    when it is None."""
    return np.isin(np.rint(labels), list(lesion_labels)) if lesion_labels else labels > 0
