"""Site-robust standardisation: what each method holds fixed when a scan comes from another site,
the nyul landmarks planned from the training cases and carried by the plan, and the Otsu body."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config.plan import LANDMARK_PERCENTILES, Preprocessing
from medseg.errors import MedsegError
from medseg.transforms.standardize import (
    OtsuForegroundd,
    Standardized,
    fit_landmarks,
    otsu_foreground,
    scan_landmarks,
)


def _brain(rng: np.random.Generator, skull: bool = False, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(image (40, 40, 40), lesion mask): a ball of tissue at ~100 with a little CSF at ~40 and a
    lesion at ~150, zero outside; ``skull`` adds a bright, uneven shell at ~250 (scalp fat and bone
    marrow on FLAIR); ``gain`` scales it all."""
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"))
    r = np.sqrt(((grid - 20) ** 2).sum(0))
    img = np.where(r < 14, 100.0, 0.0) + rng.normal(0, 3, (40, 40, 40)) * (r < 14)
    img[(r < 4)] = 40.0  # ventricles
    lesion = (np.abs(grid[0] - 27) < 3) & (np.abs(grid[1] - 20) < 3) & (np.abs(grid[2] - 20) < 3)
    img[lesion] = 150.0
    if skull:
        shell = (r >= 14) & (r < 16)
        img[shell] = 250.0 + rng.normal(0, 30, int(shell.sum()))
    return (gain * img).astype(np.float32), lesion


def _apply(method: str, img: np.ndarray, landmarks=None) -> np.ndarray:
    return Standardized(["image"], method, landmarks)({"image": torch.from_numpy(img[None])})["image"][0].numpy()


def test_whitestripe_is_a_ratio_to_normal_tissue_whatever_the_mask_and_gain():
    """Tissue -> 0, lesion (1.5x tissue) -> 2.5; a skull left in the mask or another scanner gain
    moves z-scoring over the body by far more than whitestripe."""
    rng = np.random.default_rng(0)
    plain, lesion = _brain(rng)
    out = _apply("whitestripe", plain)
    tissue = (plain > 90) & (plain < 110)
    assert abs(np.median(out[tissue])) < 0.1 and abs(np.mean(out[lesion]) - 2.5) < 0.1
    assert np.all(out[plain == 0] == 0)  # the background stays background
    skull, _ = _brain(np.random.default_rng(0), skull=True, gain=3.0)
    ws = _apply("whitestripe", skull)[lesion].mean()
    body = skull[skull != 0]
    z = ((skull - body.mean()) / body.std())[lesion].mean()
    z_plain = ((plain - plain[plain != 0].mean()) / plain[plain != 0].std())[lesion].mean()
    assert abs(ws - 2.5) < 0.15
    assert abs(z - z_plain) > 1.0  # the skull changes what z-scoring calls bright


def test_whitestripe_refuses_normalised_scans():
    img, _ = _brain(np.random.default_rng(1))
    img = np.where(img != 0, img - 300.0, 0).astype(np.float32)  # tissue below zero: not raw magnitudes
    with pytest.raises(MedsegError, match="raw MRI intensities"):
        _apply("whitestripe", img)
    z = np.where(img != 0, (img - img[img != 0].mean()) / img[img != 0].std() + 0.3, 0).astype(np.float32)
    with pytest.raises(MedsegError, match=r"\d+% of its foreground is below 0 .*raw MRI intensities"):
        _apply("whitestripe", z)  # z-scored, normal tissue still positive: refused, not mis-scaled
    ringing = np.where(img != 0, img + 300.0, 0).astype(np.float32)
    edge = np.flatnonzero(img != 0)[: (img != 0).sum() // 100]
    ringing.flat[edge] = -2.0  # 1 % of the foreground below 0, as spline ringing leaves: allowed
    assert (ringing < 0).any() and np.isfinite(_apply("whitestripe", ringing)).all()


def test_robust_centres_the_body_median_and_keeps_the_background():
    img, _ = _brain(np.random.default_rng(2))
    out = _apply("robust", img)
    assert abs(np.median(out[img != 0])) < 1e-3 and np.all(out[img == 0] == 0)
    assert np.allclose(_apply("robust", 4.0 * img), out, atol=1e-4)  # gain invariant


def test_nyul_maps_each_scan_onto_the_standard_landmarks():
    """Scans whose intensities differ by a monotone map (another scanner's response) come out alike,
    and a standardised scan's own landmarks are the standard ones."""
    rng = np.random.default_rng(3)
    a, lesion = _brain(rng)
    b = np.where(a != 0, 0.02 * a**1.5 + 30, 0).astype(np.float32)  # non-linear, monotone
    standard = fit_landmarks([scan_landmarks(a[a != 0]), scan_landmarks(b[b != 0])])
    assert len(standard) == len(LANDMARK_PERCENTILES) and all(x < y for x, y in zip(standard, standard[1:]))
    oa, ob = _apply("nyul", a, [standard]), _apply("nyul", b, [standard])
    assert np.allclose(scan_landmarks(oa[a != 0]), standard, atol=0.05)
    assert abs(oa[lesion].mean() - ob[lesion].mean()) < 0.15 * abs(oa[lesion].mean())


def test_nyul_landmarks_are_checked_where_a_checkpoint_is_read():
    good = {"spacing": [1, 1, 1], "normalize": "nyul", "landmarks": [list(np.linspace(-2, 2, 11))]}
    pre = Preprocessing.from_dict(good)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    for bad in ([list(np.linspace(2, -2, 11))], [[0.0, 1.0]], []):
        with pytest.raises(MedsegError, match="preprocess.landmarks"):
            Preprocessing.from_dict({**good, "landmarks": bad})


def test_otsu_body_ignores_noisy_air_and_keeps_dark_structures_inside():
    """Noisy air and small negative ringing outside become 0; the dark ventricles stay in the body."""
    rng = np.random.default_rng(4)
    img, _ = _brain(rng, skull=True)
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"))
    r = np.sqrt(((grid - 20) ** 2).sum(0))
    noisy = img + np.abs(rng.normal(0, 8, img.shape)) * (r >= 16) - 2.0 * ((r >= 16) & (r < 17))
    mask = otsu_foreground(noisy[None])
    assert mask[r < 4].all() and mask[r < 15].all() and not mask[r > 18.5].any()
    out = OtsuForegroundd(["image"])({"image": torch.from_numpy(noisy[None].astype(np.float32))})["image"]
    assert float(out[0][torch.from_numpy(r > 18.5)].abs().max()) == 0.0


def test_nyul_is_planned_from_the_training_cases(tmp_path):
    """A config asking for nyul without landmarks gets them fitted by planning, in the plan's
    preprocessing (hence the checkpoint), and the held-out cases are not used."""
    from medseg.config.schema import ExperimentConfig
    from medseg.data.sources.discover import from_config
    from medseg.data.synthetic import write_dataset
    from medseg.planning.resolve import resolve

    write_dataset(tmp_path / "ds", 4, seed=0, shape=(32, 32, 24))
    base = {
        "data": {"dataset": str(tmp_path / "ds")},
        "preprocess": {"target_spacing": [1, 1, 1], "normalize": "nyul"},
        "sampling": {"patch_size": [32, 32, 24]},
    }
    cfg = ExperimentConfig.model_validate(base)
    res = resolve(cfg, from_config(cfg.data), ("channel0",))
    marks = res.plan.preprocess.landmarks
    assert marks is not None and len(marks) == 1 and len(marks[0]) == len(LANDMARK_PERCENTILES)
    assert res.plan.origin["preprocess.landmarks"] == "planned"
    held = ExperimentConfig.model_validate({**base, "data": {**base["data"], "exclude_cases": ["synth_000"]}})
    other = resolve(held, from_config(held.data), ("channel0",)).plan.preprocess.landmarks
    assert other != marks  # fitted without the held-out case
