"""Several lesion classes (BraTS-like nested regions): one sigmoid output per class, per-class
validation metrics, one mask per class on the scan's grid, per-class evaluation."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config.schema import ExperimentConfig
from medseg.transforms.labels import SelectLesionClassesd
from tests.conftest import cli, save_nifti


def run(*args):
    return cli(*args)


def make(root, affine, n, split):
    rng = np.random.default_rng(7)
    for i in range(n):
        img = rng.normal(10, 1, (24, 24, 16)).astype(np.float32)
        lab = np.zeros((24, 24, 16), np.uint8)
        lab[6:14, 6:14, 4:12] = 1  # oedema
        lab[8:12, 8:12, 6:10] = 2  # core inside it
        img[lab == 1] += 4
        img[lab == 2] += 8
        save_nifti(img, affine, root / f"images{split}" / f"p{i}_0000.nii.gz")
        save_nifti(lab, affine, root / f"labels{split}" / f"p{i}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "FLAIR"},
                "labels": {"background": 0, "oedema": 1, "core": 2},
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def test_classes_transform_makes_one_channel_per_class():
    label = torch.tensor([[[[0, 1, 2, 2]]]], dtype=torch.float32)  # (1, 1, 1, 4)
    out = SelectLesionClassesd(["label"], [[1, 2], [2]])({"label": label})["label"]
    assert out.shape == (2, 1, 1, 4)
    assert out[0].flatten().tolist() == [0, 1, 1, 1] and out[1].flatten().tolist() == [0, 0, 1, 1]


def test_config_rules():
    with pytest.raises(ValueError, match="set one of them"):
        ExperimentConfig.model_validate({"data": {"dataset": "d", "lesion_labels": [1], "lesion_classes": {"a": [1]}}})
    with pytest.raises(ValueError, match="voxel"):
        ExperimentConfig.model_validate(
            {"data": {"dataset": "d", "lesion_classes": {"a": [1], "b": [2]}}, "sampling": {"strategy": "voxel"}}
        )


def test_two_classes_end_to_end(tmp_path, affine):
    root = make(tmp_path / "Dataset003_Regions", affine, 4, "Tr")
    make(root, affine, 2, "Ts")
    cfg = tmp_path / "regions.yaml"
    cfg.write_text(
        f"data: {{dataset: {root}, lesion_classes: {{whole: [1, 2], core: [2]}}}}\n"
        "preprocess: {target_spacing: [1.2, 0.9, 2.5]}\nsampling: {patch_size: [16, 16, 8]}\n"
        "model: {channels: [4, 8, 16], strides: [2, 2]}\n"
        f"train: {{epochs: 2, val_every: 1, output_dir: {tmp_path / 'runs'}}}\ntracking: {{experiment: regions}}\n"
    )
    res = run("train", cfg, "--quiet")
    assert res.returncode == 0, res.stderr
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and (p / "best.pt").exists())
    ckpt = torch.load(run_dir / "best.pt", weights_only=False)
    assert ckpt["preprocess"]["classes"] == ["whole", "core"]
    assert {"val_whole_dice", "val_core_lesion_recall", "val_dice", "val_lesion_f1"} <= set(ckpt["metrics"])
    assert ckpt["metrics"]["val_dice"] == pytest.approx(
        (ckpt["metrics"]["val_whole_dice"] + ckpt["metrics"]["val_core_dice"]) / 2
    )

    out = tmp_path / "pred"
    res = run("predict", run_dir / "best.pt", "--dataset", root, "--out", out, "--device", "cpu", "--quiet")
    assert res.returncode == 0, res.stderr
    scan = nib.load(str(root / "imagesTs" / "p0_0000.nii.gz"))
    for cls in ("whole", "core"):
        mask = nib.load(str(out / f"p0_{cls}.nii.gz"))
        assert mask.shape == scan.shape and np.array_equal(mask.affine, scan.affine)
        assert (out / f"p0_{cls}_lesions.csv").exists()
    res = run("evaluate", out, cfg, "--split", "test")
    assert res.returncode == 0, res.stderr
    assert "class whole (label values [1, 2])" in res.stdout and "class core (label values [2])" in res.stdout
    assert res.stdout.count("2 case(s)") == 2
