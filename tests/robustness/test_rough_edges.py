"""The rough edges a new user hit (issue 16): a blank scan gets an empty mask, the demo config
says how to make its data, two inputs never share one output, outputs are readable by others."""

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import cli, oblique_affine, save_nifti
from tests.robustness.conftest import DEMO, SHAPE, SPACING, TRACEBACK, cli_env, good_image, mask_path, run_cli


def test_blank_scan_gets_an_empty_mask_on_its_own_grid(robust_root, tiny_checkpoint, good_scans):
    affine = oblique_affine(SPACING)
    blank = save_nifti(np.zeros(SHAPE, np.float32), affine, robust_root / "blank" / "blank.nii.gz")
    out = robust_root / "pred_blank"
    res = run_cli(
        "predict", str(tiny_checkpoint), str(blank), str(good_scans[0]), "--out", str(out), "--device", "cpu", "--quiet"
    )
    assert res.returncode == 0, res.stderr
    assert "warning:" in res.stderr and "blank.nii.gz" in res.stderr and TRACEBACK not in res.stderr
    mask = nib.load(str(mask_path(out, blank)))
    assert mask.shape == SHAPE and np.allclose(mask.affine, affine, atol=1e-4) and not np.asanyarray(mask.dataobj).any()
    table = (out / "blank_lesions.csv").read_text().strip().splitlines()
    assert len(table) == 1 and table[0].startswith("id,")  # header, zero rows
    assert mask_path(out, good_scans[0]).exists()


def test_demo_config_without_its_data_says_how_to_make_it(tmp_path):
    res = run_cli("train", DEMO, "--set", f"data.dataset={tmp_path / 'demo_out' / 'data'}", "--quiet")
    assert res.returncode != 0 and TRACEBACK not in res.stderr
    assert "medseg synth" in res.stderr and "medseg demo" in res.stderr


def test_two_inputs_never_share_an_output(tmp_path, tiny_checkpoint):
    folder = tmp_path / "twins"
    save_nifti(good_image(1), oblique_affine(SPACING), folder / "twin.nii.gz")
    a = nib.load(str(folder / "twin.nii.gz"))
    nib.save(nib.Nifti1Image(good_image(2), a.affine), str(folder / "twin.nii"))
    out = tmp_path / "out"
    res = run_cli("predict", str(tiny_checkpoint), str(folder), "--out", str(out), "--device", "cpu", "--quiet")
    assert res.returncode != 0 and TRACEBACK not in res.stderr
    assert "twin.nii " in res.stderr + " " and "twin.nii.gz" in res.stderr
    assert not out.exists() or not any(out.iterdir())  # refused before writing anything


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_have_plain_write_permissions(tmp_path, tiny_checkpoint, good_scans, umask, mode):
    out = tmp_path / "out"
    res = cli(*predict_args(tiny_checkpoint, good_scans[0], out), env=cli_env(), umask=umask)
    assert res.returncode == 0, res.stderr
    for path in [
        mask_path(out, good_scans[0]),
        out / "summary.csv",
        out / f"{Path(mask_path(out, good_scans[0])).name[:-7]}_lesions.csv",
    ]:
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def test_checkpoints_have_plain_write_permissions(tmp_path):
    import torch

    from medseg.nn.checkpoint import write_payload

    old = os.umask(0o022)
    try:
        write_payload({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "best.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "best.pt").st_mode) == 0o644


def predict_args(checkpoint: Path, scan: Path, out: Path) -> list[str]:
    return ["predict", str(checkpoint), str(scan), "--out", str(out), "--device", "cpu", "--quiet", "--save-prob"]
