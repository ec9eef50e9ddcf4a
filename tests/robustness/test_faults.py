"""Injected faults: SIGKILL in the middle of a predict batch, SIGTERM during training, disk full
while writing outputs.

The MLflow server going away in the middle of a training run is covered by
tests/test_mlflow_server.py::test_server_outage_mid_run_loses_nothing and not repeated here.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import oblique_affine, save_nifti
from tests.robustness.conftest import (
    DEMO,
    SHAPE,
    SPACING,
    TINY_TRAIN,
    assert_clean_error,
    assert_mask_loads,
    assert_no_partials,
    good_image,
    mask_path,
    partial_files,
    run_cli,
    start_cli,
)


def _wait_for(predicate, proc, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"medseg exited ({proc.returncode}) before {what}\n{err[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    pytest.fail(f"timed out waiting for {what}")


def test_sigkill_during_predict_batch(robust_root, tiny_checkpoint):
    """Killed after the first mask: every mask present is whole, nothing visible is half-written,
    and re-running with --skip-existing finishes the batch and clears the temporary files."""
    scans = [
        save_nifti(good_image(100 + i), oblique_affine(SPACING), robust_root / "kill_scans" / f"k{i:02d}.nii.gz")
        for i in range(10)
    ]
    out = robust_root / "pred_killed"
    proc = start_cli("predict", tiny_checkpoint, scans[0].parent, "--out", out, "--device", "cpu", "--quiet")
    _wait_for(lambda: [s for s in scans if mask_path(out, s).exists()], proc, 240, "the first mask")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    done = [s for s in scans if mask_path(out, s).exists()]
    assert 0 < len(done) < len(scans), f"kill did not land mid-batch ({len(done)} of {len(scans)} done)"
    for scan in done:
        assert_mask_loads(mask_path(out, scan), SHAPE)
    for table in out.glob("*_lesions.json"):
        json.loads(table.read_text())  # complete JSON
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    expected_names = {mask_path(out, s).name for s in done} | {
        f"{s.name[:-7]}_lesions.{e}" for s in scans for e in ("csv", "json")
    }
    assert visible <= expected_names, f"unexpected visible files after the kill: {visible - expected_names}"

    res = run_cli(
        "predict", tiny_checkpoint, scans[0].parent, "--out", out, "--device", "cpu", "--quiet", "--skip-existing"
    )
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    for scan in scans:
        assert_mask_loads(mask_path(out, scan), SHAPE)
    assert_no_partials(out)


def test_sigterm_during_training(robust_root, good_dataset):
    """SIGTERM after last.pt exists: the process ends within 30 s, without a traceback, and every
    checkpoint it leaves loads."""
    out = robust_root / "sigterm_runs"
    args = [*TINY_TRAIN, "--set", "train.epochs=200", "--set", "train.val_every=1"]
    proc = start_cli("train", DEMO, "--set", f"data.dataset={good_dataset}", "--set", f"train.output_dir={out}", *args)
    _wait_for(lambda: list(out.glob("*/last.pt")), proc, 240, "last.pt")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("training still running 30 s after SIGTERM")
    assert "Traceback" not in err, err[-3000:]
    import torch

    ckpts = list(out.glob("*/*.pt"))
    assert ckpts
    for path in ckpts:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert ckpt["format"].startswith("medseg-checkpoint") and ckpt["state_dict"], path
    assert not partial_files(out) and not list(out.glob("*/.*.pt.*")), list(out.rglob(".*"))


# ------------------------------------------------------------------------------------ disk full


class _Result:
    """``predict_files`` errors shaped like a CLI run, for assert_clean_error."""

    def __init__(self, errors: list[str]) -> None:
        self.returncode = 1 if errors else 0
        self.stderr = "".join(f"error: {e}\n" for e in errors)
        self.stdout = ""


def _enospc(name):
    return OSError(errno.ENOSPC, "No space left on device", str(name))


def test_disk_full_while_writing_mask(robust_root, tiny_checkpoint, good_scans, monkeypatch):
    """nibabel fills the disk halfway through the mask: the scan fails with one error line, the
    half-written temporary file is removed, no mask appears; the next scan still succeeds."""
    import nibabel as nib

    from medseg.inference.batch import PredictOptions, predict_files

    real_save, calls = nib.save, []

    def save_until_full(img, filename):
        calls.append(filename)
        if len(calls) == 1:
            Path(filename).write_bytes(b"\x1f\x8b" + b"\0" * 100)  # half a file...
            raise _enospc(filename)  # ...then the disk is full
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", save_until_full)
    out = robust_root / "pred_disk_full"
    rows, errors = predict_files(
        tiny_checkpoint,
        [str(good_scans[0]), str(good_scans[1])],
        out,
        "cpu",
        PredictOptions(table=False),
        progress=False,
    )
    assert_clean_error(_Result(errors), good_scans[0].name, ("space",))
    assert not mask_path(out, good_scans[0]).exists()
    assert [r["scan"] for r in rows] == [str(good_scans[1])]
    assert_mask_loads(mask_path(out, good_scans[1]), SHAPE)
    assert_no_partials(out)


def test_disk_full_on_every_rename(robust_root, tiny_checkpoint, good_scans, monkeypatch):
    """Every rename into place fails with ENOSPC (tables, mask, summary): each scan fails with one
    error line and no temporary file (``.*.partial-*``, ``.*.tmp``) is left behind."""
    import medseg.io.write

    def full(src, dst):
        raise _enospc(dst)

    monkeypatch.setattr(medseg.io.write.os, "replace", full)
    from medseg.inference.batch import PredictOptions, predict_files

    out = robust_root / "pred_disk_full_rename"
    rows, errors = predict_files(tiny_checkpoint, [str(good_scans[0])], out, "cpu", PredictOptions(), progress=False)
    assert rows == []
    assert_clean_error(_Result(errors), good_scans[0].name, ("space",))
    assert not mask_path(out, good_scans[0]).exists()
    assert_no_partials(out)
