"""DICOM in, DICOM SEG out: series built from NIfTI volumes (one MR file per slice, written with
pydicom) are read onto exactly the grid of the NIfTI they came from, in the RAS, LPS, permuted and
oblique cases of the geometry tests; the DICOM SEG that predict writes, read back with highdicom,
holds voxel by voxel the mask of the NIfTI written for the same scan; the series rule of a folder
with several series; the extra named when highdicom is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medseg.config.plan import Preprocessing
from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError
from medseg.inference.batch import PredictOptions, _write_one
from medseg.inference.model import LoadedModel
from medseg.io.dicom import dicom_folders, find_series
from medseg.io.geometry import LPS_TO_RAS, ras_spacing, read_geometry
from medseg.io.volumes import read_array
from medseg.nn.checkpoint import OperatingPoint, write_payload
from medseg.planning.resolve import assemble
from tests.conftest import cli, how_to_commands, oblique_affine, save_nifti
from tests.robustness.conftest import tiny_payload

AFFINES = {
    "oblique_LAS": oblique_affine(),
    "RAS": np.diag([0.9, 1.2, 2.5, 1.0]),
    "LPS": np.diag([-0.9, -1.2, 2.5, 1.0]),
    "permuted": np.array([[0, 0, 2.5, 4.0], [-1.2, 0, 0, 9.0], [0, 0.9, 0, -3.0], [0, 0, 0, 1.0]]),
}
SHAPE = (22, 26, 12)


def volume(shape=SHAPE, seed: int = 3) -> np.ndarray:
    """int16 (X, Y, Z): two Gaussian blobs of height 1000 over a zero background."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    img = np.zeros(shape, np.float32)
    for _ in range(2):
        c = rng.uniform(4, np.array(shape) - 4)
        img += np.exp(-sum((grid[i] - c[i]) ** 2 for i in range(3)) / 30.0)
    return np.rint(img * 1000).astype(np.int16)


def write_series(vol: np.ndarray, affine: np.ndarray, folder: Path, number: int = 1, series_uid: str | None = None):
    """One MR image file per slice of ``vol`` (X, Y, Z) whose RAS ``affine`` becomes the DICOM
    (LPS) image position and orientation. Returns the files in the order of the slice axis."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ affine  # its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    cosines = lps[:3, :3] / spacing
    study, frame, series_uid = (
        "1.2.826.0.1.3680043.8.498.1",
        "1.2.826.0.1.3680043.8.498.2",
        series_uid or generate_uid(),
    )
    files = []
    for k in range(vol.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID = MRImageStorage, ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "MR", "P1", "Test^P", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", "", "", ""
        ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = number, k + 1, "test"
        ds.ImagePositionPatient = [f"{v:.10g}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*cosines[:, 0], *cosines[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]  # between rows (Y), between columns (X)
        ds.SliceThickness = f"{spacing[2]:.10g}"
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(vol[:, :, k].T.astype(np.int16)).tobytes()
        files.append(folder / f"s{number}_{k:03d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine reoriented to the closest RAS (flips and axis swaps only): two grids of
    the same voxels in the same places give the same pair, whatever their axis order."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array), affine))
    return np.asanyarray(img.dataobj), img.affine


class Threshold(torch.nn.Module):
    """Logits of an intensity threshold at 500.5 (the mask is 'voxel > 500' wherever it is
    evaluated); a second class at 800.5 with ``classes=2``."""

    def __init__(self, classes: int = 1) -> None:
        super().__init__()
        self.levels = [500.5, 800.5][:classes]

    def forward(self, x):
        return torch.cat([0.5 * (x - level) for level in self.levels], dim=1)


def loaded(spacing, classes: tuple[str, ...] = ("lesion",)) -> LoadedModel:
    cfg = ExperimentConfig.model_validate(
        {"data": {"dataset": "x"}, "sampling": {"patch_size": [16, 16, 8]}, "inference": {"sw_batch_size": 2}}
    )
    plan = assemble(cfg, Preprocessing(tuple(spacing), "none", classes=classes))
    return LoadedModel(Threshold(len(classes)), plan, OperatingPoint(0.5, 0.0), cfg.inference, 26, torch.device("cpu"))


def seg_volumes(path: Path) -> tuple[hd.seg.Segmentation, list[tuple[np.ndarray, np.ndarray]]]:
    """The SEG at ``path`` and, per segment, its (array, RAS affine) from highdicom's own geometry."""
    seg = hd.seg.segread(path)
    vol = seg.get_volume(combine_segments=False)
    ras = LPS_TO_RAS @ vol.affine  # highdicom: (slice, row, column) indices -> LPS mm
    return seg, [(vol.array[..., s], ras) for s in range(vol.array.shape[-1])]


# ------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", AFFINES)
def test_series_reads_onto_the_grid_of_its_nifti(tmp_path, name):
    vol, affine = volume(), AFFINES[name]
    write_series(vol, affine, tmp_path / "series")
    shape, header_affine = read_geometry(tmp_path / "series")
    voxels, read_affine = read_array(tmp_path / "series")
    assert shape == SHAPE and np.allclose(header_affine, read_affine, atol=1e-5)
    expected, expected_affine = canonical(vol, affine)
    got, got_affine = canonical(voxels.astype(np.int16), read_affine)
    assert np.array_equal(got, expected) and np.allclose(got_affine, expected_affine, atol=1e-5)


@pytest.mark.parametrize("name", AFFINES)
def test_dicom_seg_holds_the_nifti_mask_voxel_by_voxel(tmp_path, name):
    vol, affine = volume(), AFFINES[name]
    write_series(vol, affine, tmp_path / "scan")
    lm = loaded(ras_spacing(affine))
    row = _write_one(lm, tmp_path / "scan", tmp_path / "out", PredictOptions(output_format="dicom-seg"))[0]
    mask_img = nib.load(row["mask"])
    mask = np.asanyarray(mask_img.dataobj)
    assert row["mask"].endswith("scan.nii.gz") and mask.shape == SHAPE and 0 < mask.sum() < mask.size
    # the NIfTI mask of the DICOM scan is the mask of its source NIfTI, in the same place
    expected, expected_affine = canonical((vol > 500).astype(np.uint8), affine)
    got, got_affine = canonical(mask, mask_img.affine)
    assert np.array_equal(got, expected) and np.allclose(got_affine, expected_affine, atol=1e-4)
    # the SEG, read back with highdicom on its own geometry, holds that mask voxel by voxel
    seg, segments = seg_volumes(tmp_path / "out" / "scan_seg.dcm")
    assert len(segments) == 1
    seg_mask, seg_affine = canonical(segments[0][0].astype(np.uint8), segments[0][1])
    assert np.array_equal(seg_mask, got) and np.allclose(seg_affine, got_affine, atol=1e-4)
    # frame k of the SEG is slice k of the series, as referenced
    series = find_series(tmp_path / "scan")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])
    assert np.array_equal(frames[..., 0], mask.transpose(2, 1, 0))
    assert seg.SegmentationType == "BINARY" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid


def test_one_segment_per_lesion_class_with_codes(tmp_path):
    vol, affine = volume(), AFFINES["oblique_LAS"]
    write_series(vol, affine, tmp_path / "scan")
    lm = loaded(ras_spacing(affine), classes=("lesion", "tumour"))
    rows = _write_one(lm, tmp_path / "scan", tmp_path / "out", PredictOptions(output_format="dicom-seg", table=False))
    assert [Path(r["mask"]).name for r in rows] == ["scan_lesion.nii.gz", "scan_tumour.nii.gz"]
    seg, segments = seg_volumes(tmp_path / "out" / "scan_seg.dcm")
    for (array, ras), row in zip(segments, rows):
        img = nib.load(row["mask"])
        assert np.array_equal(
            canonical(array.astype(np.uint8), ras)[0], canonical(np.asanyarray(img.dataobj), img.affine)[0]
        )
    described = [
        (
            d.SegmentLabel,
            d.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            d.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
        )
        for d in seg.SegmentSequence
    ]
    assert described == [
        ("lesion", codes.SCT.Lesion.value, codes.SCT.MorphologicallyAbnormalStructure.value),
        ("tumour", codes.SCT.Neoplasm.value, codes.SCT.MorphologicallyAbnormalStructure.value),
    ]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medseg" and "threshold" in algorithm.AlgorithmParameters


# ------------------------------------------------------------------------------------ the series rule


def test_the_series_with_most_slices_is_the_scan_and_the_rest_are_named(tmp_path, capsys):
    write_series(volume(), AFFINES["RAS"], tmp_path / "mixed", number=1, series_uid="1.2.3.9")
    write_series(volume()[..., :5], AFFINES["LPS"], tmp_path / "mixed", number=2, series_uid="1.2.3.10")
    series = find_series(tmp_path / "mixed")
    assert series.uid == "1.2.3.9" and len(series.files) == 12 and series.others == (("1.2.3.10", 5),)
    assert "1.2.3.10 (5 files)" in capsys.readouterr().err
    assert read_geometry(tmp_path / "mixed")[0] == SHAPE


def test_a_tie_goes_to_the_uid_that_sorts_first(tmp_path):
    write_series(volume(), AFFINES["RAS"], tmp_path / "tie", number=1, series_uid="1.2.3.7")
    write_series(volume(), AFFINES["RAS"], tmp_path / "tie", number=2, series_uid="1.2.3.11")
    assert find_series(tmp_path / "tie").uid == "1.2.3.11"  # "1.2.3.11" < "1.2.3.7" as text


def test_a_folder_of_series_folders_gives_one_scan_each(tmp_path):
    for name in ("b_patient", "a_patient"):
        write_series(volume(), AFFINES["RAS"], tmp_path / "root" / name)
    (tmp_path / "root" / "notes").mkdir()
    (tmp_path / "root" / "notes" / "readme.txt").write_text("not DICOM")
    assert dicom_folders(tmp_path / "root") == [tmp_path / "root" / "a_patient", tmp_path / "root" / "b_patient"]
    assert dicom_folders(tmp_path / "root" / "a_patient") == [tmp_path / "root" / "a_patient"]


def test_a_missing_slice_is_refused(tmp_path):
    files = write_series(volume(), AFFINES["oblique_LAS"], tmp_path / "gap")
    files[5].unlink()
    with pytest.raises(MedsegError, match="not evenly spaced"):
        read_geometry(tmp_path / "gap")


# ---------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny 3D UNet checkpoint with random weights (as tests/robustness builds one)."""
    root = tmp_path_factory.mktemp("dicom_ckpt")
    write_payload(tiny_payload(root, seed=1), root / "best.pt")
    return root / "best.pt"


def test_predict_a_folder_of_series_writes_masks_and_segs(tmp_path, checkpoint):
    write_series(volume(), AFFINES["oblique_LAS"], tmp_path / "dicom" / "p1")
    write_series(volume(seed=5), AFFINES["permuted"], tmp_path / "dicom" / "p2")
    write_series(volume()[..., :4], AFFINES["permuted"], tmp_path / "dicom" / "p2", number=7)  # left out, named
    res = cli("predict", checkpoint, tmp_path / "dicom", "--out", tmp_path / "out", "--output-format", "dicom-seg")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "warning:" in res.stderr and "(4 files)" in res.stderr
    for name in ("p1", "p2"):
        img = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        seg, [(array, ras)] = seg_volumes(tmp_path / "out" / f"{name}_seg.dcm")
        expected, _ = canonical(np.asanyarray(img.dataobj), img.affine)
        assert img.shape == SHAPE and np.array_equal(canonical(array.astype(np.uint8), ras)[0], expected)
    assert (tmp_path / "out" / "p1_lesions.csv").is_file() and "p2.nii.gz" in (
        tmp_path / "out" / "summary.csv"
    ).read_text()


def test_dicom_seg_of_a_nifti_scan_is_refused_before_writing(tmp_path, checkpoint):
    scan = save_nifti(volume().astype(np.float32), AFFINES["RAS"], tmp_path / "scan.nii.gz")
    res = cli("predict", checkpoint, scan, "--out", tmp_path / "out", "--output-format", "dicom-seg")
    assert res.returncode == 2 and "needs DICOM input" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_highdicom_names_the_extra(tmp_path, checkpoint):
    write_series(volume(), AFFINES["RAS"], tmp_path / "scan")
    code = (
        "import sys; sys.modules['highdicom'] = None; sys.argv = ['medseg'] + sys.argv[1:]; "
        "from medseg.cli.app import main; main()"
    )
    args = ["predict", checkpoint, tmp_path / "scan", "--out", tmp_path / "out", "--output-format", "dicom-seg"]
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1 and "pip install 'medseg[dicom]'" in lines[0], res.stderr
    assert "--output-format dicom-seg" in lines[0] and not (tmp_path / "out").exists()


def test_the_how_to_commands_run_as_written(tmp_path, checkpoint):
    (tmp_path / "runs" / "20261123-101500").mkdir(parents=True)
    shutil.copy(checkpoint, tmp_path / "runs" / "20261123-101500" / "best.pt")
    write_series(volume(), AFFINES["oblique_LAS"], tmp_path / "dicom" / "patient01")
    write_series(volume(seed=7), AFFINES["LPS"], tmp_path / "dicom" / "patient02")
    commands = how_to_commands("how-to/dicom.md")
    assert [c[0] for c in commands] == ["predict", "predict"] and "dicom-seg" in commands[-1]
    for args in commands:
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    assert sorted(p.name for p in (tmp_path / "masks").glob("*_seg.dcm")) == ["patient01_seg.dcm", "patient02_seg.dcm"]
