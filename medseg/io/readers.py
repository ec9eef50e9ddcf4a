"""A MONAI ``ImageReader`` on SimpleITK for NRRD and MetaImage (.mha/.mhd) scans and folders of
DICOM files (one series each, :mod:`medseg.io.dicom`; read with GDCM).

MONAI reads these formats only through ITK (``itk`` package) or pynrrd; medseg already depends on
SimpleITK, so this small reader fills the gap. NIfTI stays with MONAI's ``NibabelReader``.
SimpleITK's LPS geometry is turned into MONAI's RAS affine. Every read opens the header first and
checks the scan's size (:func:`medseg.io.geometry.open_sitk`) before any voxel is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from medseg.errors import MedsegError
from medseg.io.geometry import open_sitk, series_geometry, sitk_affine

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


class SimpleITKReader(ImageReader):
    """Read .nrrd/.mha/.mhd files and DICOM folders into (X, Y, Z[, C]) arrays with RAS affines."""

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        names = [filename] if isinstance(filename, str) else list(filename)
        return all(str(n).lower().endswith(SITK_SUFFIXES) or Path(n).is_dir() for n in names)

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> sitk.Image | list[sitk.Image]:
        names = [data] if isinstance(data, str) else list(data)
        images = [_read_image(n) for n in names]  # each header read and size checked first
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
            meta = {
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.array(image.GetSize()[:3]),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if image.GetNumberOfComponentsPerPixel() > 1 else float("nan"),
                "filename_or_obj": str(name),
            }
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return data, meta


def read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (X, Y, Z[, C]) and (4, 4) RAS affine of a NRRD/MetaImage file or a DICOM folder, the header read and
    the size checked (:func:`medseg.io.geometry.open_sitk`) before the voxels.

    Raises:
        MedsegError: a scan over the size cap; SimpleITK's RuntimeError for unreadable files.
    """
    image = _read_image(path)
    arr = sitk.GetArrayFromImage(image)
    spatial = image.GetDimension()
    return np.moveaxis(arr, list(range(spatial)), list(range(spatial))[::-1]), sitk_affine(image)


def _read_image(path: Path | str) -> sitk.Image:
    """The image of a NRRD/MetaImage file or of a DICOM folder (:func:`read_series`), its header
    read and its size checked first."""
    return read_series(path) if Path(path).is_dir() else open_sitk(path).Execute()


def read_series(folder: Path | str) -> sitk.Image:
    """The DICOM series of ``folder`` (:func:`medseg.io.dicom.find_series`) as one image, slices
    in GDCM's order; the headers are read and checked first
    (:func:`medseg.io.geometry.series_geometry`), and the image must have their geometry.

    Raises:
        MedsegError: see :func:`medseg.io.geometry.series_geometry`; an image whose geometry is not
            the headers' (GDCM read the series otherwise).
    """
    shape, affine, series = series_geometry(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    image = reader.Execute()
    if tuple(image.GetSize()[:3]) != shape or not np.allclose(sitk_affine(image), affine, atol=1e-3):
        raise MedsegError(
            f"{folder}: GDCM read the series onto another grid than its headers give (size {image.GetSize()}, "
            f"headers {shape}); convert it to NIfTI (e.g. dcm2niix) and predict that"
        )
    return image
