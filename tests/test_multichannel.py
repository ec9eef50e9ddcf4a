"""Two-channel nnU-Net raw dataset through the CLI: check -> train (planned) -> predict --dataset
-> evaluate against the dataset, masks on each case's own grid."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tests.conftest import cli, save_nifti

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


def run(*args):
    return cli(*args)


def make(root, affine, n=4, split="Tr"):
    rng = np.random.default_rng(3)
    for i in range(n):
        t2 = rng.normal(10, 1, (24, 24, 16)).astype(np.float32)
        adc = rng.normal(5, 1, (24, 24, 16)).astype(np.float32)
        lab = np.zeros((24, 24, 16), np.uint8)
        lab[8:12, 8:13, 6:10] = 2  # lesion stored as value 2; value 1 (oedema) is not lesion here
        lab[16:18, 16:18, 3:5] = 1
        t2[lab == 2] += 6
        adc[lab == 2] -= 3
        save_nifti(t2, affine, root / f"images{split}" / f"p{i}_0000.nii.gz")
        save_nifti(adc, affine, root / f"images{split}" / f"p{i}_0001.nii.gz")
        save_nifti(lab, affine, root / f"labels{split}" / f"p{i}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2", "1": "ADC"},
                "labels": {"background": 0, "oedema": 1, "lesion": 2},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def test_two_channel_dataset_end_to_end(tmp_path, affine):
    root = make(tmp_path / "Dataset002_Two", affine)
    make(root, affine, n=2, split="Ts")
    assert run("check", root, "--lesion-labels", "2").returncode == 0
    cfg = tmp_path / "two.yaml"
    cfg.write_text(
        f"data: {{dataset: {root}, lesion_labels: [2]}}\nmodel: {{channels: [4, 8, 16], strides: [2, 2]}}\n"
        f"train: {{epochs: 2, val_every: 1, output_dir: {tmp_path / 'runs'}}}\ntracking: {{enabled: false}}\n"
    )
    res = run("train", cfg, "--quiet")
    assert res.returncode == 0, res.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    plan = (run_dir / "plan.yaml").read_text()
    assert "patch_size" in plan and "target_spacing" in plan  # the config left them to the plan
    ckpt = torch.load(run_dir / "best.pt", weights_only=False)
    assert ckpt["preprocess"]["in_channels"] == 2 and ckpt["preprocess"]["channels"] == ["T2", "ADC"]
    assert ckpt["config"]["sampling"]["patch_size"] != [64, 64, 32]  # not the default: planned

    out = tmp_path / "pred"
    res = run("predict", run_dir / "best.pt", "--dataset", root, "--out", out, "--device", "cpu", "--quiet")
    assert res.returncode == 0, res.stderr
    for case in ("p0", "p1"):
        mask, scan = nib.load(str(out / f"{case}.nii.gz")), nib.load(str(root / "imagesTs" / f"{case}_0000.nii.gz"))
        assert mask.shape == scan.shape and np.array_equal(mask.affine, scan.affine)
    res = run("evaluate", out, root, "--split", "test", "--lesion-labels", "2")
    assert res.returncode == 0, res.stderr
    assert "2 case(s)" in res.stdout and "GT lesions 2" in res.stdout  # value-1 blobs are not lesions

    one = run(
        "predict",
        run_dir / "best.pt",
        root / "imagesTs" / "p0_0000.nii.gz",
        "--out",
        tmp_path / "p1",
        "--device",
        "cpu",
    )
    assert one.returncode == 1 and "the model expects 2 (T2, ADC)" in one.stderr and "Traceback" not in one.stderr
