"""End to end through the CLI, as a user runs it: synth -> train -> predict -> evaluate -> MLflow."""

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from medseg.lesions import fill_holes
from tests.conftest import MEDSEG, cli, save_nifti

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
TINY = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.val_every=1",
    "--set",
    "sampling.patch_size=[16,16,16]",
    "--set",
    "model.channels=[4,8,16]",
    "--set",
    "model.strides=[2,2]",
    "--set",
    "train.batch_size=2",
    "--set",
    "preprocess.target_spacing=null",
    "--set",
    "tracking.experiment=e2e",
    "--set",
    "tracking.register_model=e2e-model",
    "--quiet",
]
SIX = {"train_loss", "val_dice", "val_lesion_recall", "val_lesion_precision", "val_lesion_f1", "val_fp_per_scan"}


def run(*args, cwd=None):
    return cli(*args, cwd=cwd)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "data"
    res = run("synth", "--out", root, "--cases", 4, "--test-cases", 2, "--shape", "32,32,24", "--seed", 5)
    assert res.returncode == 0, res.stderr
    return root


@pytest.mark.slow
def test_train_predict_evaluate_mlflow(tiny_dataset, tmp_path):
    out = tmp_path / "runs"
    res = run("train", DEMO, "--set", f"data.dataset={tiny_dataset}", "--set", f"train.output_dir={out}", *TINY)
    assert res.returncode == 0, res.stderr
    assert "MLflow run id:" in res.stdout and "ui --backend-store-uri sqlite:///" in res.stdout
    run_id = res.stdout.split("MLflow run id:")[1].split()[0]
    best = next(out.glob("*/best.pt"))
    from medseg.nn.checkpoint import load_checkpoint

    recorded = yaml.safe_load((best.parent / "plan.yaml").read_text())["resolved"]  # the run's plan, next to it
    assert load_checkpoint(best).plan.to_dict() == recorded  # ... and in the checkpoint

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b truncated")
    res = run(
        "predict", best, tiny_dataset / "imagesTs", corrupt, "--out", tmp_path / "pred", "--device", "cpu", "--quiet"
    )
    assert res.returncode == 1 and "corrupt.nii.gz" in res.stderr and "Traceback" not in res.stderr
    assert "unlike the model's training scans" not in res.stderr  # test scans of the training scans' kind
    scans = sorted(p.name for p in (tiny_dataset / "imagesTs").iterdir())
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == scans
    assert not [p for p in (tmp_path / "pred").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    summary = (tmp_path / "pred" / "summary.csv").read_text().splitlines()
    assert summary[0] == "scan,mask,lesions,lesion_volume_mm3,seconds,unlike_training" and len(summary) == 1 + len(
        scans
    )
    assert all((tmp_path / "pred" / n.replace(".nii.gz", "_lesions.json")).exists() for n in scans)
    for scan in sorted((tiny_dataset / "imagesTs").iterdir()):
        src, mask = nib.load(str(scan)), nib.load(str(tmp_path / "pred" / scan.name))
        assert mask.shape == src.shape
        assert np.array_equal(mask.affine, src.affine)
        assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}

    # two processes under torchrun (gloo on CPU): each takes half the scans, rank 0 writes one summary
    torchrun = str(Path(MEDSEG[0]).with_name("torchrun"))
    res = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "medseg",
            "predict",
            str(best),
            str(tiny_dataset / "imagesTs"),
            "--out",
            str(tmp_path / "pred_ddp"),
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((tmp_path / "pred_ddp" / "summary.csv").read_text().splitlines()) == 1 + len(scans)
    for name in scans:
        a = np.asanyarray(nib.load(str(tmp_path / "pred" / name)).dataobj)
        assert np.array_equal(a, np.asanyarray(nib.load(str(tmp_path / "pred_ddp" / name)).dataobj))

    res = run("evaluate", tmp_path / "pred", tiny_dataset / "labelsTs", "--out", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    assert "lesion recall" in res.stdout and (tmp_path / "eval" / "cases.csv").read_text().startswith("case,dice")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run_data = client.get_run(run_id).data
    assert set(run_data.metrics) >= SIX
    assert [m.step for m in client.get_metric_history(run_id, "val_lesion_recall")] == [1, 2]
    assert run_data.params["train.epochs"] == "2"
    assert run_data.params["plan.roi_size"] == str(recorded["roi_size"])  # ... and logged
    assert {"git_commit", "version.monai", "version.torch", "version.mlflow", "dataset_fingerprint", "device"} <= set(
        run_data.tags
    )
    assert "val_lesion_recall_small" in run_data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "model")
    }
    assert {"config.yaml", "model/MLmodel"} <= artifacts
    assert "model/artifacts/best.pt" in {a.path for a in client.list_artifacts(run_id, "model/artifacts")}
    report = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/training_curve.png", "report/val_best_cases.csv"} <= report

    # the same model straight from MLflow: by run and from the registry
    store = f"sqlite:///{out / 'mlflow.db'}"
    for uri in (f"runs:/{run_id}/model", "models:/e2e-model/1"):
        res = run(
            "predict",
            uri,
            tiny_dataset / "imagesTs",
            "--out",
            tmp_path / "pred_uri",
            "--tracking-uri",
            store,
            "--quiet",
        )
        assert res.returncode == 0, res.stderr
    same = [
        np.array_equal(
            np.asanyarray(nib.load(str(p)).dataobj),
            np.asanyarray(nib.load(str(tmp_path / "pred_uri" / p.name)).dataobj),
        )
        for p in (tmp_path / "pred").glob("*.nii.gz")
    ]
    assert same and all(same)

    # --fill-holes: the same masks with every enclosed cavity filled, nothing taken away
    res = run(
        "predict",
        best,
        tiny_dataset / "imagesTs",
        "--out",
        tmp_path / "pred_filled",
        "--fill-holes",
        "--device",
        "cpu",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    for p in (tmp_path / "pred").glob("*.nii.gz"):
        plain, filled = (
            np.asanyarray(nib.load(str(d / p.name)).dataobj) > 0 for d in (tmp_path / "pred", tmp_path / "pred_filled")
        )
        assert (filled >= plain).all() and np.array_equal(fill_holes(filled), filled)

    # operating point tuned on the validation cases, stored in the checkpoint and the run
    res = run("tune", best, "--device", "cpu", "--tracking-uri", client.tracking_uri)
    assert res.returncode == 0, res.stderr
    assert "operating point: threshold" in res.stdout and "CPM" in res.stdout
    import torch

    assert "target" in torch.load(best, weights_only=True)["operating_point"]
    assert "froc_cpm" in client.get_run(run_id).data.metrics
    assert {"tuning/froc.png", "tuning/operating_curve.csv"} <= {
        a.path for a in client.list_artifacts(run_id, "tuning")
    }
    wrong = run("tune", best, "--protocol", "brats2099")
    assert wrong.returncode != 0 and "use one of medseg, brats2023" in wrong.stderr and "Traceback" not in wrong.stderr


def assert_user_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")
    for needle in needles:
        assert needle in res.stderr, res.stderr


def test_missing_config(tmp_path):
    assert_user_error(run("train", tmp_path / "nope.yaml"), "nope.yaml", "not found")


def test_unknown_key(tmp_path):
    res = run("train", DEMO, "--set", "train.epoch=3", "--set", f"train.output_dir={tmp_path / 'o'}")
    assert_user_error(res, "train.epoch", "epochs")
    assert not (tmp_path / "o").exists()


def test_demo_checks_its_overrides_before_writing_anything(tmp_path):
    res = run("demo", "--out", tmp_path / "d", "--set", "train.epoch=3")
    assert_user_error(res, "train.epoch", "epochs")
    assert not (tmp_path / "d").exists()  # no synthetic data written for a run that cannot start


def test_dataset_json_names_missing_file(tiny_dataset, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.loads((tiny_dataset / "dataset.json").read_text())
    meta["training"] = [{"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"}]
    (bad / "dataset.json").write_text(json.dumps(meta))
    res = run("train", DEMO, "--set", f"data.dataset={bad}", "--set", f"train.output_dir={tmp_path / 'o'}")
    assert_user_error(res, "gone.nii.gz", "does not exist")
    assert not (tmp_path / "o").exists()


def test_label_with_other_shape(tmp_path, affine):
    root = tmp_path / "d"
    for i in range(2):
        save_nifti(np.zeros((16, 16, 16), np.float32), affine, root / "imagesTr" / f"c{i}.nii.gz")
        save_nifti(np.zeros((16, 16, 8 if i else 16), np.uint8), affine, root / "labelsTr" / f"c{i}.nii.gz")
    entries = [{"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"} for i in range(2)]
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    res = run("train", DEMO, "--set", f"data.dataset={root}", "--set", f"train.output_dir={tmp_path / 'o'}")
    assert_user_error(res, "c1.nii.gz", "shape")
    assert not (tmp_path / "o").exists()


def test_checkpoint_that_is_not_one(tiny_dataset, tmp_path):
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"garbage")
    assert_user_error(run("predict", ckpt, tiny_dataset / "imagesTs", "--out", tmp_path / "p"), "fake.pt")


def test_help_is_fast_and_lists_commands():
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("synth", "train", "predict", "evaluate", "demo"):
        assert cmd in res.stdout


def test_truncated_volume_in_training_set(tiny_dataset, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny_dataset, root)
    victim = root / "imagesTr" / "synth_001.nii.gz"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    res = run("train", DEMO, "--set", f"data.dataset={root}", "--set", f"train.output_dir={tmp_path / 'o'}", *TINY)
    assert_user_error(res, "synth_001.nii.gz", "truncated or corrupt")
    assert not (tmp_path / "o").exists()
