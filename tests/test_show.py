"""``medseg show``: RAS slices through the largest lesion, on oblique NIfTI, 4D and NRRD scans."""

import struct
import subprocess

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.viz.show import DPI, FIGSIZE, lesion_centre, show_case, to_ras
from tests.conftest import MEDSEG, cli, oblique_affine, save_nifti

SHAPE = (24, 20, 12)
PNG_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def case(tmp_path, affine):
    """Image, label (two lesions: 27 and 8 voxels) and a prediction finding only the small one."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[4:7, 5:8, 3:6] = 1  # largest lesion, centre voxel (5, 6, 4)
    label[15:17, 12:14, 8:10] = 2
    image[label > 0] += 80
    pred = (label == 2).astype(np.uint8)
    return (
        save_nifti(image, affine, tmp_path / "c1.nii.gz"),
        save_nifti(label, affine, tmp_path / "c1_label.nii.gz"),
        save_nifti(pred, affine, tmp_path / "c1_pred.nii.gz"),
    )


def test_to_ras_matches_closest_canonical(affine):
    import nibabel as nib

    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    vol = to_ras(data, affine)
    assert np.array_equal(vol.data, np.asanyarray(canonical.dataobj))
    assert np.allclose(vol.affine, canonical.affine)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert np.allclose(vol.spacing, [1.2, 0.9, 2.5])


def test_png_through_the_largest_lesion(case, tmp_path):
    image, label, pred = case
    res = show_case(image, pred, label, tmp_path / "out")
    assert res.png == tmp_path / "out" / "c1_show.png"
    assert res.png.stat().st_size > 10_000 and png_size(res.png) == PNG_SIZE
    assert (res.gt_lesions, res.pred_lesions) == (2, 1)
    marker = np.zeros(SHAPE)
    marker[5, 6, 4] = 1  # centre of the largest label lesion, in the file's (LAS, oblique) voxel order
    assert tuple(np.argwhere(to_ras(marker, oblique_affine()).data)[0]) == res.centre  # the same voxel, in RAS order


def test_lesion_labels_and_fallbacks(case, tmp_path):
    image, label, pred = case
    only_two = show_case(image, None, label, tmp_path / "a", lesion_labels=[2])
    assert only_two.gt_lesions == 1 and only_two.pred_lesions is None
    by_pred = show_case(image, pred, None, tmp_path / "b")  # no label: through the predicted lesion
    marker = np.zeros(SHAPE)
    marker[15:17, 12:14, 8:10] = 1
    assert by_pred.centre == lesion_centre(to_ras(marker, oblique_affine()).data > 0)[0] and by_pred.pred_lesions == 1
    plain = show_case(image, out=tmp_path / "c")
    assert plain.centre == tuple(s // 2 for s in SHAPE) and plain.gt_lesions is None
    assert all(png_size(tmp_path / n / "c1_show.png") == PNG_SIZE for n in "abc")


def test_four_d_and_nrrd(tmp_path, affine):
    import SimpleITK as sitk

    data = np.random.default_rng(1).random((*SHAPE, 2)).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[10:13, 8:11, 5:7] = 1
    res = show_case(
        save_nifti(data, affine, tmp_path / "four.nii.gz"),
        label=save_nifti(label, affine, tmp_path / "four_label.nii.gz"),
        out=tmp_path,
    )
    assert res.gt_lesions == 1 and png_size(res.png) == PNG_SIZE

    def nrrd(arr, name):
        img = sitk.GetImageFromArray(arr.transpose(2, 1, 0).copy())
        img.SetSpacing((0.8, 0.8, 6.5))
        img.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))  # slices stacked along A-P: a coronal acquisition
        sitk.WriteImage(img, str(tmp_path / name))
        return tmp_path / name

    res = show_case(nrrd(data[..., 0], "n_image.nrrd"), label=nrrd(label, "n_label.nrrd"), out=tmp_path)
    assert res.gt_lesions == 1 and png_size(res.png) == PNG_SIZE


def test_mask_on_another_grid_is_refused(case, tmp_path):
    image, label, _ = case
    moved = oblique_affine()
    moved[:3, 3] += 5.0
    import nibabel as nib

    shifted = save_nifti(np.asarray(nib.load(str(label)).dataobj), moved, tmp_path / "shifted.nii.gz")
    with pytest.raises(MedsegError, match="affine differs"):
        show_case(image, label=shifted, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_default_out_and_one_line_errors(case, tmp_path):
    image, label, pred = case
    work = tmp_path / "cwd"
    work.mkdir()
    res = subprocess.run(
        [*MEDSEG, "show", str(image), "--ref", str(label), "--pred", str(pred)],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert (work / "c1_show.png").is_file() and png_size(work / "c1_show.png") == PNG_SIZE
    assert "ground truth 2 lesion(s), prediction 1 lesion(s)" in res.stdout

    small = save_nifti(np.zeros((8, 8, 8), np.uint8), oblique_affine(), tmp_path / "small.nii.gz")
    for args, words in (
        ([str(image), "--ref", str(small)], ["small.nii.gz", "differs from the image's", "c1.nii.gz"]),
        ([str(tmp_path / "missing.nii.gz")], ["missing.nii.gz", "no such image file"]),
        ([str(image), "--pred", str(tmp_path / "nopred.nii.gz")], ["nopred.nii.gz", "no such mask file"]),
    ):
        res = cli("show", *args, "--out", str(tmp_path / "bad"))
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert all(w in lines[0] for w in words) and "Traceback" not in res.stderr
    assert not (tmp_path / "bad").exists()

    (tmp_path / "a_file").write_text("")
    res = cli("show", str(image), "--out", str(tmp_path / "a_file" / "pictures"))
    assert res.returncode == 2 and "cannot write the picture" in res.stderr and "Traceback" not in res.stderr
