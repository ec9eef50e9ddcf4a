"""The one lesion rule: a lesion is a connected component of a binary mask (6-, 18- or 26-connected).

Connected-component labelling and hole filling use scipy (MONAI's
``get_largest_connected_component_mask`` keeps one component only; its ``FillHoles`` is the same
scipy fill, but importing monai.transforms would cost this leaf module, which the evaluation
imports, some 3 s of start-up). :func:`binarize` is the one operating-point rule of validation,
``medseg tune`` and ``medseg predict``: threshold, optionally fill enclosed holes, drop small lesions.
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


def binarize(
    prob: np.ndarray, threshold: float, min_voxels: float, connectivity: int = 26, fill: bool = False
) -> np.ndarray:
    """The operating point applied to a probability map (X, Y, Z): :func:`above`, then lesions
    under ``min_voxels`` voxels dropped (a filled cavity counts towards its lesion's size).
    Returns bool (X, Y, Z)."""
    return remove_small(above(prob, threshold, connectivity, fill), min_voxels, connectivity)


def lesion_mask(labels: np.ndarray, lesion_labels: Sequence[int] | None = None) -> np.ndarray:
    """Boolean lesion mask of a label array: values in ``lesion_labels``, or every non-zero value
    when it is None."""
    return np.isin(np.rint(labels), list(lesion_labels)) if lesion_labels else labels > 0
