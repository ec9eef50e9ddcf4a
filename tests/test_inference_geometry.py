"""Geometry round trips: a model that outputs a fixed function of its input makes the expected
mask exactly computable on the scan's own grid."""

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import InferenceConfig
from medseg.data import ras_spacing
from medseg.inference import LoadedModel, predict_volume
from medseg.metrics import dice
from tests.conftest import save_nifti


class Threshold(torch.nn.Module):
    """Logit = 40 * (intensity - 0.5): the mask is 'intensity > 0.5' wherever it is evaluated."""

    def forward(self, x):
        return 40.0 * (x - 0.5)


def scan(tmp_path, affine, shape=(22, 26, 12)):
    rng = np.random.default_rng(3)
    grid = np.indices(shape).astype(np.float32)
    img = np.zeros(shape, np.float32)
    for _ in range(2):
        c = rng.uniform(6, np.array(shape) - 6)
        img += np.exp(-sum((grid[i] - c[i]) ** 2 for i in range(3)) / 30.0)
    path = save_nifti(img.astype(np.float32), affine, tmp_path / "scan.nii.gz")
    return path, img


def loaded(spacing):
    icfg = InferenceConfig(overlap=0.25, sw_batch_size=2)
    return LoadedModel(Threshold(), tuple(spacing), "none", (16, 16, 8), icfg, 0.5, 0.0, 26, torch.device("cpu"))


def test_native_spacing_is_exact(tmp_path, affine):
    path, img = scan(tmp_path, affine)
    pred = predict_volume(loaded(ras_spacing(nib.load(str(path)).affine)), path)
    assert pred.mask.shape == img.shape
    assert np.array_equal(pred.mask.astype(bool), np.asanyarray(nib.load(str(path)).dataobj) > 0.5)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (0.8, 0.8, 1.5)])
def test_resampled_grid_comes_back(tmp_path, affine, spacing):
    path, img = scan(tmp_path, affine)
    pred = predict_volume(loaded(spacing), path)
    assert pred.mask.shape == img.shape and np.allclose(pred.affine, nib.load(str(path)).affine)
    assert dice(pred.mask, img > 0.5) > 0.9
    # no shift: the centre of mass agrees within a fifth of a voxel
    com = [np.mean(np.nonzero(m)[i]) for m in (pred.mask, img > 0.5) for i in range(3)]
    assert np.allclose(com[:3], com[3:], atol=0.2)
