"""Bad files.

Scans: ``medseg predict`` on ONE batch of every bad scan mixed with good ones (one CLI run for the
whole group, so the catalogue stays fast); each test checks its own bad file: one clean ``error:``
line naming it, no mask or temporary file for it, and the good scans still segmented (exit 1).

Training data: ``medseg train`` on a dataset with one bad case: refused before anything is written
(no run folder), one ``error:`` line naming the bad file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import oblique_affine
from tests.robustness import badfiles
from tests.robustness.conftest import (
    DEMO,
    IS_ROOT,
    SHAPE,
    SPACING,
    TINY_TRAIN,
    assert_clean_error,
    assert_mask_loads,
    assert_no_partials,
    describe,
    error_lines,
    good_cases,
    lesion_label,
    limit_memory,
    mask_path,
    params_skipping_as_root,
    run_cli,
    run_many,
    write_dataset,
)

# case -> (words of which the error line must contain one, how it may also be handled)
SCAN_CASES = {
    "empty": ("empty", "0 bytes"),
    "truncated_gz": ("truncated", "corrupt", "damaged", "ended before", "EOF"),
    "truncated_nii": ("truncated", "corrupt", "damaged", "bytes"),
    "gzip_not_nifti": ("not a nifti", "file type", "not an image", "header"),
    "not_gzip": ("not a gzip", "corrupt", "header"),
    "huge_dims": ("30000", "too large", "TB", "TiB", "more voxels", "bytes"),
    "two_d": ("2 spatial", "2D", "3D"),
    "five_d": ("5D", "5 dimension", "5 spatial", "(24, 24, 16, 2, 2)"),
    "zero_spacing": ("spacing", "pixdim"),
    "negative_spacing": ("spacing", "pixdim", "negative"),
    "nonfinite_affine": ("NaN", "infinite", "non-finite"),
    "nan_voxels": ("NaN",),
    "inf_voxels": ("infinite", "Inf"),
    "unreadable": ("permission", "denied", "access"),
    "symlink_loop": ("symlink", "symbolic link", "loop", "too many levels"),
}
# a negative pixdim has one obvious repair (its absolute value): segmenting with a warning is fine
WARNING_OK = {"negative_spacing"}


def bad_name(case: str) -> str:
    return f"bad_{case}" + (".nii" if case == "truncated_nii" else ".nii.gz")


@pytest.fixture(scope="session")
def scan_batch(robust_root, tiny_checkpoint, good_scans):
    """One ``medseg predict`` over every bad scan plus the good ones (memory capped, time limited)."""
    folder = robust_root / "badscans"
    bad = {}
    for case in SCAN_CASES:
        if case == "unreadable" and IS_ROOT:
            continue  # root reads a chmod-000 file anyway
        bad[case] = getattr(badfiles, case)(folder / bad_name(case))
    out = robust_root / "pred_badscans"
    res = run_cli(
        "predict",
        tiny_checkpoint,
        good_scans[0],
        *bad.values(),
        *good_scans[1:],
        "--out",
        out,
        "--device",
        "cpu",
        "--quiet",
        timeout=300,
        preexec_fn=limit_memory(12),
    )
    return res, out, bad, good_scans


@pytest.mark.parametrize("case", params_skipping_as_root(SCAN_CASES, {"unreadable": "a chmod-000 file stays readable"}))
def test_bad_scan_in_batch(scan_batch, case):
    res, out, bad, good = scan_batch
    path = bad[case]
    # the batch: exit 1, no traceback, every good scan segmented, nothing half-written
    assert res.returncode == 1, describe(res)
    assert "Traceback" not in res.stderr, describe(res)
    for scan in good:
        assert_mask_loads(mask_path(out, scan), SHAPE)
    assert_no_partials(out)
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning:") and path.name in line]
    if case in WARNING_OK and mask_path(out, path).exists() and warned:
        assert any(w.lower() in warned[0].lower() for w in SCAN_CASES[case]), warned[0]
        return
    named = [line for line in error_lines(res.stderr) if path.name in line]
    assert named, f"no 'error:' line names {path.name}; mask written: {mask_path(out, path).exists()}\n" + describe(res)
    assert_clean_error(res, path.name, SCAN_CASES[case])
    assert not mask_path(out, path).exists(), "a mask was written for the bad scan"
    assert not list(out.glob(f"{path.name.split('.')[0]}_*")), "side outputs written for the bad scan"


# ------------------------------------------------------------------------------------- training data


def _replace_label(root: Path, label: np.ndarray, index: int = 1) -> tuple[Path, str]:
    images, labels = good_cases(4)
    labels[index] = label
    return write_dataset(root, images, labels), f"labelsTr/c{index}.nii.gz"


def ds_int16_max(root):
    return (*_replace_label(root, lesion_label(1, value=32767, dtype=np.int16)), ("32767",))


def ds_float_labels(root):
    lab = lesion_label(1, dtype=np.float32) * 0.7
    lab[2:4, 2:4, 2:4] = 0.3
    return (*_replace_label(root, lab), ("fraction", "0.3", "0.7", "integer"))


def ds_label_outside_set(root):
    return (*_replace_label(root, lesion_label(1, value=5)), ("5",))


def ds_path_escapes(root):
    images, labels = good_cases(4)
    ds = write_dataset(root, images, labels)
    (root.parent / f"{root.name}_outside.nii.gz").write_bytes((ds / "imagesTr" / "c0.nii.gz").read_bytes())
    meta = json.loads((ds / "dataset.json").read_text())
    meta["training"][0]["image"] = f"../{root.name}_outside.nii.gz"
    (ds / "dataset.json").write_text(json.dumps(meta))
    return ds, "dataset.json", ("escapes", "outside")


def ds_shape_mismatch(root):
    return (*_replace_label(root, np.zeros((24, 24, 12), np.uint8)), ("shape",))


def ds_affine_mismatch(root):
    images, labels = good_cases(4)
    a = oblique_affine(SPACING)
    b = a.copy()
    b[:3, 3] += [3.0, 0, 0]  # 3 mm off
    return write_dataset(root, images, labels, label_affines=[a, b, a, a]), "labelsTr/c1.nii.gz", ("affine",)


def ds_truncated_label(root):
    ds, name = _replace_label(root, lesion_label(1))
    badfiles.truncated_gz(ds / name)
    return ds, name, ("truncated", "corrupt")


def ds_nan_image(root):
    images, labels = good_cases(4)
    ds = write_dataset(root, images, labels)
    badfiles.nan_voxels(ds / "imagesTr" / "c2.nii.gz")
    return ds, "imagesTr/c2.nii.gz", ("NaN",)


def ds_invalid_json(root):
    images, labels = good_cases(4)
    ds = write_dataset(root, images, labels)
    (ds / "dataset.json").write_text('{"training": [{"image": "./imagesTr/c0.nii.gz",}')
    return ds, "dataset.json", ("JSON",)


DATASET_CASES = {
    "int16_label_32767": ds_int16_max,
    "float_labels": ds_float_labels,
    "label_outside_declared_set": ds_label_outside_set,
    "path_escapes_root": ds_path_escapes,
    "label_shape_mismatch": ds_shape_mismatch,
    "label_affine_mismatch": ds_affine_mismatch,
    "truncated_label": ds_truncated_label,
    "nan_in_training_image": ds_nan_image,
    "dataset_json_invalid": ds_invalid_json,
}


@pytest.fixture(scope="session")
def dataset_runs(robust_root):
    """``medseg train`` on each broken dataset (two at a time)."""
    built, calls = {}, []
    for case, make in DATASET_CASES.items():
        ds, rel, words = make(robust_root / "datasets" / case)
        out = robust_root / "dataset_runs" / case
        built[case] = (ds / rel, words, out)
        calls.append(("train", DEMO, "--set", f"data.dataset={ds}", "--set", f"train.output_dir={out}", *TINY_TRAIN))
    return {case: (res, *built[case]) for case, res in zip(DATASET_CASES, run_many(calls))}


@pytest.mark.parametrize("case", DATASET_CASES)
def test_bad_training_case(dataset_runs, case):
    res, path, words, out = dataset_runs[case]
    assert_clean_error(res, str(path.relative_to(path.parents[1])) if path.name != "dataset.json" else str(path), words)
    assert not list(out.rglob("*.pt")), "checkpoints written for a dataset that should be refused"
    assert not out.exists() or not any(out.iterdir()), f"run folder created: {list(out.iterdir())}"
