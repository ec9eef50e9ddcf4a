"""Geometry round trips: a model that outputs a fixed function of its input makes the expected
mask exactly computable on the scan's own grid."""

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config.plan import Preprocessing
from medseg.config.schema import ExperimentConfig
from medseg.evaluation.metrics import dice
from medseg.inference.batch import PredictOptions, _write_one
from medseg.inference.model import LoadedModel
from medseg.inference.predictor import predict_volume
from medseg.io.geometry import ras_spacing
from medseg.nn.checkpoint import OperatingPoint
from medseg.planning.resolve import assemble
from tests.conftest import oblique_affine, save_nifti


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
    cfg = ExperimentConfig.model_validate(
        {
            "data": {"dataset": "x"},
            "sampling": {"patch_size": [16, 16, 8]},
            "inference": {"overlap": 0.25, "sw_batch_size": 2},
        }
    )
    plan = assemble(cfg, Preprocessing(tuple(spacing), "none"))
    return LoadedModel(Threshold(), plan, OperatingPoint(0.5, 0.0), cfg.inference, 26, torch.device("cpu"))


AFFINES = {
    "oblique_LAS": oblique_affine(),
    "RAS": np.diag([0.9, 1.2, 2.5, 1.0]),
    "LPS": np.diag([-0.9, -1.2, 2.5, 1.0]),
    "permuted": np.array([[0, 0, 2.5, 4.0], [-1.2, 0, 0, 9.0], [0, 0.9, 0, -3.0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", AFFINES)
def test_native_spacing_is_exact(tmp_path, name):
    affine = AFFINES[name]
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


def save_nrrd(array, path, spacing=(0.8, 1.1, 3.0), direction=(0, 1, 0, 1, 0, 0, 0, 0, -1), origin=(12.0, -7.5, 30.0)):
    """An LPS NRRD with permuted, flipped axes."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("spacing", [None, (1.5, 1.5, 1.5)])
def test_nrrd_lps_round_trip(tmp_path, spacing):
    import SimpleITK as sitk

    from medseg.io.geometry import read_geometry

    _, img = scan(tmp_path, np.eye(4))
    path = save_nrrd(img, tmp_path / "scan.nrrd")
    native = ras_spacing(read_geometry(path)[1])
    row = _write_one(loaded(spacing or native), path, tmp_path / "out", PredictOptions())[0]
    out = sitk.ReadImage(row["mask"])
    ref = sitk.ReadImage(str(path))
    assert out.GetSize() == ref.GetSize() and out.GetSpacing() == ref.GetSpacing()
    assert out.GetDirection() == ref.GetDirection() and out.GetOrigin() == ref.GetOrigin()
    mask = sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(bool)
    if spacing is None:
        assert np.array_equal(mask, img > 0.5)
    else:
        assert dice(mask, img > 0.5) > 0.9


class Shifted(torch.nn.Module):
    """Not flip-invariant: output depends on the neighbour along every axis, so a wrong flip-back
    in TTA shows up."""

    def forward(self, x):
        return 40.0 * (torch.roll(x, (1, 1, 1), dims=(2, 3, 4)) - 0.5)


def test_tta_flips_back_correctly(tmp_path, affine):
    from medseg.nn.window import MirrorTTA

    x = torch.rand(1, 1, 8, 6, 4)
    model = torch.nn.Conv3d(1, 1, 3, padding=1)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0, 1, 1, 1] = 2.0  # pointwise: flip-equivariant, TTA must equal the plain output
        assert torch.allclose(MirrorTTA(model)(x), model(x), atol=1e-6)
        plain, tta = Shifted()(x), MirrorTTA(Shifted())(x)
        assert not torch.allclose(plain, tta)  # a non-equivariant model does change: the wrapper is not a no-op
    path, img = scan(tmp_path, affine)
    pred = predict_volume(loaded(ras_spacing(nib.load(str(path)).affine)), path, tta=True)
    assert np.array_equal(pred.mask.astype(bool), np.asanyarray(nib.load(str(path)).dataobj) > 0.5)


def test_fill_holes_fills_a_predicted_cavity_on_the_scan_grid(tmp_path):
    """A bright hollow ball on an oblique grid: the mask is its shell, or with ``fill_holes`` (the
    config's setting or the call's override) the solid ball, on the scan's own grid."""
    shape, affine = (24, 24, 16), AFFINES["oblique_LAS"]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), (12, 12, 8))))
    img = ((r > 3) & (r <= 6)).astype(np.float32)
    path = save_nifti(img, affine, tmp_path / "hollow.nii.gz")
    lm = loaded(ras_spacing(affine))
    plain, filled = (predict_volume(lm, path, fill_holes=f).mask.astype(bool) for f in (False, True))
    assert np.array_equal(plain, img > 0.5) and np.array_equal(filled, r <= 6)
    row = _write_one(lm, path, tmp_path / "out", PredictOptions(fill_holes=True, table=False))[
        0
    ]  # medseg predict --fill-holes
    written = nib.load(row["mask"])
    assert np.array_equal(np.asanyarray(written.dataobj) > 0, r <= 6) and np.allclose(written.affine, affine)
    lm.icfg = lm.icfg.model_copy(update={"fill_holes": True})
    assert np.array_equal(predict_volume(lm, path).mask.astype(bool), r <= 6)


@pytest.mark.parametrize("name", AFFINES)
def test_zero_border_is_cropped_and_pasted_back_exactly(tmp_path, name):
    affine = AFFINES[name]
    _, img = scan(tmp_path, affine)
    img[:4] = 0
    img[:, -3:] = 0
    img[..., :2] = 0
    path = save_nifti(img, affine, tmp_path / "masked.nii.gz")
    pred = predict_volume(loaded(ras_spacing(nib.load(str(path)).affine)), path)
    assert np.array_equal(pred.mask.astype(bool), np.asanyarray(nib.load(str(path)).dataobj) > 0.5)


def test_fast_restore_agrees_with_affine_resampling():
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    from medseg.inference.restore import _axis_map, restore_grid

    dst = AFFINES["permuted"]
    # model grid: axes permuted and flipped relative to the scan, cropped by (2, 1, 3) voxels
    perm = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]])
    src = dst.copy()
    src[:3, :3] = dst[:3, :3] @ perm
    src[:3, 3] = (dst @ np.array([2, 12, 3, 1]))[:3]
    prob = torch.rand(1, 9, 7, 5)
    assert _axis_map(src, dst) is not None
    fast = restore_grid(prob, src, dst, (12, 14, 16))
    slow = SpatialResample(mode="nearest", padding_mode="zeros")(
        MetaTensor(prob, affine=torch.as_tensor(src)), dst_affine=torch.as_tensor(dst), spatial_size=[12, 14, 16]
    )
    assert np.allclose(fast, np.asarray(slow[0]), atol=1e-6) and np.count_nonzero(fast) == 9 * 7 * 5


@pytest.mark.parametrize("kind", ["2d", "5d", "nan", "empty", "not_gzip"])
def test_bad_scans_are_user_errors(tmp_path, kind):
    from medseg.errors import MedsegError

    path = tmp_path / f"{kind}.nii.gz"
    if kind == "2d":
        save_nifti(np.random.rand(20, 20).astype(np.float32), np.eye(4), path)
    elif kind == "5d":
        save_nifti(np.random.rand(8, 8, 6, 2, 2).astype(np.float32), np.eye(4), path)
    elif kind == "nan":
        x = np.random.rand(20, 20, 10).astype(np.float32)
        x[3, 3, 3] = np.nan
        save_nifti(x, np.eye(4), path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"plain text, not gzip")
    with pytest.raises(MedsegError, match=kind):
        predict_volume(loaded((1.0, 1.0, 1.0)), path)
