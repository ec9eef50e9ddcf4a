"""Geometry from headers alone: shape and RAS affine, sanity of the header, RAS axis order and spacing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.io.readers import sitk_affine

MAX_VOXELS = 2_000_000_000  # 8 GB as float32: no 3D scan is larger; a header claiming more is corrupt


_WARNED: set[str] = set()


def read_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and (4, 4) voxel-to-RAS affine from the header only.

    Raises:
        MedsegError: unreadable or corrupt file.
    """
    if Path(path).is_symlink() and not Path(path).exists():
        raise MedsegError(f"{path}: is a symbolic link that points nowhere or loops; point it at the scan file")
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise MedsegError(f"{path}: is empty (0 bytes); copy or export the scan again")
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            _raw_nifti_spacing(path)
            img = nib.load(str(path))
            return _sane(path, tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float))

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return _sane(path, tuple(reader.GetSize()), sitk_affine(reader))
    except MedsegError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        raise MedsegError(f"{path}: cannot read the image header ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); re-export the file") from None


def _raw_nifti_spacing(path: Path) -> None:
    """nibabel silently turns a zero pixdim into 1 and a negative one into its absolute value;
    read the header as stored: zero spacing is an error, negative spacing a warning."""
    with nib.openers.ImageOpener(str(path)) as fh:
        header = nib.Nifti1Header.from_fileobj(fh, check=False)
    ndim = int(header["dim"][0])
    zooms = np.asarray(header["pixdim"][1:1 + min(max(ndim, 1), 3)], dtype=float)
    if (zooms == 0).any() or not np.isfinite(zooms).all():
        raise MedsegError(f"{path}: the header gives voxel spacing {tuple(float(z) for z in zooms)} (pixdim); set the real spacing in the header and re-export")
    if (zooms < 0).any() and str(path) not in _WARNED:
        _WARNED.add(str(path))
        print(f"warning: {path}: negative voxel spacing {tuple(float(z) for z in zooms)} in the header (pixdim); "
              "read as its absolute value, check the scan's orientation", file=sys.stderr)


def _sane(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Refuse headers no scan has: non-finite or singular affines (zero spacing), empty axes."""
    if not np.isfinite(affine).all():
        raise MedsegError(f"{path}: the header's affine has NaN or infinite entries; fix the qform/sform (e.g. re-export with SimpleITK or dcm2niix)")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if (spacing[: len(shape)] <= 1e-6).any() or voxel_volume(affine) < 1e-12:
        raise MedsegError(f"{path}: the header gives a zero voxel spacing {tuple(round(float(s), 4) for s in spacing)}; fix the pixdim/spacing in the header")
    if any(s <= 0 for s in shape):
        raise MedsegError(f"{path}: the header gives an empty axis (shape {shape}); re-export the file")
    if np.prod(shape, dtype=np.float64) > MAX_VOXELS:
        raise MedsegError(f"{path}: the header claims shape {shape} ({np.prod(shape, dtype=np.float64):.3g} voxels), more than any scan; the header is corrupt, re-export the file")
    return shape, affine


def ras_order(affine: np.ndarray) -> list[int]:
    """The file axis that lies along R, A and S of a (4, 4) affine (axis codes, as Orientationd)."""
    order = [0, 0, 0]
    for axis in range(3):
        order[int(np.argmax(np.abs(np.asarray(affine)[:3, axis])))] = axis
    return order


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the RAS-reoriented axes of a (4, 4) affine."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[ras_order(affine)]
    return tuple(float(s) for s in spacing)


def voxel_volume(affine: np.ndarray) -> float:
    """Volume of one voxel (mm^3) of a (4, 4) voxel-to-world affine: ``|det(affine[:3, :3])|``."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
