"""``--split`` means the same for every source: a config's ``test`` is its held-out cases, a
source without splits refuses one, and leaving it out takes the held-out cases where they exist.

On e45a593 ``predict --dataset CONFIG`` (default ``--split test``) predicted the config's
training and validation cases of a pattern layout: the first test below failed there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.data.sources.discover import from_argument
from medseg.data.synthetic import write_dataset
from medseg.errors import MedsegError
from medseg.io.review_marks import MARKS_FORMAT
from medseg.training.prepare import prepare
from tests.conftest import oblique_affine, save_nifti
from tests.robustness.conftest import SPACING, good_dataset, good_image, lesion_label, robust_root, tiny_checkpoint  # noqa: F401 (fixtures)

CASES = ["p1", "p2", "p3", "p4"]


@pytest.fixture
def tree(tmp_path) -> Path:
    """A BraTS-like pattern folder (``<case>/<case>_flair.nii.gz``) and a config holding p3, p4 out."""
    root = tmp_path / "tree"
    for i, case in enumerate(CASES):
        save_nifti(good_image(i), oblique_affine(SPACING), root / case / f"{case}_flair.nii.gz")
        save_nifti(lesion_label(i), oblique_affine(SPACING), root / case / f"{case}_seg.nii.gz")
    (tmp_path / "cfg.yaml").write_text(
        f"data:\n  dataset: {root}\n  layout: pattern\n  channels: ['{{case}}/{{case}}_flair.nii.gz']\n"
        "  label: '{case}/{case}_seg.nii.gz'\n  exclude_cases: [p3, p4]\n"
    )
    return tmp_path


@pytest.mark.parametrize("split", ["test", None])
def test_a_config_test_split_is_its_held_out_cases(tree, split):
    ds, cfg = from_argument(str(tree / "cfg.yaml"), split=split)
    assert cfg is not None and [c.case_id for c in ds.cases] == ["p3", "p4"]


def test_a_config_training_split_leaves_the_held_out_cases_out(tree):
    ds, _ = from_argument(str(tree / "cfg.yaml"), split="training")
    assert [c.case_id for c in ds.cases] == ["p1", "p2"]


def test_scans_a_reviewer_rejected_are_left_out_of_training(tree, capsys):
    marks = [
        {"case": "p1", "kind": "scan", "id": None, "decision": "reject", "comment": "label drawn on the wrong scan"},
        {"case": "p2", "kind": "scan", "id": None, "decision": "reject"},
        {"case": "p2", "kind": "scan", "id": None, "decision": "accept"},  # the last mark on a scan wins
        {"case": "p2", "kind": "pred", "id": 1, "decision": "reject"},  # lesion marks do not drop a scan
    ]
    (tree / "marks").mkdir()
    (tree / "marks" / "review_marks.json").write_text(json.dumps({"format": MARKS_FORMAT, "marks": marks}))
    text = (tree / "cfg.yaml").read_text() + "  review_marks: marks/review_marks.json\n"  # relative to the config
    (tree / "cfg.yaml").write_text(text)
    ds, cfg = from_argument(str(tree / "cfg.yaml"), split="training")
    assert [c.case_id for c in ds.cases] == ["p2"]
    assert [c.case_id for c in from_argument(str(tree / "cfg.yaml"), split="test")[0].cases] == ["p3", "p4"]
    prepared = prepare(cfg)
    assert [c.case_id for c in prepared.cases] == ["p2"]
    assert "1 scan(s) the reviewer rejected left out: p1" in capsys.readouterr().out
    (tree / "marks" / "review_marks.json").write_text("{}")
    with pytest.raises(MedsegError, match="review_marks.json: not a review marks file"):
        from_argument(str(tree / "cfg.yaml"), split="training")


def test_a_pattern_folder_has_no_test_split(tree):
    ds, _ = from_argument(
        str(tree / "tree"), "pattern", ["{case}/{case}_flair.nii.gz"], "{case}/{case}_seg.nii.gz", split=None
    )
    assert [c.case_id for c in ds.cases] == CASES  # no split given: every case
    with pytest.raises(MedsegError, match="has no 'test' split"):
        from_argument(
            str(tree / "tree"), "pattern", ["{case}/{case}_flair.nii.gz"], "{case}/{case}_seg.nii.gz", split="test"
        )


def test_a_case_list_has_no_test_split(tree):
    listing = tree / "tree" / "list.csv"
    listing.write_text(
        "case_id,flair,label\n" + "".join(f"{c},{c}/{c}_flair.nii.gz,{c}/{c}_seg.nii.gz\n" for c in CASES)
    )
    assert len(from_argument(str(listing), split=None)[0].cases) == 4
    with pytest.raises(MedsegError, match="case list has no 'test' split"):
        from_argument(str(listing), split="test")


def test_an_msd_folder_defaults_to_its_labelled_held_out_cases(tmp_path):
    write_dataset(tmp_path / "d", 2, test_cases=1, shape=(16, 16, 8))
    ds, _ = from_argument(str(tmp_path / "d"), split=None)
    assert [c.case_id for c in ds.cases] == ["synth_002"] and ds.cases[0].label is not None
    assert len(from_argument(str(tmp_path / "d"), split="training")[0].cases) == 2


def test_predict_dataset_config_writes_the_held_out_masks_only(tree, tiny_checkpoint):
    from tests.robustness.conftest import run_cli

    res = run_cli("predict", tiny_checkpoint, "--dataset", tree / "cfg.yaml", "--out", tree / "masks", "--quiet")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tree / "masks").glob("*.nii.gz")) == ["p3.nii.gz", "p4.nii.gz"]


def test_min_lesion_voxels_removes_small_predicted_lesions(tree, tiny_checkpoint):
    """predict --min-lesion-voxels: the same filter as evaluate's, in voxels (the larger minimum wins)."""
    from medseg.inference.batch import PredictOptions, predict_files

    scan = [str(tree / "tree" / "p1" / "p1_flair.nii.gz")]
    plain, _ = predict_files(
        tiny_checkpoint, scan, tree / "plain", "cpu", PredictOptions(min_lesion_mm3=0), progress=False
    )
    big = 10**9
    none, _ = predict_files(
        tiny_checkpoint,
        scan,
        tree / "big",
        "cpu",
        PredictOptions(min_lesion_mm3=0, min_lesion_voxels=big),
        progress=False,
    )
    assert plain[0]["lesions"] > 0 and none[0]["lesions"] == 0


def test_check_of_a_config_reads_its_held_out_cases_too(tree):
    from tests.robustness.conftest import run_cli

    res = run_cli("check", tree / "cfg.yaml")
    assert res.returncode == 0 and "4 case(s)" in res.stdout, res.stdout + res.stderr
