"""A MONAI ``ImageReader`` on SimpleITK for NRRD and MetaImage (.mha/.mhd) scans.

MONAI reads these formats only through ITK (``itk`` package) or pynrrd; medseg already depends on
SimpleITK, so this small reader fills the gap. NIfTI stays with MONAI's ``NibabelReader``.
SimpleITK's LPS geometry is turned into MONAI's RAS affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """(4, 4) voxel-to-RAS affine of a SimpleITK image (first three dimensions)."""
    dim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing()[:3])
    affine[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ affine


class SimpleITKReader(ImageReader):
    """Read .nrrd/.mha/.mhd into (X, Y, Z[, C]) arrays with RAS affines."""

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        names = [filename] if isinstance(filename, str) else list(filename)
        return all(str(n).lower().endswith(SITK_SUFFIXES) for n in names)

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> sitk.Image | list[sitk.Image]:
        names = [data] if isinstance(data, str) else list(data)
        images = [sitk.ReadImage(str(n)) for n in names]
        self._names = names
        return images if len(images) > 1 else images[0]

    def get_data(self, img: sitk.Image | list[sitk.Image]) -> tuple[np.ndarray, dict]:
        images = img if isinstance(img, list) else [img]
        arrays, meta = [], {}
        for image, name in zip(images, self._names):
            arr = sitk.GetArrayFromImage(image)  # (Z, Y, X[, C])
            spatial = image.GetDimension()
            arr = np.moveaxis(arr, list(range(spatial)), list(range(spatial))[::-1])  # (X, Y, Z[, C])
            arrays.append(arr)
            affine = sitk_affine(image)
            meta = {MetaKeys.AFFINE: affine, MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    MetaKeys.SPATIAL_SHAPE: np.array(image.GetSize()[:3]), MetaKeys.SPACE: SpaceKeys.RAS,
                    MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if image.GetNumberOfComponentsPerPixel() > 1 else float("nan"),
                    "filename_or_obj": str(name)}
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return data, meta


def read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(image)
    spatial = image.GetDimension()
    return np.moveaxis(arr, list(range(spatial)), list(range(spatial))[::-1]), sitk_affine(image)
