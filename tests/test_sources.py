"""Every dataset source and format medseg reads without a conversion script, on tiny files."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import save_nifti

from medseg.data.sources.discover import discover, find_cases
from medseg.errors import MedsegError

SHAPE = (8, 8, 6)


def vol(seed=0):
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32) + 1


def lab():
    out = np.zeros(SHAPE, np.uint8)
    out[2:4, 2:4, 2:4] = 1
    return out


def test_msd_per_channel_list_and_4d(tmp_path, affine):
    root = tmp_path / "msd"
    for c in ("a", "b"):
        save_nifti(vol(), affine, root / "imagesTr" / f"{c}_flair.nii.gz")
        save_nifti(vol(1), affine, root / "imagesTr" / f"{c}_t1.nii.gz")
        save_nifti(np.stack([vol(), vol(1)], -1), affine, root / "images4d" / f"{c}.nii.gz")
        save_nifti(lab(), affine, root / "labelsTr" / f"{c}.nii.gz")
    meta = {
        "modality": {"0": "FLAIR", "1": "T1"},
        "labels": {"0": "background", "1": "lesion"},
        "training": [
            {"image": [f"./imagesTr/{c}_flair.nii.gz", f"./imagesTr/{c}_t1.nii.gz"], "label": f"./labelsTr/{c}.nii.gz"}
            for c in "ab"
        ],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = discover(root)
    assert ds.layout == "msd" and ds.channels == ("FLAIR", "T1") and ds.labels == {0, 1}
    assert [len(c.images) for c in ds.cases] == [2, 2] and ds.cases[0].case_id == "a"
    assert [c.images[0].name for c in discover(root, channels=["T1"]).cases] == ["a_t1.nii.gz", "b_t1.nii.gz"]
    meta["training"] = [{"image": f"./images4d/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in "ab"]
    (root / "dataset.json").write_text(json.dumps(meta))
    assert [len(c.images) for c in discover(root).cases] == [1, 1]


def nnunet(root, affine, cases=("p1", "p2"), drop=None, ending=".nii.gz", v1=False):
    for case in cases:
        for ch in range(2):
            if (case, ch) != drop:
                save_nifti(vol(ch), affine, root / "imagesTr" / f"{case}_{ch:04d}{ending}")
        save_nifti(lab(), affine, root / "labelsTr" / f"{case}{ending}")
    if v1:
        meta = {
            "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "lesion"},
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        }
    else:
        meta = {
            "channel_names": {"0": "T2", "1": "ADC"},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": len(cases),
            "file_ending": ending,
        }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_v2_raw(tmp_path, affine):
    ds = discover(nnunet(tmp_path / "Dataset001_Lesion", affine))
    assert ds.layout == "nnunet" and ds.channels == ("T2", "ADC") and ds.labels == {0, 1}
    assert [c.case_id for c in ds.cases] == ["p1", "p2"]
    assert [p.name for p in ds.cases[0].images] == ["p1_0000.nii.gz", "p1_0001.nii.gz"]
    assert ds.cases[0].label.name == "p1.nii.gz" and not ds.problems


def test_nnunet_missing_channel_is_a_problem_naming_the_file(tmp_path, affine):
    ds = discover(nnunet(tmp_path / "d", affine, drop=("p2", 1)))
    assert [c.case_id for c in ds.cases] == ["p1"]
    assert len(ds.problems) == 1 and "p2_0001.nii.gz" in ds.problems[0] and "ADC" in ds.problems[0]
    with pytest.raises(MedsegError, match="p2_0001"):
        ds.require_clean()


def test_nnunet_v1_task_folder(tmp_path, affine):
    ds = discover(nnunet(tmp_path / "Task01", affine, v1=True))
    assert ds.layout == "msd" and [p.name for p in ds.cases[1].images] == ["p2_0000.nii.gz", "p2_0001.nii.gz"]
    assert [c.case_id for c in ds.cases] == ["p1", "p2"]


def write_nrrd(array, path, spacing=(0.8, 0.8, 3.0)):
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def test_csv_list_with_nrrd_and_mha(tmp_path, monkeypatch):
    write_nrrd(vol(), tmp_path / "scans" / "a.nrrd")
    write_nrrd(lab(), tmp_path / "scans" / "a_seg.nrrd")
    write_nrrd(vol(), tmp_path / "scans" / "b.mha")
    write_nrrd(lab(), tmp_path / "scans" / "b_seg.mha")
    monkeypatch.setenv("SCANS", str(tmp_path / "scans"))
    lst = tmp_path / "lists" / "cases.csv"
    lst.parent.mkdir()
    lst.write_text("case_id,t2,label\na,../scans/a.nrrd,../scans/a_seg.nrrd\nb,$SCANS/b.mha,$SCANS/b_seg.mha\n")
    assert all("allow_outside" in p for p in discover(lst).problems)  # files outside the list's folder: opt in
    ds = discover(lst, allow_outside=True)
    assert ds.layout == "list" and ds.channels == ("t2",)
    assert [c.image.name for c in ds.cases] == ["a.nrrd", "b.mha"] and ds.cases[1].label.name == "b_seg.mha"
    lst.write_text("case_id,t2,label\na,../scans/a.nrrd,../scans/nothere.nrrd\n")
    assert "nothere.nrrd" in discover(lst, allow_outside=True).problems[0]


def test_yaml_list(tmp_path, affine):
    save_nifti(vol(), affine, tmp_path / "a_flair.nii")
    save_nifti(vol(1), affine, tmp_path / "a_t1.nii")
    save_nifti(lab(), affine, tmp_path / "a_seg.nii")
    (tmp_path / "cases.yaml").write_text(
        "channels: [FLAIR, T1]\nlabels: {0: background, 1: lesion, 2: oedema}\n"
        "cases:\n  - {case_id: a, images: [a_flair.nii, a_t1.nii], label: a_seg.nii}\n"
    )
    ds = discover(tmp_path / "cases.yaml")
    assert ds.channels == ("FLAIR", "T1") and ds.labels == {0, 1, 2} and len(ds.cases[0].images) == 2
    # ${VAR} inside [...] is YAML flow syntax, not a path: one line with the place and the fix
    (tmp_path / "cases.yaml").write_text("cases:\n  - case_id: a\n    images: [${SCANS}/a_flair.nii]\n")
    with pytest.raises(MedsegError, match=r"cases.yaml:3:\d+: not a readable YAML file .*quote values that start with"):
        discover(tmp_path / "cases.yaml")


def test_yaml_list_case_ids_are_the_text_written(tmp_path, affine):
    # YAML 1.1 read 0012 as octal 10 and no as False: the ids must be what the user wrote
    for name in ("0012", "10", "no"):
        save_nifti(vol(), affine, tmp_path / f"{name}.nii")
    entries = "".join(f"  - {{case_id: {name}, images: [{name}.nii]}}\n" for name in ("0012", "10", "no"))
    (tmp_path / "cases.yaml").write_text("cases:\n" + entries)
    assert [c.case_id for c in discover(tmp_path / "cases.yaml").cases] == ["0012", "10", "no"]


def test_bids_like_pattern(tmp_path, affine):
    for sub in ("sub-01", "sub-02"):
        save_nifti(vol(), affine, tmp_path / "rawdata" / sub / "ses-1" / f"{sub}_ses-1_dwi.nii.gz")
        save_nifti(vol(1), affine, tmp_path / "rawdata" / sub / "ses-1" / f"{sub}_ses-1_adc.nii.gz")
        save_nifti(lab(), affine, tmp_path / "derivatives" / sub / "ses-1" / f"{sub}_ses-1_msk.nii.gz")
    chans = ["rawdata/{case}/ses-*/{case}_ses-*_dwi.nii.gz", "rawdata/{case}/ses-*/{case}_ses-*_adc.nii.gz"]
    ds = discover(tmp_path, "pattern", channels=chans, label="derivatives/{case}/ses-*/{case}_ses-*_msk.nii.gz")
    assert [c.case_id for c in ds.cases] == ["sub-01", "sub-02"] and ds.channels == ("dwi", "adc")
    assert (
        ds.cases[1].label.name == "sub-02_ses-1_msk.nii.gz" and ds.cases[1].images[1].name == "sub-02_ses-1_adc.nii.gz"
    )
    (tmp_path / "derivatives" / "sub-02" / "ses-1" / "sub-02_ses-1_msk.nii.gz").unlink()
    ds = discover(tmp_path, "pattern", channels=chans, label="derivatives/{case}/ses-*/{case}_ses-*_msk.nii.gz")
    assert [c.case_id for c in ds.cases] == ["sub-01"] and "sub-02" in ds.problems[0]


def test_structural_errors(tmp_path, affine):
    root = tmp_path / "d"
    save_nifti(vol(), affine, root / "imagesTr" / "a.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "../../x.nii.gz", "label": "./imagesTr/a.nii.gz"}]})
    )
    assert "escapes" in discover(root).problems[0]
    (root / "dataset.json").write_text(json.dumps({"training": []}))
    assert "no 'training' cases" in discover(root).problems[0]
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(MedsegError, match="not valid JSON"):
        find_cases(root)
    with pytest.raises(MedsegError, match="not a channel"):
        discover(nnunet(tmp_path / "n", affine), channels=["FLAIR"])
