"""`medseg plan`: fingerprint figures against hand counts, the planning rules, and config precedence."""

import json

import numpy as np
import pytest
import yaml
from conftest import cli, save_nifti

from medseg.config.schema import ExperimentConfig, ModelConfig
from medseg.data.sources.discover import discover
from medseg.planning.fingerprint import fingerprint
from medseg.planning.proposal import apply_plan, make_plan, patch_size, target_spacing, training_memory_gb


def make(root, spacings, name="MRI", values=(100.0,)):
    """One case per spacing: 20x16x12 volume, a 2x2x2 lesion and a 3x3x3 lesion (label 2)."""
    for i, sp in enumerate(spacings):
        img = np.zeros((20, 16, 12), np.float32)
        img[2:18, 2:14, 1:11] = 10.0
        lab = np.zeros((20, 16, 12), np.uint8)
        lab[4:6, 4:6, 4:6] = 1
        lab[10:13, 8:11, 5:8] = 2
        img[lab > 0] = values[i % len(values)]
        save_nifti(img, np.diag([*sp, 1.0]), root / "imagesTr" / f"c{i}_0000.nii.gz")
        save_nifti(lab, np.diag([*sp, 1.0]), root / "labelsTr" / f"c{i}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": name}, "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}
        )
    )
    return root


def test_fingerprint_counts_match_the_files(tmp_path):
    fp = fingerprint(discover(make(tmp_path / "d", [(1, 1, 2), (1, 1, 3), (1, 1, 4)])))
    assert fp["cases"] == 3 and fp["spacing_mm"]["median"] == [1, 1, 3] and fp["spacing_mm"]["max"] == [1, 1, 4]
    assert fp["shape_cropped"]["median"] == [16, 12, 10]  # the non-zero box
    assert fp["lesions"]["total"] == 6 and fp["lesions"]["per_case"]["median"] == 2
    assert fp["lesions"]["volume_mm3"]["min"] == 8 * 2 and fp["lesions"]["volume_mm3"]["max"] == 27 * 4
    assert fp["intensity_in_lesions"]["MRI"]["mean"] == 100.0
    only_b = fingerprint(discover(tmp_path / "d"), lesion_labels=[2])
    assert only_b["lesions"]["total"] == 3


def test_anisotropic_target_spacing_takes_the_10th_percentile():
    fp = {"spacing_mm": {"median": [0.8, 0.8, 5.0]}, "spacing_p10_mm": [0.7, 0.7, 3.0]}
    assert target_spacing(fp) == [0.8, 0.8, 3.0]
    fp = {"spacing_mm": {"median": [1.0, 1.0, 2.0]}, "spacing_p10_mm": [0.9, 0.9, 1.0]}
    assert target_spacing(fp) == [1.0, 1.0, 2.0]


def test_patch_fits_the_memory_budget_and_the_network():
    channels = (32, 64, 128, 256, 320)
    big = patch_size([200, 200, 150], 16, channels, 2, memory_gb=1000)
    small = patch_size([200, 200, 150], 16, channels, 2, memory_gb=4)
    assert big == [192, 192, 160]
    assert all(p % 16 == 0 for p in small) and training_memory_gb(small, channels, 2) <= 4
    assert np.prod(small) < np.prod(big)
    assert patch_size([30, 40, 10], 8, (16, 32), 2, 8) == [32, 40, 16]  # median rounded up, not beyond


def test_ct_channels_get_clip_and_zscore(tmp_path):
    ds = discover(make(tmp_path / "ct", [(0.7, 0.7, 5.0)] * 4, name="CT", values=(40.0, 60.0)))
    plan = make_plan(fingerprint(ds), ModelConfig(), batch=4, memory_gb=8.0)
    assert plan["preprocess"]["normalize"] == "ct"
    low, high, mean, std = plan["preprocess"]["ct_stats"][0]
    assert (
        low == pytest.approx(40.0)
        and high == pytest.approx(60.0)
        and mean == pytest.approx(50.0)
        and std == pytest.approx(10.0)
    )


def test_config_keys_win_over_the_plan():
    plan = {
        "preprocess": {"target_spacing": [2.0, 2.0, 2.0], "normalize": "zscore"},
        "sampling": {"patch_size": [32, 32, 32]},
    }
    cfg = ExperimentConfig.model_validate({"data": {"dataset": "x"}, "sampling": {"patch_size": [16, 16, 16]}})
    out = apply_plan(cfg, plan)
    assert out.sampling.patch_size == (16, 16, 16)  # set in the config
    assert out.preprocess.target_spacing == (2.0, 2.0, 2.0) and out.preprocess.normalize == "zscore"


def test_cli_writes_a_plan_training_can_read(tmp_path):
    root = make(tmp_path / "d", [(1, 1, 2)] * 2)
    res = cli("plan", str(root), "--out", str(tmp_path / "plans"))
    assert res.returncode == 0, res.stderr
    assert f"wrote {tmp_path / 'plans' / 'plan.yaml'}" in res.stdout
    saved = yaml.safe_load((tmp_path / "plans" / "plan.yaml").read_text())
    assert saved["plan"]["preprocess"]["target_spacing"] == [1.0, 1.0, 2.0] and saved["fingerprint"]["cases"] == 2


def test_ct_template_takes_spacing_window_and_patch_from_the_plan(tmp_path):
    """configs/lesion_ct.yaml on a thick-slice CT dataset: the plan fills what the template leaves out."""
    from pathlib import Path

    from medseg.config.load import load_config
    from medseg.training.prepare import prepare

    root = make(
        tmp_path / "Dataset001_CTLesions",
        [(0.8, 0.8, 5.0), (0.7, 0.7, 5.0), (0.8, 0.8, 1.25)],
        name="CT",
        values=(40.0, 60.0),
    )
    template = Path(__file__).resolve().parents[1] / "configs" / "lesion_ct.yaml"
    cfg = load_config(template, [f"data.dataset={root}", "data.lesion_labels=[1,2]"])
    prep = prepare(cfg)
    assert prep.cfg.preprocess.normalize == "ct" and len(prep.cfg.preprocess.ct_stats) == 1
    assert prep.plan.preprocess.spacing[2] < 5.0  # the thick-slice median is not taken as is
    assert all(p % 16 == 0 for p in prep.plan.patch_size)
    assert prep.plan.preprocess.channels == ("CT",)
    assert prep.plan.origin["sampling.patch_size"] == "planned"
