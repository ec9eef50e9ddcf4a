"""Shared fixtures: tiny volumes with an oblique, anisotropic, LAS-flipped affine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

MEDSEG = [str(Path(sys.executable).with_name("medseg"))]


def oblique_affine(spacing=(1.2, 0.9, 2.5), angle_deg: float = 7.0) -> np.ndarray:
    """A non-identity affine: LAS flip, rotation about z and x, anisotropic spacing, offset."""
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-spacing[0], spacing[1], spacing[2]])
    affine[:3, 3] = [31.5, -17.25, 9.0]
    return affine


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@pytest.fixture
def affine() -> np.ndarray:
    return oblique_affine()


@pytest.fixture
def real_data() -> Path:
    root = os.environ.get("MEDSEG_REAL_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("MEDSEG_REAL_DATA not set")
    return Path(root)
