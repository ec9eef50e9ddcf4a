"""Adversarial models and requests: crafted checkpoints are refused where they are loaded, tune
writes every member before it logs and never writes to a store a checkpoint names, the served
model takes scans as bytes and writes nothing outside its temporary folder, and the disk cache
follows a scan replaced in place.

A crafted checkpoint is the tiny one of ``conftest.tiny_payload`` with one value changed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from mlflow.exceptions import MlflowException

from medseg.errors import MedsegError
from medseg.inference.model import load_model
from medseg.inference.pyfunc import MedsegModel, save_pyfunc
from medseg.inference.uploads import ROOT_ENV
from medseg.nn.checkpoint import load_checkpoint, write_payload
from tests.conftest import oblique_affine, save_nifti
from tests.robustness.conftest import SHAPE, SPACING, assert_clean_error, good_image, run_many, tiny_payload

# ------------------------------------------------------------------------------ checkpoints checked on load


def crafted(dataset: Path, folder: Path, name: str, change, in_channels: int = 1) -> Path:
    """The tiny checkpoint with ``change(payload)`` applied, written as ``folder/name.pt``."""
    payload = tiny_payload(dataset, in_channels)
    change(payload)
    path = folder / f"{name}.pt"
    write_payload(payload, path)
    return path


def set_pre(key, value):
    return lambda p: p["preprocess"].__setitem__(key, value)


def set_op(key, value):
    return lambda p: p["operating_point"].__setitem__(key, value)


def first_weight(p: dict) -> str:
    return next(iter(p["state_dict"]))


# case -> (change, words the one error line must hold)
VALUE_CASES = {
    "spacing_zero": (set_pre("spacing", [0.0, 1.0, 1.0]), "preprocess.spacing"),
    "spacing_nan": (set_pre("spacing", [math.nan, 1.0, 1.0]), "preprocess.spacing"),
    "spacing_negative": (set_pre("spacing", [1.0, -1.0, 1.0]), "preprocess.spacing"),
    "spacing_two_numbers": (set_pre("spacing", [1.0, 1.0]), "preprocess.spacing"),
    "spacing_text": (set_pre("spacing", ["1", "1", "1"]), "preprocess.spacing"),
    "normalize_unknown": (set_pre("normalize", "whiten"), "preprocess.normalize"),
    "background_unknown": (set_pre("background", "black"), "preprocess.background"),
    "in_channels_zero": (set_pre("in_channels", 0), "preprocess.in_channels"),
    "channels_count": (lambda p: p["preprocess"].update(in_channels=2, channels=["FLAIR"]), "preprocess.channels"),
    "ct_without_stats": (set_pre("normalize", "ct"), "preprocess.ct_stats"),
    "ct_zero_std": (
        lambda p: p["preprocess"].update(normalize="ct", ct_stats=[[-100, 200, 40, 0]]),
        "preprocess.ct_stats",
    ),
    "classes_empty": (set_pre("classes", []), "preprocess.classes"),
    "classes_repeated": (set_pre("classes", ["lesion", "lesion"]), "preprocess.classes"),
    "classes_text": (set_pre("classes", "lesion"), "preprocess.classes"),
    "class_traversal": (set_pre("classes", ["../../escaped"]), "path separator"),
    "class_backslash": (set_pre("classes", ["..\\escaped"]), "path separator"),
    "class_dotdot": (set_pre("classes", [".."]), "starts with"),
    "class_hidden": (set_pre("classes", [".hidden"]), "starts with"),
    "class_option": (set_pre("classes", ["-rf"]), "starts with"),
    "class_nul": (set_pre("classes", ["a\x00b"]), "contains"),
    "class_newline": (set_pre("classes", ["a\nb"]), "contains"),
    "class_long": (set_pre("classes", ["x" * 101]), "characters long"),
    "threshold_above_one": (set_op("threshold", 1.5), "operating_point.threshold"),
    "threshold_nan": (set_op("threshold", math.nan), "operating_point.threshold"),
    "min_volume_negative": (set_op("min_lesion_mm3", -1.0), "operating_point.min_lesion_mm3"),
    "min_volume_inf": (set_op("min_lesion_mm3", math.inf), "operating_point.min_lesion_mm3"),
    "state_dict_not_tensors": (lambda p: p.update(state_dict={"w": [1, 2]}), "state_dict"),
    "tracking_uri_not_text": (lambda p: p.update(tracking_uri=5), "tracking_uri"),
}

# case -> (change, in_channels of the weights, words): the values are fine, the weights do not fit them
WEIGHT_CASES = {
    "two_channels_one_channel_weights": (set_pre("in_channels", 2), 1, "shape"),
    "one_channel_two_channel_weights": (set_pre("in_channels", 1), 2, "shape"),
    "two_classes_one_output": (set_pre("classes", ["edema", "core"]), 1, "shape"),
    "tensor_missing": (lambda p: p["state_dict"].pop(first_weight(p)), 1, "missing"),
    "tensor_unexpected": (lambda p: p["state_dict"].__setitem__("extra.weight", torch.zeros(2)), 1, "unexpected"),
    "other_network": (lambda p: p["config"]["model"].__setitem__("channels", [8, 16, 32]), 1, "shape"),
    "weights_nan": (lambda p: p["state_dict"][first_weight(p)].fill_(math.nan), 1, "NaN"),
}


def assert_one_line(exc: MedsegError, path: Path, words: str) -> None:
    message = str(exc)
    assert exc.exit_code == 2 and "\n" not in message, message
    assert message.startswith(f"{path}: ") and words in message and "; " in message, message


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_crafted_values_are_refused_on_load(good_dataset, tmp_path, case):
    change, words = VALUE_CASES[case]
    path = crafted(good_dataset, tmp_path, case, change)
    with pytest.raises(MedsegError) as caught:
        load_checkpoint(path)
    assert_one_line(caught.value, path, words)


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_weights_that_do_not_match_the_config_are_refused(good_dataset, tmp_path, case):
    change, in_channels, words = WEIGHT_CASES[case]
    path = crafted(good_dataset, tmp_path, case, change, in_channels)
    with pytest.raises(MedsegError) as caught:
        load_model(path, "cpu")
    assert_one_line(caught.value, path, words)
    assert "weights do not match its config" in str(caught.value) and "use the best.pt written with it" in str(
        caught.value
    )


def test_ensemble_members_must_preprocess_alike(good_dataset, tmp_path):
    first = crafted(good_dataset, tmp_path, "first", lambda p: None)
    other = crafted(good_dataset, tmp_path, "other", set_pre("spacing", [1.0, 1.0, 1.0]))
    with pytest.raises(MedsegError) as caught:
        load_model([first, other], "cpu")
    assert_one_line(caught.value, other, "spacing")
    assert str(first) in str(caught.value)


def test_cli_refuses_crafted_checkpoints_and_writes_nothing(good_dataset, good_scans, tmp_path):
    """As a user meets them: exit 2, one line naming the checkpoint, no mask, nothing outside --out."""
    cases = {
        "class_traversal": set_pre("classes", ["../../escaped"]),
        "two_channels_one_channel_weights": set_pre("in_channels", 2),
    }
    paths = {case: crafted(good_dataset, tmp_path, case, change) for case, change in cases.items()}
    out = tmp_path / "sandbox" / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    runs = run_many(
        [("predict", paths[case], good_scans[0], "--out", out / case, "--device", "cpu", "--quiet") for case in cases]
    )
    for case, res in zip(cases, runs):
        assert_clean_error(res, paths[case].name, ("class", "weights"), code=2)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # not a mask, not a folder, anywhere


# ----------------------------------------------------------------------------------------------- tune


def closed_port_uri() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run_folder(dataset: Path, folder: Path, seed: int, run_id: str | None, uri: str | None) -> Path:
    """A training run folder (config.yaml, best.pt) whose checkpoint names ``run_id`` in ``uri``."""
    payload = tiny_payload(dataset, seed=seed) | {"mlflow_run_id": run_id, "tracking_uri": uri}
    (folder / "config.yaml").parent.mkdir(parents=True)
    (folder / "config.yaml").write_text("{}\n")
    write_payload(payload, folder / "best.pt")
    return folder / "best.pt"


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_tune_writes_every_member_then_warns_when_mlflow_is_down(good_dataset, tmp_path, monkeypatch, capsys):
    from medseg.calibration.tune import run_tune

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = closed_port_uri()
    members = [run_folder(good_dataset, tmp_path / "cv" / f"fold{k}" / "run", k, f"run{k}", uri) for k in range(2)]
    res = run_tune(tmp_path / "cv", device="cpu", tracking_uri=uri)
    assert sorted(res["checkpoints"]) == members and res["logged"] == []
    for path in members:
        point = load_checkpoint(path).operating_point
        assert point.target == "max_f1" and point.threshold == res["chosen"]["threshold"]
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "not logged" in lines[0] and uri in lines[0], lines


def test_tune_never_writes_to_a_store_the_checkpoint_names(good_dataset, tmp_path, monkeypatch, capsys):
    from medseg.calibration.tune import run_tune

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    uri = f"sqlite:///{elsewhere / 'planted.db'}"
    best = run_folder(good_dataset, tmp_path / "run", 0, "abc", uri)
    res = run_tune(best, device="cpu")
    assert res["logged"] == [] and load_checkpoint(best).operating_point.target == "max_f1"
    assert list(elsewhere.iterdir()) == []
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and str(best) in lines[0] and "--tracking-uri" in lines[0], lines
    res = run_tune(
        best, device="cpu", tracking_uri=closed_port_uri()
    )  # another store than the checkpoint's: not logged either
    assert res["logged"] == [] and list(elsewhere.iterdir()) == []


def test_tune_logs_to_the_store_the_user_names(good_dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from medseg.calibration.tune import run_tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("tune")
    run_id = client.create_run(experiment).info.run_id
    best = run_folder(good_dataset, tmp_path / "run", 0, run_id, uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the user names the checkpoint's store: logged there
    assert run_tune(best, device="cpu")["logged"] == [run_id]
    assert "tuned_threshold" in client.get_run(run_id).data.metrics
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")
    assert [c.info.run_name for c in children] == ["tune-max_f1"]


# ---------------------------------------------------------------------------------------------- serving


def served(checkpoint: Path, monkeypatch, root: Path | None = None) -> MedsegModel:
    """The pyfunc model as ``mlflow models serve`` builds it (pyfunc_entry, then load_context)."""
    if root is None:
        monkeypatch.delenv(ROOT_ENV, raising=False)
    else:
        monkeypatch.setenv(ROOT_ENV, str(root))
    model = MedsegModel()
    model.load_context(SimpleNamespace(artifacts={"checkpoint": str(checkpoint)}))
    return model


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def listing(*folders: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for folder in folders
        for p in sorted(folder.rglob("*"))
    }


def as_nrrd(scan: Path, dest: Path) -> Path:
    sitk.WriteImage(sitk.ReadImage(str(scan)), str(dest), True)
    return dest


def test_served_model_takes_bytes_and_writes_nothing_outside_its_temp_folder(tiny_checkpoint, tmp_path, monkeypatch):
    model = served(tiny_checkpoint, monkeypatch)
    folder, cwd, tmp = tmp_path / "scans", tmp_path / "cwd", tmp_path / "tmp"
    for f in (cwd, tmp):
        f.mkdir()
    scan = save_nifti(good_image(21), oblique_affine(SPACING), folder / "scan.nii.gz")
    nrrd = as_nrrd(scan, folder / "scan.nrrd")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    before = listing(folder, cwd, tmp)
    out = model.predict(None, pd.DataFrame({"scan": [b64(scan), b64(nrrd)]}))
    assert listing(folder, cwd, tmp) == before  # nothing beside the scans, in the cwd, nor left in the temp folder
    assert list(out.columns) == ["mask", "lesions", "unlike_training"] and len(out) == 2
    (cwd / "m.nii.gz").write_bytes(base64.b64decode(out["mask"][0]))
    mask, ref = nib.load(str(cwd / "m.nii.gz")), nib.load(str(scan))
    assert (
        mask.shape == SHAPE
        and np.allclose(mask.affine, ref.affine)
        and set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}
    )
    rows = json.loads(out["lesions"][0])
    assert sum(r["voxels"] for r in rows) == int(np.asanyarray(mask.dataobj).sum())
    (cwd / "m.nrrd").write_bytes(base64.b64decode(out["mask"][1]))
    got, want = sitk.ReadImage(str(cwd / "m.nrrd")), sitk.ReadImage(str(nrrd))
    assert got.GetSize() == want.GetSize() and np.allclose(got.GetOrigin(), want.GetOrigin())
    assert np.allclose(got.GetSpacing(), want.GetSpacing()) and np.allclose(got.GetDirection(), want.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(got), np.asanyarray(mask.dataobj).transpose(2, 1, 0))


def refused(model: MedsegModel, request, *words: str, params: dict | None = None) -> str:
    with pytest.raises(MlflowException) as caught:
        model.predict(None, request, params=params)
    message = caught.value.message
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_paths_are_refused_without_a_serve_root(tiny_checkpoint, good_scans, monkeypatch):
    model = served(tiny_checkpoint, monkeypatch)
    refused(model, pd.DataFrame({"path": [str(good_scans[0])]}), "paths are refused", ROOT_ENV)
    refused(model, [str(good_scans[0])], "paths are refused")  # a plain list of paths, the earlier input
    refused(model, pd.DataFrame({"scan": [str(good_scans[0])]}), "not base64", "looks like a path")


def test_paths_resolving_inside_the_serve_root_only(tiny_checkpoint, tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    scan = save_nifti(good_image(22), oblique_affine(SPACING), root / "cases" / "scan.nii.gz")
    secret = save_nifti(good_image(23), oblique_affine(SPACING), outside / "secret.nii.gz")
    (root / "cases" / "link.nii.gz").symlink_to(secret)
    (root / "cases" / "text.nii.gz").write_text("not a scan")
    model = served(tiny_checkpoint, monkeypatch, root)
    before = listing(root, outside)
    ok = model.predict(None, pd.DataFrame({"path": ["cases/scan.nii.gz", str(scan)]}))
    assert len(ok) == 2 and ok["mask"][0] == ok["mask"][1]
    for trick in (
        str(secret),
        "../outside/secret.nii.gz",
        "cases/../../outside/secret.nii.gz",
        "cases/link.nii.gz",
        f"{root}/../outside/secret.nii.gz",
    ):
        refused(model, pd.DataFrame({"path": [trick]}), "outside the folder this server reads")
    refused(model, pd.DataFrame({"path": ["cases/none.nii.gz"]}), "no such file")
    refused(model, pd.DataFrame({"path": ["cases/text.nii.gz"]}), "is not a single-file NIfTI")
    assert listing(root, outside) == before


def test_bad_requests_are_refused(tiny_checkpoint, good_scans, tmp_path, monkeypatch):
    model = served(tiny_checkpoint, monkeypatch)
    text = base64.b64encode(b"hello, not a scan").decode()
    refused(model, pd.DataFrame({"scan": ["@@not base64@@"]}), "row 0", "not base64")
    refused(model, pd.DataFrame({"scan": [text]}), "row 0", "not a single-file NIfTI")
    detached = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: /etc/hostname\n\n"
    refused(model, pd.DataFrame({"scan": [base64.b64encode(detached).decode()]}), "data file")
    refused(model, pd.DataFrame({"scan": [b64(good_scans[0])], "path": ["x.nii.gz"]}), "row 0", "scan")
    refused(model, pd.DataFrame({"other": ["x"]}), "no scan column")
    flat = save_nifti(good_image(24)[:, :, 0], oblique_affine(SPACING), tmp_path / "flat.nii.gz")
    message = refused(model, pd.DataFrame({"scan": [b64(flat)]}), "request row 0, column 'scan'", "3D")
    assert "medseg-serve" not in message  # the client is told its row and column, not the server's temporary path
    target = tmp_path / "written_here"
    with pytest.raises(MlflowException, match="not one of threshold"):
        model.predict(None, pd.DataFrame({"scan": [b64(good_scans[0])]}), params={"out_dir": str(target)})
    assert not target.exists()
    request = pd.DataFrame({"scan": [b64(good_scans[0])]})
    for bad in ({"threshold": 1.5}, {"threshold": "0.5"}, {"tta": "yes"}, {"min_confidence": -0.1}):
        refused(model, request, f"request parameter {next(iter(bad))!r}", params=bad)
    flat_mask = save_nifti(np.ones(SHAPE[:2], np.uint8), oblique_affine(SPACING), tmp_path / "flat_mask.nii.gz")
    message = refused(model, request.assign(mask=[b64(flat_mask)]), "request row 0, column 'mask'", "grid")
    assert "medseg-serve" not in message


def test_operating_point_and_region_mask_in_a_request(tiny_checkpoint, good_scans, tmp_path, monkeypatch):
    """params move the operating point as predict's options do; a ``mask`` column removes lesions
    outside the region, as ``predict --mask``."""
    model = served(tiny_checkpoint, monkeypatch)
    request = pd.DataFrame({"scan": [b64(good_scans[0])]})

    def voxels(out) -> int:
        mask = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(out["mask"][0])))
        return int(np.asanyarray(mask.dataobj).sum())

    default = voxels(model.predict(None, request))
    low = voxels(model.predict(None, request, params={"threshold": 0.01, "min_lesion_mm3": 0.0, "tta": False}))
    high = voxels(model.predict(None, request, params={"threshold": 0.99, "min_confidence": None}))
    assert low > default >= high and low > 0
    empty = np.zeros(SHAPE, np.uint8)
    empty[:2, :2, :2] = 1  # a region in a corner: every lesion lies outside it
    corner = save_nifti(empty, nib.load(str(good_scans[0])).affine, tmp_path / "corner.nii.gz")
    low_request = {"threshold": 0.01, "min_lesion_mm3": 0.0}
    assert voxels(model.predict(None, request.assign(mask=[b64(corner)]), params=low_request)) == 0


def test_one_file_per_channel(good_dataset, good_scans, tmp_path, monkeypatch):
    path = crafted(
        good_dataset, tmp_path, "two_channel", lambda p: p["preprocess"].update(channels=["FLAIR", "T1"]), in_channels=2
    )
    model = served(path, monkeypatch)
    out = model.predict(None, pd.DataFrame({"channel0": [b64(good_scans[0])], "channel1": [b64(good_scans[1])]}))
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(out["mask"][0])))
    assert mask.shape == SHAPE and np.allclose(mask.affine, nib.load(str(good_scans[0])).affine)
    refused(model, pd.DataFrame({"scan": [b64(good_scans[0])]}), "request row 0, column 'scan'", "channel")
    refused(model, pd.DataFrame({"channel0": [b64(good_scans[0])]}), "channel0..channel1")


def test_logged_model_takes_base64_through_mlflow(tiny_checkpoint, good_scans, tmp_path, monkeypatch):
    import mlflow.pyfunc

    monkeypatch.delenv(ROOT_ENV, raising=False)
    folder = save_pyfunc(tiny_checkpoint, tmp_path / "model")
    loaded = mlflow.pyfunc.load_model(str(folder))
    inputs = {spec.name: spec.required for spec in loaded.metadata.signature.inputs.inputs}
    assert inputs == {"scan": False, "path": False, "mask": False}
    assert [p.name for p in loaded.metadata.signature.params.params] == [
        "threshold",
        "min_lesion_mm3",
        "min_confidence",
        "tta",
    ]
    example = pd.read_json(folder / "input_example.json", orient="split")
    assert list(example.columns) == ["scan"]
    out = loaded.predict(pd.DataFrame({"scan": [b64(good_scans[0])]}))
    assert list(out.columns) == ["mask", "lesions", "unlike_training"] and len(out) == 1
    with pytest.raises(MlflowException, match="paths are refused"):
        loaded.predict(pd.DataFrame({"path": [str(good_scans[0])]}))


# ------------------------------------------------------------------------------------------ disk cache


def test_cache_follows_a_scan_replaced_in_place(good_dataset, tmp_path):
    import shutil

    from medseg.data.sources.discover import find_cases
    from medseg.planning.resolve import plan_of_config
    from medseg.training.loaders import make_datasets
    from tests.robustness.conftest import tiny_config

    data = tmp_path / "data"
    shutil.copytree(good_dataset, data)
    cfg = tiny_config(data)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"cache_dir": tmp_path / "cache"})})
    cases = find_cases(data)
    _, val = make_datasets(cfg, cases, cases[:1], plan_of_config(cfg))
    old = val[0]["image"].clone()
    assert torch.equal(val[0]["image"], old)  # served from the cache
    image = Path(cases[0].images[0])
    affine = nib.load(str(image)).affine
    save_nifti(good_image(77), affine, image)  # same path, same shape, other voxels
    _, again = make_datasets(cfg, cases, cases[:1], plan_of_config(cfg))
    new = again[0]["image"]
    cold = make_datasets(
        cfg.model_copy(update={"data": cfg.data.model_copy(update={"cache_dir": tmp_path / "cold"})}),
        cases,
        cases[:1],
        plan_of_config(cfg),
    )[1][0]["image"]
    assert not torch.equal(new, old) and torch.equal(new, cold)
    assert len(list((tmp_path / "cache" / "val").glob("*.pt"))) == 2


def test_a_config_asking_for_a_huge_network_is_refused_before_allocating(tmp_path, good_dataset):
    """Weights of a tiny network under a config of 100000-channel levels: compared on the meta
    device, refused with one line, under a 3 GiB data cap that building it (terabytes) would break."""
    import subprocess
    import sys

    from medseg.nn.checkpoint import write_payload
    from tests.robustness.conftest import tiny_payload

    payload = tiny_payload(good_dataset)
    payload["config"]["model"]["channels"] = [100000, 200000, 400000]
    path = tmp_path / "huge.pt"
    write_payload(payload, path)
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))\n"
        "from medseg.inference.model import load_model\nfrom medseg.errors import MedsegError\n"
        f"try:\n    load_model({str(path)!r}, 'cpu')\nexcept MedsegError as err:\n    print('REFUSED', err)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "REFUSED" in res.stdout and "do not match its config" in res.stdout, res.stderr[
        -2000:
    ]
