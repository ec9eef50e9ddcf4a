"""Crash and resume: SIGKILL in the middle of an epoch, `medseg train --resume`, and the result is
the uninterrupted run's, with one MLflow history without duplicate or missing steps; a finished
run is extended with --set train.epochs=M."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import MEDSEG, Forked, cli

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
EPOCHS = 4


def settings(data, out):
    return [
        "--set",
        f"data.dataset={data}",
        "--set",
        f"train.output_dir={out}",
        "--set",
        f"train.epochs={EPOCHS}",
        "--set",
        "train.batch_size=1",
        "--set",
        "train.val_every=1",
        "--set",
        "train.checkpoint_every_steps=1",
        "--set",
        "sampling.patch_size=[32,32,24]",
        "--set",
        "model.channels=[8,16,32]",
        "--set",
        "model.strides=[2,2]",
        "--set",
        "tracking.experiment=resume",
        "--quiet",
    ]


def history(run_dir, metric):
    from mlflow.tracking import MlflowClient

    ckpt = torch.load(run_dir / "last.pt", weights_only=False)
    client = MlflowClient(ckpt["tracking_uri"])
    return (
        sorted(m.step for m in client.get_metric_history(ckpt["mlflow_run_id"], metric)),
        client,
        ckpt["mlflow_run_id"],
    )


def read_resume(path):
    try:
        return torch.load(path, weights_only=False)["resume"]
    except Exception:  # being replaced right now
        return None


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    assert cli("synth", "--out", data, "--cases", "4", "--shape", "40,40,28", "--seed", "2").returncode == 0
    ref = cli("train", DEMO, *settings(data, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    ref_last = torch.load(next((tmp_path / "ref").glob("*/last.pt")), weights_only=False)

    proc = Forked(["train", DEMO, *settings(data, tmp_path / "crash")])
    seen, deadline = None, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        last = next((tmp_path / "crash").glob("*/last.pt"), None)
        state = read_resume(last) if last else None
        if state and state["epoch"] >= 2 and state["step_in_epoch"] > 0:
            proc.send_signal(signal.SIGKILL)
            seen = state
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert seen is not None and proc.returncode == -signal.SIGKILL, (
        "training ended before a mid-epoch checkpoint was seen"
    )
    run_dir = last.parent
    at_kill = read_resume(run_dir / "last.pt")
    assert at_kill["global_step"] >= seen["global_step"]  # repeated work: at most checkpoint_every_steps (1) step
    assert not [
        p for p in run_dir.iterdir() if p.name.startswith(".last.pt")
    ]  # no half-written checkpoint left visible

    res = cli("train", "--resume", run_dir, "--quiet")
    assert res.returncode == 0, res.stderr
    done = torch.load(run_dir / "last.pt", weights_only=False)
    assert done["epoch"] == EPOCHS and done["resume"]["global_step"] == ref_last["resume"]["global_step"]
    for key, value in ref_last["state_dict"].items():  # same batches, same updates: the same network
        assert torch.allclose(done["state_dict"][key], value, atol=1e-5), key
    steps, client, run_id = history(run_dir, "train_loss")
    assert steps == list(range(1, EPOCHS + 1))  # no duplicate, no missing step
    assert history(run_dir, "val_lesion_recall")[0] == list(range(1, EPOCHS + 1))
    assert client.get_run(run_id).info.status == "FINISHED"

    more = cli("train", "--resume", run_dir, "--set", f"train.epochs={EPOCHS + 2}", "--quiet")
    assert more.returncode == 0, more.stderr
    assert history(run_dir, "train_loss")[0] == list(range(1, EPOCHS + 3))
    assert torch.load(run_dir / "last.pt", weights_only=False)["epoch"] == EPOCHS + 2


def test_resume_errors_are_one_line(tmp_path):
    res = cli("train", "--resume", tmp_path)
    assert res.returncode == 2 and "no last.pt" in res.stderr and "Traceback" not in res.stderr
    res = cli("train")
    assert res.returncode == 2 and "--resume" in res.stderr


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(tmp_path):
    """DDP on CPU (gloo), 2 processes: one checkpoint set, one MLflow run, both ranks exit 0."""
    data = tmp_path / "data"
    assert cli("synth", "--out", data, "--cases", "5", "--shape", "32,32,24", "--seed", "4").returncode == 0
    torchrun = str(Path(MEDSEG[0]).with_name("torchrun"))
    out = tmp_path / "runs"
    args = settings(data, out)
    args[args.index(f"train.epochs={EPOCHS}")] = "train.epochs=2"
    res = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "medseg", "train", DEMO, *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    runs = [p for p in out.iterdir() if p.is_dir() and p.name != "mlartifacts"]
    assert len(runs) == 1 and {"best.pt", "last.pt", "config.yaml"} <= {p.name for p in runs[0].iterdir()}
    assert res.stdout.count("MLflow run id:") == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("resume")
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(found[0].info.run_id, "train_loss")) == [1, 2]
