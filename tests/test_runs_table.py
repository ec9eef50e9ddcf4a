"""``medseg runs`` on a store with three runs: columns, sorting, clear errors."""

from mlflow.tracking import MlflowClient

from tests.conftest import cli

RUNS = {  # name: (best epoch, recall, precision, FP/scan, Dice)
    "unet-focal_dice-lesion-s0": (12, 0.80, 0.70, 1.5, 0.71),
    "unet-bce_dice-voxel-s0": (30, 0.60, 0.90, 0.2, 0.75),
    "dynunet-focal_dice-lesion-s1": (25, 0.90, 0.50, 3.0, 0.69),
}


def make_store(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("medseg", artifact_location=(tmp_path / "art").as_uri())
    for name, (epoch, recall, precision, fp, dice) in RUNS.items():
        run_id = client.create_run(exp, run_name=name).info.run_id
        for key, value in {
            "best_epoch": epoch,
            "best_val_lesion_recall": recall,
            "best_val_lesion_precision": precision,
            "best_val_fp_per_scan": fp,
            "best_val_dice": dice,
            "val_lesion_recall": 0.0,
        }.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id)
    return uri


def names_in_order(stdout: str) -> list[str]:
    """Run names from ``store: URI``, the header, then one line per run: experiment, run name, ..."""
    return [line.split()[1] for line in stdout.splitlines()[2:]]


def test_runs_table_sorts_by_each_column(tmp_path):
    uri = make_store(tmp_path)
    res = cli("runs", "--tracking-uri", uri, "--sort", "recall")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == f"store: {uri}"
    header = res.stdout.splitlines()[1]
    assert all(
        h in header for h in ("experiment", "run name", "best epoch", "lesion recall", "precision", "FP/scan", "Dice")
    )
    assert names_in_order(res.stdout) == [
        "dynunet-focal_dice-lesion-s1",
        "unet-focal_dice-lesion-s0",
        "unet-bce_dice-voxel-s0",
    ]
    assert (
        "0.900" in res.stdout.splitlines()[2] and "25" in res.stdout.splitlines()[2]
    )  # best_* values, not the last val_*
    res = cli("runs", "--tracking-uri", uri, "--sort", "fp")
    assert names_in_order(res.stdout) == [
        "unet-bce_dice-voxel-s0",
        "unet-focal_dice-lesion-s0",
        "dynunet-focal_dice-lesion-s1",
    ]
    res = cli("runs", "--tracking-uri", uri, "--sort", "dice", "--ascending")
    assert names_in_order(res.stdout)[0] == "dynunet-focal_dice-lesion-s1"


def test_runs_errors_are_one_line(tmp_path):
    uri = make_store(tmp_path)
    missing = tmp_path / "none" / "mlflow.db"
    res = cli("runs", "--tracking-uri", f"sqlite:///{missing}")
    assert res.returncode != 0 and "no MLflow store" in res.stderr and not missing.parent.exists()
    for args, words in ((["--experiment", "nope"], "nope"), (["--sort", "speed"], "--sort")):
        res = cli("runs", "--tracking-uri", uri, *args)
        assert (
            res.returncode != 0
            and res.stderr.startswith("error:")
            and words in res.stderr
            and "Traceback" not in res.stderr
        )
