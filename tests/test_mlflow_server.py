"""Training against a real `mlflow server` on 127.0.0.1 (SQLite backend, artifacts in tmp_path),
read back with MlflowClient; and a server outage in the middle of a run loses nothing."""

import base64
import gzip
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import MEDSEG, Forked
from tests.test_cli_e2e import DEMO, TINY, run

MLFLOW = str(Path(MEDSEG[0]).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'db.sqlite'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.25)
    stop_server(proc)
    pytest.fail("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module (starting one takes ~20 s); the outage test restarts it in place."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = start_server(root, port)
    info = {"uri": f"http://127.0.0.1:{port}", "root": root, "port": port, "proc": [proc]}
    yield info
    if info["proc"][0].poll() is None:
        stop_server(info["proc"][0])


@pytest.mark.slow
def test_train_against_server_and_read_back(server, tmp_path):
    data = tmp_path / "data"
    assert run("synth", "--out", data, "--cases", 4, "--shape", "32,32,24", "--seed", 5).returncode == 0
    res = run(
        "train",
        DEMO,
        "--set",
        f"data.dataset={data}",
        "--set",
        f"train.output_dir={tmp_path / 'runs'}",
        *TINY,
        "--set",
        f"tracking.uri={server['uri']}",
        "--set",
        "tracking.register_model=srv-model",
    )
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.split("MLflow run id:")[1].split()[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server["uri"])
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val_lesion_f1")] == [1, 2]
    assert got.data.params["loss.name"] == "focal_dice" and "git_commit" in got.data.tags
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run_id, "model")}
    import mlflow.pyfunc  # the logged model loads and predicts through MLflow's own API

    local = client.download_artifacts(run_id, "model", str(tmp_path))  # no global tracking URI: other tests spawn CLIs
    pyfunc = mlflow.pyfunc.load_model(local)
    scan = sorted((data / "imagesTr").iterdir())[0]
    table = pyfunc.predict(pd.DataFrame({"scan": [base64.b64encode(scan.read_bytes()).decode("ascii")]}))
    mask = np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(table["mask"][0]))).dataobj)
    assert mask.shape == nib.load(str(scan)).shape and set(np.unique(mask)) <= {0, 1}
    res = run(
        "predict",
        "models:/srv-model/1",
        data / "imagesTr",
        "--out",
        tmp_path / "pred",
        "--tracking-uri",
        server["uri"],
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 4


@pytest.mark.slow
def test_server_outage_mid_run_loses_nothing(server, tmp_path):
    data = tmp_path / "data"
    assert run("synth", "--out", data, "--cases", 4, "--shape", "32,32,24", "--seed", 6).returncode == 0
    epochs = 12
    train = Forked(
        [
            "train",
            DEMO,
            "--set",
            f"data.dataset={data}",
            "--set",
            f"train.output_dir={tmp_path / 'runs'}",
            "--set",
            f"tracking.uri={server['uri']}",
            *TINY,
            "--set",
            f"train.epochs={epochs}",
            "--set",
            "tracking.experiment=outage",
        ]
    )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server["uri"])
    for _ in range(400):  # wait until the run has logged its first epoch
        runs = (
            client.search_runs([client.get_experiment_by_name("outage").experiment_id])
            if client.get_experiment_by_name("outage")
            else []
        )
        if runs and runs[0].data.metrics.get("train_loss") is not None:
            break
        time.sleep(0.1)
    stop_server(server["proc"][0])  # the server dies mid-run...
    time.sleep(4)
    server["proc"][0] = start_server(server["root"], server["port"])  # ...and comes back
    out, err = train.communicate(timeout=600)
    assert train.returncode == 0, err[-2000:]
    run_id = out.split("MLflow run id:")[1].split()[0]
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == list(range(1, epochs + 1))
    assert [m.step for m in client.get_metric_history(run_id, "val_lesion_recall")] == list(range(1, epochs + 1))
