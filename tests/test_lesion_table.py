import json

import numpy as np
import pytest

from medseg.inference.lesion_table import lesion_rows, write_table
from tests.conftest import oblique_affine


def test_rows_on_crafted_mask(tmp_path):
    affine = oblique_affine((1.0, 2.0, 3.0))
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels, centre (1.5, 1.5, 1.5)
    mask[7, 8, 5] = 1  # 1 voxel
    prob = np.where(mask, 0.6, 0.1).astype(np.float32)
    prob[2, 2, 2] = 0.9
    rows = lesion_rows(mask, prob, affine)
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[0]["voxels"] == 8 and rows[0]["volume_mm3"] == pytest.approx(8 * 6.0, rel=1e-6)
    world = affine @ np.array([1.5, 1.5, 1.5, 1.0])
    assert [rows[0][f"centroid_{a}_mm"] for a in "xyz"] == pytest.approx(world[:3], abs=1e-3)
    assert rows[0]["bbox_min"] == [1, 1, 1] and rows[0]["bbox_max"] == [2, 2, 2]
    assert rows[0]["max_prob"] == pytest.approx(0.9) and rows[0]["mean_prob"] == pytest.approx(
        (7 * 0.6 + 0.9) / 8, abs=1e-4
    )
    assert rows[1]["volume_mm3"] == pytest.approx(6.0) and rows[1]["bbox_min"] == [7, 8, 5]
    write_table(rows, tmp_path / "case_lesions.csv", tmp_path / "case_lesions.json")
    assert json.loads((tmp_path / "case_lesions.json").read_text())[1]["voxels"] == 1
    assert (tmp_path / "case_lesions.csv").read_text().splitlines()[0].startswith("id,voxels,volume_mm3")


def test_empty_mask_gives_no_rows():
    assert lesion_rows(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.eye(4)) == []


def test_confidence_is_the_lesions_peak_the_froc_score():
    """``confidence`` = the lesion's maximum probability: the peak a FROC candidate is scored by."""
    from medseg.evaluation.froc import detection_map

    prob = np.zeros((12, 12, 12), np.float32)
    prob[1:5, 1:5, 1:5] = 0.6
    prob[2, 3, 3] = 0.83
    prob[8:11, 8:11, 8:11] = 0.55
    rows = lesion_rows(prob >= 0.5, prob, np.eye(4))
    assert [r["confidence"] for r in rows] == [pytest.approx(0.83), pytest.approx(0.55)]
    assert all(r["confidence"] == r["max_prob"] for r in rows)
    assert np.unique(detection_map(prob))[1:].tolist() == pytest.approx([0.55, 0.83])


def test_confidence_column_is_written(tmp_path):
    mask = np.zeros((6, 6, 6), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    rows = lesion_rows(mask, mask * 0.7, np.eye(4))
    write_table(rows, tmp_path / "c.csv", tmp_path / "c.json")
    header, first = (tmp_path / "c.csv").read_text().splitlines()
    assert header.split(",")[-1] == "confidence" and first.split(",")[-1] == "0.7"
    assert json.loads((tmp_path / "c.json").read_text())[0]["confidence"] == 0.7
