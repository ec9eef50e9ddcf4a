"""Reading voxels (NIfTI via nibabel, NRRD/MHA via SimpleITK) and writing masks that keep the scan's
exact geometry: ``save_like`` writes an array with the header of a reference scan (NIfTI keeping
qform/sform codes; NRRD/MHA keeping origin, spacing and direction), atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError, shorten
from medseg.io.geometry import nifti_header, open_sitk, read_geometry
from medseg.io.readers import read_sitk
from medseg.io.write import atomic_write
from medseg.lesions import lesion_mask


def read_verified(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine like :func:`read_array`, every voxel read once: the header first (its
    size checked, :func:`medseg.io.geometry.nifti_header`), then exactly the bytes it promises
    (``vox_offset + voxels x itemsize``) and never the rest, so a ``.nii.gz`` whose stream goes on
    inflating past the voxels costs no more than its image. A truncated or corrupt body and a
    ``.nii`` shorter than its header promises are refused before any array of that size is allocated.

    Raises:
        MedsegError: naming the file.
    """
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            header = nifti_header(path)
            needed = int(header["vox_offset"]) + math.prod(header.get_data_shape()) * header.get_data_dtype().itemsize
            size = path.stat().st_size
            if not str(path).endswith(".gz") and size < needed:
                raise EOFError(f"file holds {size} bytes, its header needs {needed}")
            img = nib.load(str(path))  # nibabel reads the voxels from vox_offset, nbytes of them (a short read raises)
            return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=float)
        return read_sitk(path)
    except MedsegError:
        raise
    except Exception as exc:  # nibabel/SimpleITK/gzip raise many types for corrupt files
        raise MedsegError(
            f"{path}: the file is truncated or corrupt ({_cause(exc)}); re-export it or remove the case"
        ) from None


def check_readable(path: Path) -> None:
    """:func:`read_verified`, keeping nothing."""
    read_verified(path)


def read_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (X, Y, Z[, C]) in the file's own order and the (4, 4) RAS affine (NIfTI via
    nibabel with scaling applied, other formats via SimpleITK); the header is read and the size
    checked (:func:`medseg.io.geometry.check_scan_size`) before any voxel.

    Raises:
        MedsegError: unreadable file, or a scan over the size cap.
    """
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            nifti_header(path)
            img = nib.load(str(path))
            return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=float)
        return read_sitk(path)
    except MedsegError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        raise MedsegError(f"{path}: cannot read the voxels ({_cause(exc)}); re-export the file") from None


def _cause(exc: BaseException) -> str:
    """``Type: first line`` of a reader's exception, at most ~160 characters."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {shorten(first, 120)}"


def read_lesion_mask(path: Path, lesion_labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lesion mask (X, Y, Z) of a label or mask file (see :func:`lesion_mask`) and its affine."""
    label, affine = read_array(path)
    return lesion_mask(label.reshape(label.shape[:3]), lesion_labels), affine


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` (X, Y, Z) as NIfTI with ``affine`` (4, 4) as qform and sform (code 1, scanner), atomically."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))


def save_like(array: np.ndarray, reference: Path, out_path: Path, scale: float = 1.0) -> None:
    """Write ``array`` (X, Y, Z) on the grid of ``reference``, atomically.

    The header (NIfTI: affine, qform/sform codes, units; other formats: origin, spacing,
    direction) is copied from the reference; only the data type changes. A DICOM folder gives a
    NIfTI file with its series' affine (qform and sform codes 1, scanner). ``scale`` is stored as
    the NIfTI ``scl_slope`` (readers get ``array * scale``); other formats store ``array`` as is.
    """
    with atomic_write(out_path) as tmp:
        if Path(reference).is_dir():
            affine = read_geometry(reference)[1]
            img = nib.Nifti1Image(array, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            img.header.set_xyzt_units("mm")
            img.header.set_slope_inter(scale, 0.0)
            nib.save(img, str(tmp))
        elif str(reference).endswith((".nii", ".nii.gz")):
            ref = nib.load(str(reference))
            header = ref.header.copy()
            header.set_data_dtype(array.dtype)
            img = nib.Nifti1Image(array, ref.affine, header)
            img.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]))
            img.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]))
            img.header.set_slope_inter(scale, 0.0)
            nib.save(img, str(tmp))
        else:
            reader = open_sitk(reference)  # the header only
            img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
            img.SetOrigin(reader.GetOrigin()[:3])
            img.SetSpacing(reader.GetSpacing()[:3])
            img.SetDirection(
                np.array(reader.GetDirection()).reshape(len(reader.GetSize()), -1)[:3, :3].ravel().tolist()
            )
            sitk.WriteImage(img, str(tmp), True)
