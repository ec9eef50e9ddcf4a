import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.data.case import Case, check_pair
from medseg.data.sources.discover import find_cases
from medseg.errors import MedsegError
from medseg.io.geometry import read_geometry
from medseg.io.volumes import save_like
from tests.conftest import oblique_affine, save_nifti


def make_dataset(root, entries):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return root


def test_find_cases_and_errors(tmp_path, affine):
    save_nifti(np.zeros((4, 4, 4), np.float32), affine, tmp_path / "d" / "imagesTr" / "a.nii.gz")
    save_nifti(np.zeros((4, 4, 4), np.uint8), affine, tmp_path / "d" / "labelsTr" / "a.nii.gz")
    root = make_dataset(tmp_path / "d", [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}])
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["a"]
    make_dataset(root, [{"image": "./imagesTr/missing.nii.gz", "label": "./labelsTr/a.nii.gz"}])
    with pytest.raises(MedsegError, match="missing.nii.gz"):
        find_cases(root)
    make_dataset(root, [{"image": "../../etc/passwd", "label": "./labelsTr/a.nii.gz"}])
    with pytest.raises(MedsegError, match="escapes"):
        find_cases(root)
    with pytest.raises(MedsegError, match="not found"):
        find_cases(tmp_path / "nothing")


def test_check_pair_shape_and_affine(tmp_path, affine):
    img = save_nifti(np.zeros((6, 6, 4), np.float32), affine, tmp_path / "img.nii.gz")
    bad_shape = save_nifti(np.zeros((6, 5, 4), np.uint8), affine, tmp_path / "lab1.nii.gz")
    moved = affine.copy()
    moved[0, 3] += 3.0
    bad_affine = save_nifti(np.zeros((6, 6, 4), np.uint8), moved, tmp_path / "lab2.nii.gz")
    with pytest.raises(MedsegError, match="lab1.nii.gz.*shape"):
        check_pair(Case("x", img, bad_shape))
    with pytest.raises(MedsegError, match="lab2.nii.gz.*affine"):
        check_pair(Case("x", img, bad_affine))


def test_corrupt_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(MedsegError, match="bad.nii.gz"):
        read_geometry(bad)


def test_save_like_nifti_keeps_header(tmp_path, affine):
    ref = nib.Nifti1Image(np.random.rand(7, 5, 3).astype(np.float32), affine)
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=2)
    nib.save(ref, str(tmp_path / "ref.nii.gz"))
    mask = (np.random.rand(7, 5, 3) > 0.5).astype(np.uint8)
    save_like(mask, tmp_path / "ref.nii.gz", tmp_path / "out" / "m.nii.gz")
    out = nib.load(str(tmp_path / "out" / "m.nii.gz"))
    assert out.shape == (7, 5, 3) and np.array_equal(np.asanyarray(out.dataobj), mask)
    assert np.allclose(out.affine, nib.load(str(tmp_path / "ref.nii.gz")).affine, atol=1e-6)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_save_like_nrrd_keeps_geometry(tmp_path):
    img = sitk.GetImageFromArray(np.random.rand(3, 5, 7).astype(np.float32))
    img.SetSpacing((0.8, 0.8, 6.5))
    img.SetOrigin((10.0, -5.0, 3.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(img, str(tmp_path / "ref.nrrd"))
    mask = np.zeros((7, 5, 3), np.uint8)
    mask[1, 2, 0] = 1
    save_like(mask, tmp_path / "ref.nrrd", tmp_path / "m.nrrd")
    out = sitk.ReadImage(str(tmp_path / "m.nrrd"))
    assert out.GetSize() == (7, 5, 3) and out.GetSpacing() == img.GetSpacing()
    assert out.GetOrigin() == img.GetOrigin() and out.GetDirection() == img.GetDirection()
    assert sitk.GetArrayFromImage(out)[0, 2, 1] == 1
    assert np.allclose(read_geometry(tmp_path / "m.nrrd")[1], read_geometry(tmp_path / "ref.nrrd")[1])


def test_oblique_affine_fixture_is_not_trivial():
    a = oblique_affine()
    assert not np.allclose(a[:3, :3], np.diag(np.diag(a[:3, :3])))


def test_crash_while_writing_leaves_no_file(tmp_path, affine, monkeypatch):
    from medseg.io.write import remove_partials

    ref = save_nifti(np.zeros((5, 5, 5), np.float32), affine, tmp_path / "ref.nii.gz")

    def crash(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"\x1f\x8b half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", crash)
    with pytest.raises(OSError):
        save_like(np.ones((5, 5, 5), np.uint8), ref, tmp_path / "out" / "m.nii.gz")
    assert list((tmp_path / "out").iterdir()) == []
    # what a SIGKILL would leave (no finally): a hidden partial file, removed by the next run
    (tmp_path / "out" / ".m.nii.gz.partial-abc.nii.gz").write_bytes(b"x")
    assert remove_partials(tmp_path / "out") == 1 and list((tmp_path / "out").iterdir()) == []
