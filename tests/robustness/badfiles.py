"""Generators of bad scan files: each writes one broken file at ``path`` (a ``.nii.gz`` or ``.nii``
name) and returns the path. Used by test_files.py (through ``medseg predict``) and test_fuzz.py."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from tests.conftest import oblique_affine, save_nifti

SHAPE = (24, 24, 16)
SPACING = (1.5, 1.5, 2.0)


def _volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(600, 50, size=shape).astype(np.float32)


def _nifti_bytes(img) -> bytes:
    """Serialise a nibabel image to uncompressed .nii bytes."""
    import nibabel as nib

    bio = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img.to_file_map(file_map)
    return bio.getvalue()


def _raw_nifti(array: np.ndarray, affine=None, **header) -> bytes:
    """A NIfTI-1 single file whose header fields are overwritten verbatim after nibabel wrote it
    (nibabel would refuse or repair some of them on save)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine if affine is not None else np.diag([*SPACING, 1.0]))
    raw = bytearray(_nifti_bytes(img))
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])), check=False)
    for key, value in header.items():
        hdr[key] = value
    raw[:348] = hdr.binaryblock
    return bytes(raw)


def _write(path: Path, raw: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)
    return path


def empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated_gz(path: Path) -> Path:
    """A valid .nii.gz cut in the middle of the compressed voxel data."""
    full = gzip.compress(_nifti_bytes(__import__("nibabel").Nifti1Image(_volume(1), oblique_affine(SPACING))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(full[: len(full) // 2])
    return path


def truncated_nii(path: Path) -> Path:
    """An uncompressed .nii whose body stops halfway through the voxels the header announces."""
    import nibabel as nib

    full = _nifti_bytes(nib.Nifti1Image(_volume(2), oblique_affine(SPACING)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(full[: 352 + (len(full) - 352) // 2])
    return path


def gzip_not_nifti(path: Path) -> Path:
    """A well-formed gzip stream holding text, not a NIfTI header."""
    return _write(path, b"this is a CSV export, not an image\n" + b"1,2,3\n" * 200)


def not_gzip(path: Path) -> Path:
    """Random bytes under a .nii.gz name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(3).bytes(4000))
    return path


def huge_dims(path: Path) -> Path:
    """A header announcing 30000^3 float32 voxels (~100 TB) over a few bytes of data."""
    return _write(path, _raw_nifti(np.zeros((2, 2, 2), np.float32), dim=[3, 30000, 30000, 30000, 1, 1, 1, 1]))


def two_d(path: Path) -> Path:
    import nibabel as nib

    affine = np.diag([*SPACING, 1.0])
    return _write(path, _nifti_bytes(nib.Nifti1Image(_volume(4)[:, :, 0], affine)))


def five_d(path: Path) -> Path:
    import nibabel as nib

    arr = np.stack([np.stack([_volume(5), _volume(6)], -1)] * 2, -1)  # (X, Y, Z, 2, 2)
    return _write(path, _nifti_bytes(nib.Nifti1Image(arr, oblique_affine(SPACING))))


def zero_spacing(path: Path) -> Path:
    """pixdim 0 along x, and no qform/sform: the affine nibabel builds is singular."""
    return _write(path, _raw_nifti(_volume(7), pixdim=[1, 0.0, 1.5, 2.0, 1, 1, 1, 1], qform_code=0, sform_code=0))


def negative_spacing(path: Path) -> Path:
    """pixdim -1.5 along x with a scanner qform (the standard says pixdim[1..3] > 0)."""
    return _write(
        path,
        _raw_nifti(
            _volume(8),
            pixdim=[1, -1.5, 1.5, 2.0, 1, 1, 1, 1],
            qform_code=1,
            sform_code=0,
            quatern_b=0,
            quatern_c=0,
            quatern_d=0,
        ),
    )


def nonfinite_affine(path: Path) -> Path:
    """An sform with NaN and Inf entries (and no qform)."""
    return _write(
        path,
        _raw_nifti(
            _volume(9),
            sform_code=1,
            qform_code=0,
            srow_x=[np.nan, 0, 0, 0],
            srow_y=[0, np.inf, 0, 0],
            srow_z=[0, 0, 2.0, 0],
        ),
    )


def nan_voxels(path: Path) -> Path:
    vol = _volume(10)
    vol[5:9, 5:9, 5:9] = np.nan
    return save_nifti(vol, oblique_affine(SPACING), path)


def inf_voxels(path: Path) -> Path:
    vol = _volume(11)
    vol[3, 4, 5] = np.inf
    vol[6, 7, 8] = -np.inf
    return save_nifti(vol, oblique_affine(SPACING), path)


def unreadable(path: Path) -> Path:
    save_nifti(_volume(12), oblique_affine(SPACING), path)
    os.chmod(path, 0)
    return path


def symlink_loop(path: Path) -> Path:
    """``path`` -> ``<name>.loop.nii.gz`` -> ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    other = path.with_name("loop_" + path.name)
    for link in (path, other):
        if link.is_symlink():
            link.unlink()
    os.symlink(other.name, path)
    os.symlink(path.name, other)
    return path


def directory_named_like_scan(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


BAD_FILES = {
    "empty": empty,
    "truncated_gz": truncated_gz,
    "truncated_nii": truncated_nii,
    "gzip_not_nifti": gzip_not_nifti,
    "not_gzip": not_gzip,
    "huge_dims": huge_dims,
    "two_d": two_d,
    "five_d": five_d,
    "zero_spacing": zero_spacing,
    "negative_spacing": negative_spacing,
    "nonfinite_affine": nonfinite_affine,
    "nan_voxels": nan_voxels,
    "inf_voxels": inf_voxels,
    "unreadable": unreadable,
    "symlink_loop": symlink_loop,
}
