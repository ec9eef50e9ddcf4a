"""`medseg check`: every problem of a dataset found at once, one line each naming the file."""

import gzip
import json

import numpy as np
from conftest import cli, oblique_affine, save_nifti

from medseg.data.check import check_dataset, format_report
from medseg.data.sources.discover import discover

SHAPE = (10, 10, 8)


def vol(seed=0):
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32) + 1


def lab(value=1):
    out = np.zeros(SHAPE, np.uint8)
    out[3:6, 3:6, 3:5] = value
    return out


def make(root, affine, n=2):
    """nnU-Net v2 folder with two channels (T2, ADC) and labels {0, 1}."""
    for i in range(n):
        for ch in range(2):
            save_nifti(vol(ch), affine, root / "imagesTr" / f"c{i}_{ch:04d}.nii.gz")
        save_nifti(lab(), affine, root / "labelsTr" / f"c{i}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2", "1": "ADC"},
                "labels": {"background": 0, "lesion": 1},
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def test_clean_dataset_has_no_problems(tmp_path, affine):
    assert check_dataset(discover(make(tmp_path / "d", affine))) == []


def test_every_problem_reported_once_naming_its_file(tmp_path, affine):
    root = make(tmp_path / "d", affine, n=9)
    img, lbl = root / "imagesTr", root / "labelsTr"
    data = (img / "c0_0000.nii.gz").read_bytes()
    (img / "c0_0000.nii.gz").write_bytes(data[: len(data) // 2])  # truncated
    save_nifti(np.zeros((12, 10, 8), np.uint8), affine, lbl / "c1.nii.gz")  # label shape
    shifted = affine.copy()
    shifted[:3, 3] += 2.0
    save_nifti(lab(), shifted, lbl / "c2.nii.gz")  # label affine
    save_nifti(vol(1), oblique_affine(angle_deg=20), img / "c3_0001.nii.gz")  # channel grid
    save_nifti(lab(5), affine, lbl / "c4.nii.gz")  # undeclared value
    bad = vol()
    bad[1, 1, 1] = np.nan
    save_nifti(bad, affine, img / "c5_0000.nii.gz")  # NaN voxel
    save_nifti(np.ones((10, 10), np.float32), affine, img / "c6_0000.nii.gz")  # 2D
    (img / "c7_0001.nii.gz").unlink()  # missing channel
    frac = lab().astype(np.float32) * 0.6
    save_nifti(frac, affine, lbl / "c8.nii.gz")  # interpolated label
    problems = check_dataset(discover(root))
    expected = {
        "c0_0000.nii.gz": "truncated",
        "labelsTr/c1.nii.gz": "label shape",
        "labelsTr/c2.nii.gz": "affine differs",
        "c3_0001.nii.gz": "different grid",
        "labelsTr/c4.nii.gz": "not in the declared set",
        "c5_0000.nii.gz": "NaN",
        "c6_0000.nii.gz": "not a 3D volume",
        "c7_0001.nii.gz": "missing",
        "labelsTr/c8.nii.gz": "fractional",
    }
    assert len(problems) == len(expected), problems
    for name, words in expected.items():
        assert sum(name in p and words in p for p in problems) == 1, (name, problems)


def test_empty_dataset_and_escaping_path(tmp_path):
    root = tmp_path / "e"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"})
    )
    assert "no cases found" in check_dataset(discover(root))[0]
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "../../../etc/hosts", "label": "./l.nii.gz"}]})
    )
    assert "escapes the dataset folder" in check_dataset(discover(root))[0]


def test_gzip_that_is_not_nifti_and_lesion_labels_rule(tmp_path, affine):
    root = make(tmp_path / "d", affine)
    with gzip.open(root / "imagesTr" / "c1_0000.nii.gz", "wb") as fh:
        fh.write(b"hello, not an image" * 10)
    save_nifti(lab(3), affine, root / "labelsTr" / "c0.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "ADC"}, "file_ending": ".nii.gz"}))
    problems = check_dataset(discover(root), lesion_labels=[1, 2])
    assert any("c1_0000.nii.gz" in p for p in problems)
    assert any("c0.nii.gz" in p and "[3]" in p for p in problems)


def test_cli_exit_codes(tmp_path, affine):
    root = make(tmp_path / "d", affine)
    ok = cli("check", str(root))
    assert ok.returncode == 0 and "2 case(s)" in ok.stdout and "clean" in ok.stdout
    save_nifti(lab(7), affine, root / "labelsTr" / "c1.nii.gz")
    (root / "imagesTr" / "c0_0001.nii.gz").write_bytes(b"")
    bad = cli("check", str(root))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.startswith("problem:")]
    assert len(lines) == 2 and "c0_0001.nii.gz" in lines[0] and "c1.nii.gz" in lines[1]
    assert "2 problem(s)" in bad.stdout


def test_report_of_a_case_list_names_the_list(tmp_path, affine):
    save_nifti(vol(), affine, tmp_path / "scans" / "a.nii.gz")
    save_nifti(lab(), affine, tmp_path / "scans" / "a_seg.nii.gz")
    (tmp_path / "train.csv").write_text("case_id,t2,label\na,scans/a.nii.gz,scans/a_seg.nii.gz\n")
    ds = discover(tmp_path / "train.csv")
    assert (
        format_report(ds, check_dataset(ds)) == f"1 case(s) of {tmp_path / 'train.csv'} are clean (list, channels: t2)"
    )
