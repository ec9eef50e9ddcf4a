"""ONNX export and the onnxruntime engine: the exported file carries the plan, operating point and
window settings (round trip), takes any batch and spatial size, and predict with onnxruntime gives
the probabilities of the torch path within 1e-4 on a volume larger than the window; tampered or
foreign files and missing extras are one clear error line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference.export import export_onnx, onnx_bytes
from medseg.inference.model import load_model
from medseg.inference.onnx_model import OnnxMetadata, OnnxWindows, load_onnx_model, open_session
from medseg.inference.predictor import predict_classes
from medseg.nn.checkpoint import write_payload
from medseg.nn.window import sliding_window_probs
from tests.conftest import cli, how_to_commands, oblique_affine, save_nifti
from tests.robustness.conftest import good_image, tiny_payload


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny 3D UNet (16^3 window, random weights, float32 inference)."""
    root = tmp_path_factory.mktemp("onnx_ckpt")
    payload = tiny_payload(root, seed=2)
    payload["operating_point"] = {"threshold": 0.42, "min_lesion_mm3": 3.0, "target": "recall>=0.9"}
    write_payload(payload, root / "best.pt")
    return root / "best.pt"


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    return export_onnx(checkpoint, tmp_path_factory.mktemp("exported")).path


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    """A 40x36x28 oblique scan: several 16^3 windows at the model's 1.5x1.5x2 mm spacing."""
    root = tmp_path_factory.mktemp("onnx_scan")
    return save_nifti(good_image(4, (40, 36, 28)), oblique_affine((1.4, 1.6, 2.1)), root / "scan.nii.gz")


def test_metadata_round_trip(checkpoint, exported):
    lm = load_model(checkpoint, "cpu")
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    meta = OnnxMetadata.from_props(props, exported)
    assert meta == OnnxMetadata(lm.plan, lm.operating_point, lm.icfg, lm.connectivity)
    assert meta.operating_point.threshold == 0.42 and meta.operating_point.target == "recall>=0.9"
    assert props["medseg.classes"] == '["lesion"]' and props["medseg.spacing"] == "[1.5, 1.5, 2.0]"
    assert props["medseg.normalize"] == "zscore_nonzero"
    onnx_lm = load_onnx_model(exported, "cpu")
    assert onnx_lm.plan == lm.plan and onnx_lm.operating_point == lm.operating_point
    assert onnx_lm.icfg.model_copy(update={"amp": lm.icfg.amp}) == lm.icfg and onnx_lm.icfg.amp == "off"


@pytest.mark.parametrize("shape", [(1, 1, 16, 16, 16), (2, 1, 32, 16, 48)])
def test_dynamic_batch_and_spatial_axes(checkpoint, exported, shape):
    model = load_model(checkpoint, "cpu").model
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = model(x), OnnxWindows(open_session(exported, "cpu"))(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)


def test_sliding_window_probabilities_match_torch(checkpoint, exported, scan):
    torch_lm, onnx_lm = load_model(checkpoint, "cpu"), load_onnx_model(exported, "cpu")
    assert torch_lm.icfg.amp == "off"  # float32 on both sides
    volume = torch.randn(1, 1, 40, 36, 28, generator=torch.Generator().manual_seed(3))
    assert all(v > w for v, w in zip(volume.shape[2:], torch_lm.plan.roi_size))  # several windows
    probs = [sliding_window_probs(lm.model, volume, lm.icfg, lm.plan.roi_size, lm.device) for lm in (torch_lm, onnx_lm)]
    assert probs[0].shape == (1, 1, 40, 36, 28) and float((probs[0] - probs[1]).abs().max()) < 1e-4
    on_grid = [predict_classes(lm, scan)[0] for lm in (torch_lm, onnx_lm)]  # the whole predict path, scan grid
    assert float(np.abs(on_grid[0].prob - on_grid[1].prob).max()) < 1e-4


def test_predict_engine_onnxruntime_on_the_command_line(tmp_path, checkpoint, scan):
    res = cli("export", checkpoint, "--format", "onnx", "--out", tmp_path / "exp")
    assert res.returncode == 0 and "max |logit difference|" in res.stdout, res.stderr[-2000:]
    model = tmp_path / "exp" / "model.onnx"
    for engine, source in (("torch", checkpoint), ("onnxruntime", model)):
        res = cli("predict", source, scan, "--out", tmp_path / engine, "--engine", engine, "--save-prob", "--quiet")
        assert res.returncode == 0, res.stderr[-2000:]
    prob = [np.asanyarray(nib.load(tmp_path / e / "scan_prob.nii.gz").dataobj) for e in ("torch", "onnxruntime")]
    assert np.abs(prob[0].astype(int) - prob[1].astype(int)).max() <= 1  # uint8 probabilities, one step at most
    assert nib.load(tmp_path / "onnxruntime" / "scan.nii.gz").shape == (40, 36, 28)


def test_wrong_model_for_the_engine_is_one_clear_error(tmp_path, checkpoint, exported, scan):
    res = cli("predict", exported, scan, "--out", tmp_path / "a")
    assert res.returncode == 2 and "add --engine onnxruntime" in res.stderr
    res = cli("predict", checkpoint, scan, "--out", tmp_path / "b", "--engine", "onnxruntime")
    assert res.returncode == 2 and "medseg export" in res.stderr and "Traceback" not in res.stderr


def test_foreign_and_tampered_onnx_files_are_refused(tmp_path, exported):
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(onnx_bytes(torch.nn.Conv3d(1, 1, 3, padding=1), (1, 1, 8, 8, 8)))
    with pytest.raises(MedsegError, match="not an ONNX model exported by medseg"):
        load_onnx_model(foreign, "cpu")
    proto = onnx.load(str(exported))
    for prop in proto.metadata_props:
        if prop.key == "medseg.classes":
            prop.value = '["lesion", "other"]'
    onnx.save(proto, str(tmp_path / "tampered.onnx"))
    with pytest.raises(MedsegError, match="differ from the plan"):
        load_onnx_model(tmp_path / "tampered.onnx", "cpu")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(MedsegError, match="not a loadable ONNX model"):
        load_onnx_model(tmp_path / "junk.onnx", "cpu")


@pytest.mark.parametrize(
    "missing, args, extra",
    [
        ("onnxruntime", ["predict", "m.onnx", "s.nii.gz", "--engine", "onnxruntime"], "--engine onnxruntime"),
        ("onnx", ["export", "best.pt"], "medseg export"),
    ],
)
def test_missing_extra_is_named(tmp_path, checkpoint, missing, args, extra):
    args = [checkpoint if a == "best.pt" else a for a in args] + ["--out", tmp_path / "out"]
    code = (
        f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['medseg'] + sys.argv[1:]; "
        "from medseg.cli.app import main; main()"
    )
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert extra in lines[0] and "pip install 'medseg[onnx]'" in lines[0] and not (tmp_path / "out").exists()


def test_the_how_to_commands_run_as_written(tmp_path, checkpoint, scan):
    (tmp_path / "runs" / "20261123-101500").mkdir(parents=True)
    shutil.copy(checkpoint, tmp_path / "runs" / "20261123-101500" / "best.pt")
    (tmp_path / "scans").mkdir()
    shutil.copy(scan, tmp_path / "scans" / "scan.nii.gz")
    commands = how_to_commands("how-to/export.md")
    assert [c[0] for c in commands] == ["export", "predict"]
    for args in commands:
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    assert (tmp_path / "exported" / "model.onnx").is_file() and (tmp_path / "masks" / "scan.nii.gz").is_file()
