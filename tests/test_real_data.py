"""Real scans from $MEDSEG_REAL_DATA (skipped when unset): every case reads, and a prediction
comes back on the scan's exact grid (NIfTI and NRRD, 1 mm BraTS to 6.5 mm-slice NRRD)."""

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config.load import load_config
from medseg.config.plan import Preprocessing
from medseg.config.schema import ExperimentConfig
from medseg.data.sources.discover import from_config
from medseg.data.split import fold_splits
from medseg.inference.batch import PredictOptions, _write_one
from medseg.inference.model import LoadedModel
from medseg.io.geometry import ras_spacing, read_geometry
from medseg.nn.checkpoint import OperatingPoint
from medseg.planning.resolve import assemble


class Bright(torch.nn.Module):
    def forward(self, x):
        return 10.0 * (x - 1.0)


def cases(root):
    with open(root / "manifest.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.real
def test_every_real_case_predicts_on_its_own_grid(real_data, tmp_path):
    rows = cases(real_data)
    assert len(rows) >= 11  # 11 cases until the shared data grew to 26 (brats_glioma, mslesseg)
    cfg = ExperimentConfig.model_validate(
        {
            "data": {"dataset": "x"},
            "sampling": {"patch_size": [64, 64, 32]},
            "inference": {"overlap": 0.0, "sw_batch_size": 2},
        }
    )
    for row in rows:
        image = real_data / row["images"].split(";")[0]
        shape, affine = read_geometry(image)
        plan = assemble(cfg, Preprocessing(ras_spacing(affine), "zscore_nonzero"))
        lm = LoadedModel(Bright(), plan, OperatingPoint(0.5, 0.0), cfg.inference, 26, torch.device("cpu"))
        out = _write_one(lm, image, tmp_path / row["case"], PredictOptions())[0]
        mask_shape, mask_affine = read_geometry(tmp_path / row["case"] / out["mask"].split("/")[-1])
        assert tuple(mask_shape) == tuple(shape[:3]), row["case"]
        assert np.allclose(mask_affine, affine, atol=1e-4), row["case"]
        label_shape, label_affine = read_geometry(real_data / row["label"])
        assert tuple(label_shape) == tuple(shape[:3]) and np.allclose(label_affine, affine, atol=1e-3), row["case"]


REAL_SOURCES = {  # folder: (channel globs, label glob, lesion labels)
    "deepmedic_brats2015": (
        [
            "brats2015TrainingData/*/{case}/Flair_subtrMeanDivStd.nii.gz",
            "brats2015TrainingData/*/{case}/T1c_subtrMeanDivStd.nii.gz",
        ],
        "brats2015TrainingData/*/{case}/OTMultiClass.nii.gz",
        [1, 2, 3, 4],
    ),
    "sam_med3d_brats2021": (["imagesTr/{case}.nii.gz"], "labelsTr/{case}.nii.gz", None),
    "isles22_example": (
        ["rawdata/{case}/ses-*/{case}_ses-*_dwi.nii.gz", "rawdata/{case}/ses-*/{case}_ses-*_adc.nii.gz"],
        "derivatives/{case}/ses-*/{case}_ses-*_msk.nii.gz",
        None,
    ),
    "pyradiomics": (["{case}_image.nrrd"], "{case}_label.nrrd", None),
}


@pytest.mark.real
def test_check_and_plan_are_clean_on_every_real_case(real_data):
    from medseg.config.schema import ModelConfig
    from medseg.data.check import check_dataset
    from medseg.data.sources.discover import discover
    from medseg.planning.fingerprint import fingerprint
    from medseg.planning.proposal import make_plan

    total = 0
    for folder, (channels, label, lesion_labels) in REAL_SOURCES.items():
        ds = discover(real_data / folder, "pattern", channels=channels, label=label)
        assert check_dataset(ds, lesion_labels) == [], folder
        fp = fingerprint(ds, lesion_labels)
        plan = make_plan(fp, ModelConfig(), batch=4, memory_gb=8.0)
        assert fp["lesions"]["total"] >= len(ds.cases) and all(s > 0 for s in plan["preprocess"]["target_spacing"]), (
            folder
        )
        total += len(ds.cases)
    assert total == 11


@pytest.mark.real
def test_isles_flair_is_on_another_grid(real_data):
    from medseg.data.check import check_dataset
    from medseg.data.sources.discover import discover

    channels = ["rawdata/{case}/ses-*/{case}_ses-*_dwi.nii.gz", "rawdata/{case}/ses-*/{case}_ses-*_flair.nii.gz"]
    ds = discover(
        real_data / "isles22_example",
        "pattern",
        channels=channels,
        label="derivatives/{case}/ses-*/{case}_ses-*_msk.nii.gz",
    )
    problems = check_dataset(ds)
    assert len(problems) == 1 and "flair.nii.gz" in problems[0] and "different grid" in problems[0]


@pytest.mark.real
def test_brats_flair_config_checks_clean(real_data, monkeypatch):
    from pathlib import Path

    from medseg.config.load import load_config
    from medseg.data.check import check_dataset
    from medseg.data.sources.discover import from_config

    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "brats_flair.yaml")
    ds = from_config(cfg.data)
    assert len(ds.cases) == 6 and check_dataset(ds, cfg.data.lesion_labels) == []


@pytest.mark.real
def test_readme_and_config_fold_commands_split_the_real_cases(real_data, monkeypatch):
    """Every `medseg train configs/X.yaml --folds N` the README, the docs or a config comment shows makes N
    folds of X's real training cases, patients never split (the MS cases form only 2 groups)."""
    root = Path(__file__).resolve().parents[1]
    texts = [
        (root / "README.md").read_text(),
        *(p.read_text() for p in (root / "docs").rglob("*.md")),
        *(p.read_text() for p in (root / "configs").glob("*.yaml")),
    ]
    commands = {m for t in texts for m in re.findall(r"medseg train (configs/\w+\.yaml) --folds (\d+)", t)}
    assert commands
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    for config, folds in sorted(commands):
        cfg = load_config(root / config)
        cases = from_config(cfg.data).require_clean()
        splits = fold_splits(cases, int(folds), cfg.train.seed, cfg.data.group_pattern)
        assert sorted(c for s in splits for c in s) == sorted(c.case_id for c in cases), config


@pytest.mark.real
def test_two_release_case_list_trains_neither_releases_held_out_cases(real_data, monkeypatch):
    """benchmarks/cases/brats_flair_two_releases.yaml reads clean (16 cases, both releases), and the
    brats_flair_2rel split of benchmarks/real_quality.py trains on both releases but on none of the
    cases it scores."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    import real_quality as rq
    from heldout import heldout_cases

    from medseg.data.split import run_split

    cfg = load_config(rq.GROUPS["brats_flair_2rel"], rq.group_overrides("brats_flair_2rel"))
    cases = from_config(cfg.data).require_clean()
    train, val = run_split(cases, cfg)
    held = {c.case_id for c in heldout_cases(cfg)}
    trained = {c.case_id for c in train + val}
    assert len(cases) == 11 and len(held) == 5 and not held & trained  # from_config drops the held-out cases
    assert {c[:5] for c in trained} == {"BraTS", "brats"} and set(rq.BRATS2015_TEST) <= held


def test_tagged_rows_pair_with_the_reference_at_their_tag(monkeypatch):
    """The ratio lines of benchmarks/real_quality.py pair a ``--tag``ged medseg row with the MONAI
    row of the same tag (the same budget), never with the untagged one."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import real_quality as rq

    assert rq.reference_row("medseg") == "monai_tutorial"
    assert rq.reference_row("medseg [60 min]") == "monai_tutorial [60 min]"
    assert rq.reference_row("medseg, 3-seed ensemble [60 min]") == "monai_tutorial, 3 x minutes [60 min]"
    assert rq.reference_row("medseg + mirror TTA [60 min]") is None and rq.reference_row("monai_tutorial") is None


@pytest.mark.real
def test_new_site_rows_train_on_the_chosen_scans_and_never_on_a_held_out_one(real_data, monkeypatch):
    """benchmarks/new_site.py: the fine-tuned and scratch rows train on the N Tabriz scans alone
    (validated on Tabriz's validation case); the rehearsed row adds MSLesSeg's training scans and
    validates on both sites; no row trains or validates on a case either site holds out."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    import new_site
    from site_shift import CONFIG, HELD_OUT, all_cases, brain_mask

    from medseg.data.split import run_split

    scans = ["tabriz_104252", "tabriz_104670"]
    held = {c for ids in HELD_OUT.values() for c in ids}
    for rehearse, n_msl in ((False, 0), (True, 3)):
        cfg = load_config(CONFIG, new_site.new_site_overrides(scans, Path("/tmp/unused"), 5.0, rehearse))
        train, val = run_split(from_config(cfg.data).require_clean(), cfg)
        trained = {c.case_id for c in train}
        assert set(scans) <= trained and len(trained) == len(scans) + n_msl and not held & trained
        assert {c.case_id for c in val} == ({"tabriz_106639", "msl_P14_T3"} if rehearse else {"tabriz_106639"})
    held_out_tabriz = [all_cases()[c] for c in HELD_OUT["tabriz"]]
    assert len(held_out_tabriz) == 3 and all(brain_mask(c).is_file() for c in held_out_tabriz)


@pytest.mark.real
def test_site_shift_strips_tabriz_scans_by_their_brain_masks(real_data, monkeypatch, tmp_path):
    """benchmarks/site_shift.py's ``tabriz+stripped`` set: each held-out Tabriz scan with 0 outside
    its brain mask and its own values inside, on the scan's grid, with the scan's label."""
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from site_shift import HELD_OUT, all_cases, brain_region, stripped

    case = all_cases()[HELD_OUT["tabriz"][0]]
    out = stripped(case, tmp_path)
    scan, strip = nib.load(str(case.images[0])), nib.load(str(out.images[0]))
    x, y, brain = np.asarray(scan.dataobj, np.float32), np.asarray(strip.dataobj), brain_region(case)
    assert out.label == case.label and np.allclose(strip.affine, scan.affine) and y.shape == x.shape
    assert 0 < brain.mean() < 0.5 and np.array_equal(y[brain], x[brain]) and not y[~brain].any()


@pytest.mark.real
def test_whitestripe_gives_a_tabriz_scan_the_same_lesion_values_with_the_skull_on_or_off(
    real_data, monkeypatch, tmp_path
):
    """benchmarks/lesion_contrast.py on a held-out Tabriz scan: WhiteStripe over Otsu's head mask
    puts its lesions and normal tissue at the same values skull-on and skull-stripped; z-scoring
    over the body above the minimum moves both."""
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from lesion_contrast import lesion_and_tissue
    from site_shift import HELD_OUT, all_cases, stripped

    case = all_cases()[HELD_OUT["tabriz"][0]]
    bare = stripped(case, tmp_path)
    ws_on, ws_off = lesion_and_tissue(case, "whitestripe", "otsu"), lesion_and_tissue(bare, "whitestripe", "otsu")
    z_on, z_off = lesion_and_tissue(case, "zscore_nonzero", "min"), lesion_and_tissue(bare, "zscore_nonzero", "min")
    assert abs(ws_on[0] - ws_off[0]) < 0.2 and abs(ws_on[1] - ws_off[1]) < 0.1 and ws_on[0] - ws_on[1] > 1.5
    assert abs(z_on[1] - z_off[1]) > 0.5  # normal tissue: -0.6 with the head and air, ~0.2 without
