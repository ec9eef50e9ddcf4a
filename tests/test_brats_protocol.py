"""The BraTS 2023 lesion-wise protocol against hand counts, and on the shared BraTS cases."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.evaluation.brats import PROTOCOLS, brats_case, merged_gt_lesions
from medseg.evaluation.evaluate import evaluate_dirs
from medseg.evaluation.tables import EvalOptions
from tests.conftest import cli


def _scene():
    """GT: A (125 vox) and B (125) two voxels apart, C (125) far away, D (27, small); predictions:
    exactly A, two thirds of D's voxels, one false positive."""
    ref = np.zeros((40, 40, 40), bool)
    ref[5:10, 5:10, 5:10] = 1
    ref[12:17, 5:10, 5:10] = 1
    ref[30:35, 30:35, 30:35] = 1
    ref[20:23, 30:33, 5:8] = 1
    pred = np.zeros_like(ref)
    pred[5:10, 5:10, 5:10] = 1
    pred[20:22, 30:32, 5:7] = 1
    pred[35:38, 2:5, 30:33] = 1
    return pred, ref


def test_gt_lesions_closer_than_the_dilation_are_merged():
    _, ref = _scene()
    assert ndimage.label(ref, np.ones((3, 3, 3)))[1] == 4
    assert merged_gt_lesions(ref, 3)[1] == 3  # A and B merge under dilation 3
    assert merged_gt_lesions(ref, 0)[1] == 4


def test_glioma_protocol_by_hand():
    pred, ref = _scene()
    row, scores, n_pred, tp_pred = brats_case(pred, ref, np.ones(3), PROTOCOLS["brats2023"])
    # merged A+B (250 vox) found by A: Dice 2*125/375; C missed: Dice 0, HD95 374; D is 27 mm3 <= 50: not scored
    assert (row["gt_lesions"], row["tp"], row["fn"], row["fp"], n_pred, len(tp_pred)) == (2, 1, 1, 1, 3, 2)
    assert row["lesionwise_dice"] == pytest.approx((2 * 125 / 375 + 0) / 3)
    ab = next(s for s in scores if s.volume_mm3 == 250)
    assert row["lesionwise_hd95_mm"] == pytest.approx((ab.hd95_mm + 374 + 374) / 3)
    assert [s.volume_mm3 for s in scores if not s.hits] == [125.0]


def test_metastasis_protocol_scores_small_lesions():
    pred, ref = _scene()
    row, scores, _, _ = brats_case(pred, ref, np.ones(3), PROTOCOLS["brats2023-met"])
    # dilation 1: A and B (2-voxel gap) still merge, their grown regions touch; D (27 > 2 mm3) is
    # scored and found; C missed
    assert (row["gt_lesions"], row["tp"], row["fn"], row["fp"]) == (3, 2, 1, 1)
    apart = np.zeros_like(ref)
    apart[5:10, 5:10, 5:10] = 1
    apart[13:18, 5:10, 5:10] = 1  # a 3-voxel gap: apart at dilation 1, merged at dilation 3
    ref = apart
    assert merged_gt_lesions(ref, 1)[1] == 2 and merged_gt_lesions(ref, 3)[1] == 1


def test_a_small_prediction_on_a_large_tumour_is_a_hit():
    """Only GT lesions are size-filtered: a 1-voxel prediction inside a big tumour still finds it."""
    ref = np.zeros((30, 30, 30), bool)
    ref[5:20, 5:20, 5:20] = 1
    pred = np.zeros_like(ref)
    pred[10, 10, 10] = 1
    row, _, _, _ = brats_case(pred, ref, np.ones(3), PROTOCOLS["brats2023"])
    assert (row["tp"], row["fn"], row["fp"]) == (1, 0, 0)


def test_empty_scans_and_spacing():
    empty = np.zeros((10, 10, 10), bool)
    row, _, _, _ = brats_case(empty, empty, np.ones(3), PROTOCOLS["brats2023"])
    assert (row["lesionwise_dice"], row["lesionwise_hd95_mm"]) == (1.0, 0.0)
    ref = empty.copy()
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels: 64 mm3 at 1 mm, 8 mm3 at 0.5 mm (not scored)
    assert brats_case(empty, ref, np.ones(3), PROTOCOLS["brats2023"])[0]["fn"] == 1
    assert brats_case(empty, ref, np.full(3, 0.5), PROTOCOLS["brats2023"])[0]["gt_lesions"] == 0


def _write(path, array):
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), str(path))


def test_evaluate_names_the_protocol(tmp_path):
    pred, ref = _scene()
    (tmp_path / "p").mkdir(), (tmp_path / "r").mkdir()
    _write(tmp_path / "p" / "a.nii.gz", pred), _write(tmp_path / "r" / "a.nii.gz", ref)
    summary, rows, errors = evaluate_dirs(
        tmp_path / "p", tmp_path / "r", tmp_path / "out", EvalOptions(protocol="brats2023")
    )
    assert not errors and summary["protocol"] == "brats2023 (glioma)"
    assert summary["lesionwise_dice"] == pytest.approx(rows[0]["lesionwise_dice"])
    assert (summary["tp"], summary["fn"], summary["fp"]) == (1, 1, 1)
    out = cli("evaluate", tmp_path / "p", tmp_path / "r", "--protocol", "brats2023")
    assert out.returncode == 0, out.stderr
    assert "protocol brats2023 (glioma): lesion-wise dice 0.222" in out.stdout
    bad = cli("evaluate", tmp_path / "p", tmp_path / "r", "--protocol", "brats2023", "--dilate", "2")
    assert bad.returncode != 0 and "fixes the matching" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.real
def test_protocol_on_the_shared_brats_cases(real_data, tmp_path):
    """Each BraTS whole tumour against itself eroded by one voxel: every tumour found, no FP."""
    cases = sorted((real_data / "brats_glioma").glob("*/*_seg.nii.gz"))[:3]
    assert cases
    (tmp_path / "p").mkdir(), (tmp_path / "r").mkdir()
    for seg in cases:
        img = nib.load(str(seg))
        wt = np.asanyarray(img.dataobj) > 0
        nib.save(nib.Nifti1Image(wt.astype(np.uint8), img.affine), str(tmp_path / "r" / seg.name))
        nib.save(
            nib.Nifti1Image(ndimage.binary_erosion(wt).astype(np.uint8), img.affine), str(tmp_path / "p" / seg.name)
        )
    summary, rows, errors = evaluate_dirs(tmp_path / "p", tmp_path / "r", None, EvalOptions(protocol="brats2023"))
    assert not errors and len(rows) == len(cases)
    assert summary["fn"] == 0 and summary["fp"] <= sum(r["pred_lesions"] for r in rows)
    assert 0.5 < summary["lesionwise_dice"] <= 1.0 and summary["lesionwise_hd95_mm"] < 374
