"""``predict --mask`` (a region mask per scan, e.g. the brain) and ``--min-confidence``.

The rule (:func:`medseg.lesions.binarize`): a predicted lesion with more than half of its voxels
outside the region is removed whole, a kept one is not clipped; a mask must be on its scan's grid
(never resampled); a scan without a mask fails alone; masks are never written to.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference import batch, predictor
from medseg.inference.batch import PredictOptions, predict_files
from medseg.inference.model import load_model
from medseg.inference.region import find_region_masks
from medseg.lesions import binarize
from tests.conftest import oblique_affine, save_nifti
from tests.robustness.conftest import (  # noqa: F401 (fixtures)
    SHAPE,
    SPACING,
    assert_clean_error,
    good_dataset,
    good_image,
    robust_root,
    run_cli,
    tiny_checkpoint,
)

INSIDE = (slice(4, 8), slice(10, 14), slice(6, 10))  # a bright cube in the region (x < 12)
OUTSIDE = (slice(16, 20), slice(10, 14), slice(6, 10))  # a bright cube outside it


def digest(path: Path) -> tuple[str, float]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime


# ------------------------------------------------------------------------------------------ the rule


def test_lesions_mostly_outside_the_region_are_removed_whole():
    """Three 4x4x4 lesions: 1/4, 1/2 and 3/4 of their voxels outside the region (x < 10); the
    last one is removed, the others kept with their voxels outside the region."""
    prob = np.zeros((20, 20, 20), np.float32)
    prob[9:13, 1:5, 1:5] = 0.9  # x 9..12: one of four slabs inside -> 3/4 outside
    prob[8:12, 8:12, 8:12] = 0.9  # half outside
    prob[7:11, 15:19, 15:19] = 0.9  # a quarter outside
    region = np.zeros(prob.shape, bool)
    region[:10] = True
    mask = binarize(prob, 0.5, 0, region=region)
    assert not mask[9:13, 1:5, 1:5].any()
    assert mask[8:12, 8:12, 8:12].all() and mask[7:11, 15:19, 15:19].all()  # not clipped to the region
    assert mask.sum() == 128


def test_min_confidence_drops_whole_lesions_unlike_a_higher_threshold():
    """A lesion peaking at 0.95 with a rim at 0.6 and one peaking at 0.7: --min-confidence 0.8
    keeps the first with its rim and drops the second; a threshold of 0.8 would cut the rim off."""
    prob = np.zeros((20, 20, 20), np.float32)
    prob[2:8, 2:8, 2:8] = 0.6
    prob[4:6, 4:6, 4:6] = 0.95
    prob[12:16, 12:16, 12:16] = 0.7
    kept = binarize(prob, 0.5, 0, min_confidence=0.8)
    assert kept[2:8, 2:8, 2:8].all() and kept.sum() == 216
    assert binarize(prob, 0.8, 0).sum() == 8  # the higher threshold: only the core
    assert binarize(prob, 0.5, 0, min_confidence=0.5).sum() == 216 + 64  # at or below the threshold: no effect


# ------------------------------------------------------------------------------------- Python API


def bright_scan(path: Path) -> Path:
    """A scan with two bright cubes (:data:`INSIDE`, :data:`OUTSIDE`) on the oblique grid."""
    img = good_image(5)
    img[INSIDE] = img[OUTSIDE] = 2000.0
    return save_nifti(img, oblique_affine(SPACING), path)


@pytest.fixture
def bright_model(tiny_checkpoint, monkeypatch):
    """The tiny checkpoint with a network replaced by 'bright is lesion': probability
    sigmoid(4 (z - 3)) of the normalised image, so both cubes are lesions and nothing else."""

    def window(model, image, icfg, roi, device, tta=None):
        return torch.sigmoid(4 * (torch.as_tensor(image)[:, :1].float() - 3))

    monkeypatch.setattr(predictor, "sliding_window_probs", window)
    return load_model(tiny_checkpoint, "cpu")


def region_mask(shape=SHAPE) -> np.ndarray:
    """uint8 region: the half x < 12 of the scan."""
    region = np.zeros(shape, np.uint8)
    region[:12] = 1
    return region


def test_predict_classes_removes_the_lesion_outside_the_region(tmp_path, bright_model):
    scan = bright_scan(tmp_path / "scan.nii.gz")
    plain = predictor.predict_classes(bright_model, scan)[0]
    assert plain.mask[INSIDE].all() and plain.mask[OUTSIDE].all()
    masked = predictor.predict_classes(bright_model, scan, region=region_mask().astype(bool))[0]
    assert masked.mask[INSIDE].all() and not masked.mask[OUTSIDE].any()
    assert np.array_equal(masked.prob, plain.prob)  # the probability map is the model's
    with pytest.raises(MedsegError, match="region mask has shape"):
        predictor.predict_classes(bright_model, scan, region=np.ones((24, 24, 15), bool))


# ------------------------------------------------------------------------------------------ batches


def test_batch_with_masks_table_and_a_missing_mask(tmp_path, bright_model, monkeypatch):
    """Two scans, a mask for one: that one loses its outside lesion (mask and table), the other
    fails alone with one line; the mask file is not written to."""
    scans = [bright_scan(tmp_path / "scans" / f"{name}.nii.gz") for name in ("a", "b")]
    mask = save_nifti(region_mask(), oblique_affine(SPACING), tmp_path / "brain" / "a.nii.gz")
    before = digest(mask)
    opts = PredictOptions(region=find_region_masks(str(tmp_path / "brain")))
    rows, errors = _predict(bright_model, scans, tmp_path, opts, monkeypatch)
    assert [Path(r["scan"]).name for r in rows] == ["a.nii.gz"] and rows[0]["lesions"] == 1
    assert len(errors) == 1 and errors[0].startswith(f"{scans[1]}: no region mask named b ")
    table = (tmp_path / "out" / "a_lesions.csv").read_text().splitlines()
    assert len(table) == 2 and table[0].endswith(",max_prob,mean_prob,confidence")
    assert not (tmp_path / "out" / "b.nii.gz").exists() and digest(mask) == before


def _predict(lm, scans, tmp_path, opts, monkeypatch):
    """:func:`predict_files` with the already loaded (patched) model."""
    monkeypatch.setattr(batch, "load_model", lambda *a, **k: lm)
    return predict_files("model", [str(p) for p in scans], tmp_path / "out", "cpu", opts, progress=False)


def test_case_pattern_finds_each_scans_mask(tmp_path, bright_model, monkeypatch):
    scan = bright_scan(tmp_path / "scans" / "c7.nii.gz")
    save_nifti(region_mask(), oblique_affine(SPACING), tmp_path / "scans" / "c7_brainmask.nii.gz")
    opts = PredictOptions(region=find_region_masks(str(tmp_path / "scans" / "{case}_brainmask.nii.gz")))
    rows, errors = _predict(bright_model, [scan], tmp_path, opts, monkeypatch)
    assert errors == [] and rows[0]["lesions"] == 1


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_mask_off_grid_and_missing_fail_alone_and_masks_are_never_written(tmp_path, tiny_checkpoint):
    """Three scans: one with a mask on its grid (done), one with a mask on a shifted grid (one
    error naming the mask and the fix), one without a mask (one error naming the scan); exit 1.
    Then --out the mask folder itself: refused before anything is written."""
    scans = [save_nifti(good_image(i), oblique_affine(SPACING), tmp_path / "scans" / f"s{i}.nii.gz") for i in range(3)]
    shifted = oblique_affine(SPACING)
    shifted[:3, 3] += 1.5
    masks = [
        save_nifti(region_mask(), oblique_affine(SPACING), tmp_path / "brain" / "s0.nii.gz"),
        save_nifti(region_mask(), shifted, tmp_path / "brain" / "s1.nii.gz"),
    ]
    before = [digest(m) for m in masks]
    res = run_cli(
        "predict",
        tiny_checkpoint,
        tmp_path / "scans",
        "--out",
        tmp_path / "out",
        "--mask",
        tmp_path / "brain",
        "--device",
        "cpu",
        "--quiet",
    )
    assert res.returncode == 1, res.stderr
    off = assert_clean_error(res, str(masks[1]), "not on the grid")
    assert "nearest-neighbour" in off and "affine differs" in off
    assert_clean_error(res, str(scans[2]), "no region mask")
    assert sorted(p.name for p in (tmp_path / "out").glob("s*.nii.gz")) == ["s0.nii.gz"]
    same_folder = run_cli(
        "predict",
        tiny_checkpoint,
        scans[0],
        "--out",
        tmp_path / "brain",
        "--mask",
        tmp_path / "brain",
        "--device",
        "cpu",
        "--quiet",
    )
    assert same_folder.returncode == 2 and "s0.nii.gz" in same_folder.stderr
    assert [digest(m) for m in masks] == before
    assert sorted(p.name for p in (tmp_path / "brain").iterdir()) == ["s0.nii.gz", "s1.nii.gz"]


def test_cli_mask_that_matches_nothing_is_a_user_error(tmp_path, tiny_checkpoint):
    scan = save_nifti(good_image(0), oblique_affine(SPACING), tmp_path / "s0.nii.gz")
    res = run_cli(
        "predict", tiny_checkpoint, scan, "--out", tmp_path / "out", "--mask", tmp_path / "nothere", "--device", "cpu"
    )
    assert_clean_error(res, "--mask", "no mask files", code=2)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
