"""A scan's profile (body volume, slice thickness), the training scans' range of it in the
checkpoint, and predict's warning for a scan outside that range (:mod:`medseg.data.profile`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medseg.config.load import load_config
from medseg.config.plan import Preprocessing
from medseg.data.case import Case
from medseg.data.profile import BODY_MARGIN, SLICE_MARGIN, ProfileRange, ScanProfile, scan_profile
from medseg.errors import MedsegError
from medseg.inference.batch import predict_files
from medseg.inference.model import load_model
from medseg.inference.onnx_model import OnnxMetadata
from medseg.nn.checkpoint import load_checkpoint, read_payload, write_payload
from medseg.training.run import train
from medseg.transforms.preprocess import training_profile
from tests.conftest import oblique_affine, save_nifti

SHAPE = (24, 24, 16)
SPACING = [1.5, 1.5, 2.0]
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def brain(rng: np.random.Generator, half_width: int, background: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A (24, 24, 16) scan whose body is a box of 2*half_width in x and y, with a bright lesion;
    the rest is ``background``. Returns (image, label)."""
    img = np.full(SHAPE, background, np.float32)
    lo, hi = 12 - half_width, 12 + half_width
    img[lo:hi, lo:hi, 2:14] = rng.normal(10, 1, (hi - lo, hi - lo, 12))
    label = np.zeros(SHAPE, np.uint8)
    label[10:14, 10:14, 6:10] = 1
    img[label == 1] += 6
    return img, label


def test_the_profile_counts_the_body_in_ml_and_takes_the_thickest_spacing():
    img = np.zeros((2, 10, 10, 10), np.float32)
    img[0, :5] = 1.0  # channel 0: half the grid
    img[1, 5:6] = -2.0  # channel 1 adds one slab: any channel counts
    assert scan_profile(img, np.diag([1.0, 1.0, 3.0, 1.0])) == ScanProfile(round(600 * 3 / 1000, 1), 3.0)
    oblique = oblique_affine((1.2, 0.9, 2.5))
    got = scan_profile(np.ones((1, 10, 10, 10)), oblique)  # rotated: the volume and thickness of the voxels stay
    assert got == ScanProfile(2.7, 2.5)


def test_the_profile_is_the_body_preprocessing_keeps(tmp_path):
    """A z-scored scan with a constant background of -3.6 (``background: min``): the body is what
    is above that constant, on the scan's own grid, whatever the target spacing."""
    img, _ = brain(np.random.default_rng(0), 6, background=-3.6)
    path = save_nifti(img, AFFINE, tmp_path / "a.nii.gz")
    pre = Preprocessing((1.0, 1.0, 1.0), "zscore_nonzero", background="min")
    got = training_profile(pre, [Case("a", (path,), None)])
    assert got == ProfileRange(1, (round(12 * 12 * 12 * 4.5 / 1000, 1),) * 2, (2.0, 2.0))
    assert training_profile(pre, []) is None


def test_a_scan_outside_the_range_is_named_by_what_differs():
    known = ProfileRange(3, (1000.0, 2000.0), (1.0, 1.0))
    assert known.unlike(ScanProfile(1000 * BODY_MARGIN[0], 1.0 * SLICE_MARGIN)) == []  # the margins are inside
    assert known.unlike(ScanProfile(2000 * BODY_MARGIN[1], 1.0)) == []
    small = known.unlike(ScanProfile(700.0, 1.0))
    assert len(small) == 1 and small[0].startswith("body 700 mL (training scans 1000-2000 mL")
    both = known.unlike(ScanProfile(2600.0, 3.0))
    assert both[0].startswith("body 2600 mL") and both[1] == "slices 3 mm thick (training scans at most 1 mm)"
    wide = known.union(ProfileRange(2, (500.0, 900.0), (6.0, 8.0)))
    assert wide == ProfileRange(5, (500.0, 2000.0), (1.0, 8.0)) and wide.unlike(ScanProfile(700.0, 3.0)) == []
    assert known.union(None) is known


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [1, 2],
        {"cases": 0, "body_ml": [1.0, 2.0], "slice_mm": [1.0, 1.0]},
        {"cases": 2, "body_ml": [2.0, 1.0], "slice_mm": [1.0, 1.0]},
        {"cases": 2, "body_ml": [1.0, float("nan")], "slice_mm": [1.0, 1.0]},
        {"cases": 2, "body_ml": [-1.0, 2.0], "slice_mm": [1.0, 1.0]},
        {"cases": 2, "body_ml": [1.0, 2.0], "slice_mm": [True, 1.0]},
        {"cases": 2, "body_ml": [1.0, 2.0]},
        {"cases": True, "body_ml": [1.0, 2.0], "slice_mm": [1.0, 1.0]},
    ],
)
def test_a_range_no_training_run_writes_is_refused_naming_the_file(raw):
    with pytest.raises(MedsegError, match=r"^best\.pt: training_scans is not a profile range"):
        ProfileRange.from_dict(raw, "best.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, ProfileRange]:
    """One epoch on four cases (bodies of 12, 14, 16 and 18 voxels across; p0 validates):
    (best.pt, the range of the three training cases' profiles)."""
    root = tmp_path_factory.mktemp("profile")
    rng = np.random.default_rng(1)
    cases = {}
    for i, half in enumerate((6, 7, 8, 9)):
        img, label = brain(rng, half)
        cases[f"p{i}"] = {
            "images": [str(save_nifti(img, AFFINE, root / "data" / f"p{i}.nii.gz"))],
            "label": str(save_nifti(label, AFFINE, root / "data" / f"p{i}_seg.nii.gz")),
        }
    listed = [{"case_id": k, **v} for k, v in cases.items()]
    (root / "cases.yaml").write_text(yaml.safe_dump({"channels": ["flair"], "cases": listed}))
    cfg = {
        "data": {"dataset": str(root / "cases.yaml"), "layout": "list", "val_cases": ["p0"]},
        "preprocess": {"target_spacing": SPACING, "normalize": "zscore_nonzero"},
        "sampling": {"patch_size": [16, 16, 8], "samples_per_volume": 1},
        "model": {"channels": [4, 8, 16], "strides": [2, 2]},
        "train": {"epochs": 1, "val_every": 1, "device": "cpu", "output_dir": str(root / "runs")},
        "tracking": {"enabled": False},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = train(load_config(root / "cfg.yaml"), progress=False)
    body = [round(4 * h * h * 12 * 4.5 / 1000, 1) for h in (7, 8, 9)]
    return Path(result.run_dir) / "best.pt", ProfileRange(3, (body[0], body[-1]), (2.0, 2.0))


def test_training_stores_the_training_scans_range_in_the_checkpoint(trained):
    best, expected = trained
    assert load_checkpoint(best).training_scans == expected
    assert load_checkpoint(best.parent / "last.pt").training_scans == expected


def predict_one(best: Path, img: np.ndarray, affine: np.ndarray, out: Path, capsys) -> tuple[dict, str]:
    """``predict_files`` on one scan: (its summary.csv row, stderr)."""
    scan = save_nifti(img, affine, out.parent / f"{out.name}_in" / "scan.nii.gz")
    rows, errors = predict_files(best, [str(scan)], out, device="cpu", progress=False)
    assert not errors and len(rows) == 1
    with (out / "summary.csv").open() as fh:
        return next(csv.DictReader(fh)), capsys.readouterr().err


def test_predict_warns_for_a_scan_unlike_the_training_scans(trained, tmp_path, capsys):
    """A body inside the range: no warning, an empty column. A body of 6 voxels across and 5 mm
    slices (half the smallest training body's volume): one warning line naming both, and the
    column says the same; the mask is written either way."""
    best, _ = trained
    rng = np.random.default_rng(5)
    row, err = predict_one(best, brain(rng, 8)[0], AFFINE, tmp_path / "in", capsys)
    assert row["unlike_training"] == "" and "unlike" not in err
    thick = np.diag([1.5, 1.5, 5.0, 1.0])
    row, err = predict_one(best, brain(rng, 3)[0], thick, tmp_path / "out", capsys)
    lines = [line for line in err.splitlines() if "unlike the model's training scans" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "scan.nii.gz" in lines[0]
    assert "body 5 mL (training scans 11-18 mL" in lines[0] and "slices 5 mm thick" in lines[0]
    assert row["unlike_training"] in lines[0] and row["unlike_training"].startswith("body 5 mL")
    assert Path(row["mask"]).is_file()


def test_an_ensemble_takes_the_union_and_an_old_checkpoint_checks_nothing(trained, tmp_path, capsys):
    best, expected = trained
    other = read_payload(best)
    other["training_scans"] = {"cases": 2, "body_ml": [0.5, 1.0], "slice_mm": [5.0, 5.0]}
    write_payload(other, tmp_path / "b" / "best.pt")
    both = load_model([best, tmp_path / "b" / "best.pt"], "cpu")
    assert both.training_scans == ProfileRange(5, (0.5, expected.body_ml[1]), (2.0, 5.0))
    old = read_payload(best)
    del old["training_scans"]
    write_payload(old, tmp_path / "old" / "best.pt")
    assert load_model(tmp_path / "old" / "best.pt", "cpu").training_scans is None
    row, err = predict_one(
        tmp_path / "old" / "best.pt", brain(np.random.default_rng(0), 3)[0], AFFINE, tmp_path / "o", capsys
    )
    assert row["unlike_training"] == "" and "unlike" not in err


def test_a_tampered_range_fails_loading_with_one_line(trained, tmp_path):
    bad = read_payload(trained[0])
    bad["training_scans"] = {"cases": 3, "body_ml": [5.0, 1.0], "slice_mm": [2.0, 2.0]}
    write_payload(bad, tmp_path / "best.pt")
    with pytest.raises(MedsegError, match=r"best\.pt: training_scans is not a profile range") as err:
        load_checkpoint(tmp_path / "best.pt")
    assert "\n" not in str(err.value)


def test_the_onnx_export_carries_the_range(trained, tmp_path):
    pytest.importorskip("onnx")
    best, expected = trained
    lm = load_model(best, "cpu")
    props = OnnxMetadata(lm.plan, lm.operating_point, lm.icfg, lm.connectivity, lm.training_scans).to_props()
    assert json.loads(props["medseg.training_scans"]) == expected.to_dict()
    assert OnnxMetadata.from_props(props, "model.onnx").training_scans == expected
    del props["medseg.training_scans"]
    assert OnnxMetadata.from_props(props, "model.onnx").training_scans is None
    with pytest.raises(MedsegError, match="training_scans is not a profile range"):
        OnnxMetadata.from_props({**props, "medseg.training_scans": "{}"}, "model.onnx")
