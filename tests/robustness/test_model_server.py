"""A real ``mlflow models serve`` process on the folder ``medseg export --format mlflow`` writes:
a request carries the scan as base64 bytes (and a region mask, and the operating point as
params) and gets the mask in the scan's geometry and the lesion table; a bad request gets one
line and HTTP 400; the export never replaces what is not its own."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import cli, how_to_commands
from tests.robustness.conftest import SHAPE

BIN = Path(sys.executable).parent  # mlflow starts uvicorn by name: the environment's bin on PATH


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    res = cli("export", tiny_checkpoint, "--format", "mlflow", "--out", out)
    assert res.returncode == 0, res.stderr
    model = out / "mlflow_model"
    assert (model / "MLmodel").is_file() and "mlflow models serve -m" in res.stdout
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MEDSEG_SERVE_ROOT", None)
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve stopped: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer /ping in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_scan_posted_as_bytes_comes_back_as_a_mask_on_its_grid(server, good_scans):
    scan = good_scans[0]
    body = {"dataframe_split": {"columns": ["scan"], "data": [[b64(scan)]]}, "params": {"threshold": 0.01}}
    status, answer = post(f"{server}/invocations", body)
    assert status == 200, answer
    (row,) = answer["predictions"]
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(row["mask"])))
    ref = nib.load(str(scan))
    assert mask.shape == SHAPE and np.allclose(mask.affine, ref.affine)
    lesions = json.loads(row["lesions"])
    assert sum(r["voxels"] for r in lesions) == int(np.asanyarray(mask.dataobj).sum()) > 0  # threshold 0.01 finds some
    region = np.zeros(SHAPE, np.uint8)
    region[:2, :2, :2] = 1  # every lesion lies outside this corner
    corner = scan.parent / "corner_region.nii.gz"
    nib.save(nib.Nifti1Image(region, ref.affine), str(corner))
    body["dataframe_split"] = {"columns": ["scan", "mask"], "data": [[b64(scan), b64(corner)]]}
    status, answer = post(f"{server}/invocations", body)
    assert status == 200 and json.loads(answer["predictions"][0]["lesions"]) == []


def test_a_bad_request_gets_one_line_and_400(server, good_scans):
    bad = {"dataframe_split": {"columns": ["scan"], "data": [["not base64 @@"]]}}
    status, answer = post(f"{server}/invocations", bad)
    # MLflow's server puts "Failed to predict data ..." before the model's message: ours is the last line
    assert status == 400 and answer["message"].splitlines()[-1].startswith("Error: request row 0, column 'scan'")
    assert "not base64" in answer["message"] and "Traceback" not in answer["message"]
    out_of_range = {
        "dataframe_split": {"columns": ["scan"], "data": [[b64(good_scans[0])]]},
        "params": {"threshold": 2},
    }
    status, answer = post(f"{server}/invocations", out_of_range)
    assert status == 400 and "threshold" in answer["message"]


def test_export_replaces_only_its_own_folder(tiny_checkpoint, tmp_path):
    (tmp_path / "mlflow_model").mkdir()
    (tmp_path / "mlflow_model" / "notes.txt").write_text("mine")
    res = cli("export", tiny_checkpoint, "--format", "mlflow", "--out", tmp_path)
    assert res.returncode == 2 and "not an MLflow model folder" in res.stderr
    assert (tmp_path / "mlflow_model" / "notes.txt").read_text() == "mine"
    res = cli("export", f"{tiny_checkpoint},{tiny_checkpoint}", "--format", "mlflow", "--out", tmp_path / "b")
    assert res.returncode == 2 and "one checkpoint file" in res.stderr and not (tmp_path / "b").exists()


def test_the_how_to_commands_run_as_written(tiny_checkpoint, tmp_path):
    (tmp_path / "runs" / "20261123-101500").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, tmp_path / "runs" / "20261123-101500" / "best.pt")
    commands = how_to_commands("how-to/serve.md")
    assert [c[:1] for c in commands] == [["export"]]
    for args in commands:
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    assert (tmp_path / "served" / "mlflow_model" / "MLmodel").is_file()
