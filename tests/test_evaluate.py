import json

import numpy as np
import pytest

from medseg.evaluation.evaluate import evaluate_dirs
from medseg.evaluation.tables import EvalOptions
from tests.conftest import oblique_affine, save_nifti


def test_tables_on_crafted_cases(tmp_path):
    affine = oblique_affine((1.0, 1.0, 2.0))
    ref, pred = np.zeros((20, 20, 10), np.uint8), np.zeros((20, 20, 10), np.uint8)
    ref[2:6, 2:6, 2:4] = 1  # 32 voxels = 64 mm3, found
    ref[12:14, 12:14, 5] = 1  # 4 voxels = 8 mm3, missed
    pred[3:6, 3:6, 2:4] = 1
    pred[15:17, 2:4, 7] = 1  # false positive
    save_nifti(ref, affine, tmp_path / "ref" / "a.nii.gz")
    save_nifti(pred, affine, tmp_path / "pred" / "a.nii.gz")
    empty = np.zeros_like(ref)
    save_nifti(empty, affine, tmp_path / "ref" / "b.nii.gz")
    save_nifti(empty, affine, tmp_path / "pred" / "b.nii.gz")
    summary, rows, errors = evaluate_dirs(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", EvalOptions())
    assert errors == []
    a = next(r for r in rows if r["case"] == "a")
    assert (a["gt_lesions"], a["tp"], a["fn"], a["fp"]) == (2, 1, 1, 1)
    assert a["ref_volume_mm3"] == pytest.approx(72.0, rel=1e-5) and a["volume_diff_mm3"] == pytest.approx(
        -28.0, rel=1e-5
    )
    assert np.isfinite(a["hd95_mm"]) and a["hd95_mm"] > 0
    assert summary["lesion_recall"] == 0.5 and summary["fp_per_scan"] == 0.5 and summary["case_specificity"] == 1.0
    assert summary["recall_by_size_mm3"]["0-10"] == {"lesions": 1, "recall": 0.0}
    assert summary["recall_by_size_mm3"]["10-100"] == {"lesions": 1, "recall": 1.0}
    lesions = (tmp_path / "out" / "lesions.csv").read_text().splitlines()
    assert lesions[0].startswith("case,kind,id,volume_mm3,matched") and len(lesions) == 1 + 4
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["matching"] == "overlap"
    # 8 mm3 GT lesion and 8 mm3 false positive left out below 10 mm3 (voxel = 2 mm3)
    summary, _, _ = evaluate_dirs(tmp_path / "pred", tmp_path / "ref", None, EvalOptions(min_mm3=10.0))
    assert (summary["gt_lesions"], summary["fp"], summary["lesion_recall"]) == (1, 0, 1.0)


def test_missing_prediction_is_reported(tmp_path, affine):
    save_nifti(np.zeros((4, 4, 4), np.uint8), affine, tmp_path / "ref" / "a.nii.gz")
    (tmp_path / "pred").mkdir()
    summary, rows, errors = evaluate_dirs(tmp_path / "pred", tmp_path / "ref")
    assert rows == [] and "a.nii.gz" in errors[0]


def test_froc_from_saved_probability_maps(tmp_path):
    from medseg.io.volumes import save_like

    affine = oblique_affine((1.0, 1.0, 2.0))
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[2:6, 2:6, 2:4] = 1
    ref[12:14, 12:14, 5] = 1
    prob = np.zeros(ref.shape, np.float32)
    prob[2:6, 2:6, 2:4] = 0.9
    prob[12:14, 12:14, 5] = 0.3  # found only at low confidence
    prob[16:18, 2:4, 7] = 0.6  # a false positive in between
    ref[2:4, 16:18, 8] = 1  # a lesion nobody predicts
    ref_path = save_nifti(ref, affine, tmp_path / "ref" / "a.nii.gz")
    save_like((prob >= 0.5).astype(np.uint8), ref_path, tmp_path / "pred" / "a.nii.gz")
    save_like(np.rint(prob * 255).astype(np.uint8), ref_path, tmp_path / "pred" / "a_prob.nii.gz", scale=1 / 255)
    summary, rows, errors = evaluate_dirs(tmp_path / "pred", tmp_path / "ref", tmp_path / "out")
    assert errors == [] and [r["case"] for r in rows] == ["a"]
    froc = summary["froc"]["recall_at_fp_per_scan"]
    assert froc[0.125] == pytest.approx(1 / 3) and froc[1.0] == pytest.approx(2 / 3)
    assert (tmp_path / "out" / "froc.png").exists()


def test_empty_mask_conventions_are_counted_not_dropped(tmp_path):
    """One case with an empty prediction: its HD95 is left out of the median and counted, or gets
    the penalty asked for; two empty masks give Dice 1 or are left out and counted."""
    import nibabel as nib
    import numpy as np

    from medseg.evaluation.evaluate import evaluate_dirs
    from medseg.evaluation.tables import EvalOptions

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for d in (pred, ref):
        d.mkdir()
    full = np.zeros((12, 12, 12), np.uint8)
    full[3:7, 3:7, 3:7] = 1
    cases = {
        "same": (full, full),
        "missed": (np.zeros_like(full), full),
        "blank": (np.zeros_like(full), np.zeros_like(full)),
    }
    for name, (p, r) in cases.items():
        nib.save(nib.Nifti1Image(p, np.eye(4)), str(pred / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(r, np.eye(4)), str(ref / f"{name}.nii.gz"))
    summary, rows, _ = evaluate_dirs(pred, ref)
    assert summary["hd95_cases_excluded"] == 1 and summary["hd95_mm_median"] == 0.0
    assert summary["dice"] == (1 + 0 + 1) / 3 and summary["dice_cases_excluded"] == 0
    summary, _, _ = evaluate_dirs(pred, ref, opts=EvalOptions(empty_dice=float("nan"), hd95_one_empty=374.0))
    assert summary["hd95_cases_excluded"] == 0 and summary["hd95_mm_median"] == 0.0
    assert summary["dice"] == 0.5 and summary["dice_cases_excluded"] == 1
    by_case = {r["case"]: r for r in evaluate_dirs(pred, ref, opts=EvalOptions(hd95_one_empty=374.0))[1]}
    assert by_case["missed"]["hd95_mm"] == 374.0
