"""Bad models given to ``medseg predict``: refused with one ``error:`` line naming the checkpoint
(or the scan it cannot handle), no masks written, and a pickle that would run code never runs."""

from __future__ import annotations

import os

import pytest
import torch

from tests.robustness.conftest import assert_clean_error, assert_no_partials, describe, run_many, tiny_payload


class RunsCode:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def make_text(folder):
    path = folder / "notes.pt"
    path.write_text("epoch 12: dice 0.81\n")
    return path


def make_nifti_as_model(folder, scan):
    path = folder / "scan_as_model.pt"
    path.write_bytes(scan.read_bytes())
    return path


def make_plain_torch(folder):
    path = folder / "plain_state_dict.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    return path


def make_truncated(folder, good_ckpt):
    path = folder / "truncated.pt"
    data = good_ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_missing_keys(folder, dataset):
    from medseg.nn.checkpoint import FORMAT

    payload = tiny_payload(dataset)
    del payload["preprocess"], payload["operating_point"]
    path = folder / "missing_keys.pt"
    torch.save({"format": FORMAT, **payload}, path)
    return path


def make_runs_code(folder, dataset):
    from medseg.nn.checkpoint import FORMAT

    path = folder / "runs_code.pt"
    torch.save({"format": FORMAT, **tiny_payload(dataset), "extra": RunsCode(str(folder / "MARKER"))}, path)
    assert not (folder / "MARKER").exists()
    return path


def make_two_channel(folder, dataset):
    from medseg.nn.checkpoint import write_payload

    path = folder / "two_channel.pt"
    write_payload(tiny_payload(dataset, in_channels=2), path)
    return path


# case -> (name the error line must contain: "model" = the checkpoint's file name, else a scan; problem words)
MODEL_CASES = {
    "text_file": ("model", ("not a loadable", "not a medseg checkpoint", "checkpoint")),
    "nifti_as_model": ("model", ("not a loadable", "not a medseg checkpoint", "checkpoint")),
    "plain_torch_file": ("model", ("not a medseg checkpoint", "format", "marker")),
    "truncated_checkpoint": ("model", ("not a loadable", "truncated", "corrupt")),
    "checkpoint_missing_keys": ("model", ("missing", "preprocess", "incomplete")),
    "pickle_runs_code": ("model", ("not a loadable", "refused", "unsafe", "weights_only", "code")),
    "two_channel_model": ("scan", ("channel",)),
}


@pytest.fixture(scope="session")
def model_runs(robust_root, tiny_checkpoint, good_dataset, good_scans):
    folder = robust_root / "models"
    folder.mkdir()
    models = {
        "text_file": make_text(folder),
        "nifti_as_model": make_nifti_as_model(folder, good_scans[0]),
        "plain_torch_file": make_plain_torch(folder),
        "truncated_checkpoint": make_truncated(folder, tiny_checkpoint),
        "checkpoint_missing_keys": make_missing_keys(folder, good_dataset),
        "pickle_runs_code": make_runs_code(folder, good_dataset),
        "two_channel_model": make_two_channel(folder, good_dataset),
    }
    outs = {case: robust_root / "pred_models" / case for case in models}
    calls = [
        ("predict", model, *good_scans[:2], "--out", outs[case], "--device", "cpu", "--quiet")
        for case, model in models.items()
    ]
    return {case: (res, models[case], outs[case]) for case, res in zip(models, run_many(calls))}, folder


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model(model_runs, good_scans, case):
    runs, folder = model_runs
    res, model, out = runs[case]
    who, words = MODEL_CASES[case]
    if case == "pickle_runs_code":
        assert not (folder / "MARKER").exists(), "the checkpoint's pickled code RAN"
    if who == "model":
        assert_clean_error(res, model.name, words, code=2)
    else:  # the model loads; every scan fails the same way: one line per scan
        assert res.returncode != 0, describe(res)
        for scan in good_scans[:2]:
            assert_clean_error(res, scan.name, words)
    masks = sorted(out.glob("*.nii.gz")) if out.exists() else []
    assert not masks, f"masks written with a bad model: {masks}"
    assert_no_partials(out)
