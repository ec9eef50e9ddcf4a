"""Adversarial inputs against the output rule and the input containment rule.

Every file a command writes lies inside its output folder, is no input, and is no other output of
the same batch, checked for the whole batch before the first write; names read from data pass one
rule; every layout keeps its files inside the dataset folder unless told otherwise. Each case
asserts that the inputs are byte-identical afterwards and that nothing appeared outside the output
folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from medseg.data.check import check_dataset
from medseg.data.sources.discover import discover
from medseg.errors import MedsegError
from medseg.evaluation.evaluate import evaluate_dirs
from medseg.inference.batch import PredictOptions, predict_files
from medseg.io.names import name_problem
from medseg.io.outputs import OutputPlan
from tests.conftest import oblique_affine, save_nifti
from tests.robustness.conftest import SPACING, assert_clean_error, good_image, lesion_label, run_cli

SIDE = PredictOptions(prob=True, instances=True)


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` with the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def scans(folder: Path, names: list[str]) -> list[Path]:
    return [save_nifti(good_image(i), oblique_affine(SPACING), folder / f"{n}.nii.gz") for i, n in enumerate(names)]


def case_list(path: Path, rows: list[tuple[str, str, str]], allow_outside: bool = False) -> Path:
    """A YAML case list ``cases: [{case_id, images: [image], label}]``."""
    entries = "\n".join(
        f"  - {{case_id: {json.dumps(c)}, images: [{json.dumps(i)}], label: {json.dumps(lab)}}}" for c, i, lab in rows
    )
    path.write_text(("allow_outside: true\n" if allow_outside else "") + "cases:\n" + entries + "\n")
    return path


@pytest.fixture
def world(tmp_path) -> Path:
    """A sandbox: ``data/`` with two scans and labels; everything a test writes must stay in it."""
    data = tmp_path / "sandbox" / "data"
    for i in range(2):
        save_nifti(good_image(i), oblique_affine(SPACING), data / f"s{i}.nii.gz")
        save_nifti(lesion_label(i), oblique_affine(SPACING), data / f"s{i}_seg.nii.gz")
    return tmp_path / "sandbox"


# ------------------------------------------------------------------------------------- names and plans


@pytest.mark.parametrize(
    "name", ["../../x", "a/b", "..", ".", ".hidden", "-rf", "a\\b", "a\x00b", "x\n", " x", "", "é" * 101]
)
def test_unsafe_names_are_refused(name):
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["BraTS2021_00019", "sub-01_ses-1", "P14_T1", "a..b", "patient 1", "é1", "x+y.v2"])
def test_plain_names_pass(name):
    assert name_problem(name) is None


def test_plan_refuses_escape_input_and_collision(tmp_path):
    out = tmp_path / "out"
    src = scans(tmp_path / "in", ["a"])[0]
    plan = OutputPlan(out, [src])
    plan.claim("a.nii.gz", "mask of a")
    with pytest.raises(MedsegError, match="outside --out"):
        plan.claim("../escaped.nii.gz", "mask of b")
    with pytest.raises(MedsegError, match="both would be written"):
        plan.claim("a.nii.gz", "lesion map of a_lesions")
    out.mkdir()
    os.link(src, out / "linked.nii.gz")  # the same file under another name: samefile
    with pytest.raises(MedsegError, match="overwrite the input"):
        plan.claim("linked.nii.gz", "mask of c")
    (out / "sub").symlink_to(tmp_path / "in")  # a symlink inside --out leading out of it
    with pytest.raises(MedsegError, match="outside --out"):
        plan.claim("sub/new.nii.gz", "mask of d")


# ------------------------------------------------------------------------------------------- predict


def test_predict_into_the_scan_folder_is_refused(tmp_path, tiny_checkpoint):
    folder = tmp_path / "scans"
    scans(folder, ["a", "b"])
    before = snapshot(tmp_path)
    res = run_cli("predict", tiny_checkpoint, folder, "--out", folder, "--quiet")
    assert_clean_error(res, str(folder), "folder of the input scans", code=2)
    assert snapshot(tmp_path) == before


def test_predict_over_an_input_file_is_refused(tmp_path, tiny_checkpoint):
    """A scan given as a file, with --out its own folder: its mask would replace it."""
    src = scans(tmp_path / "scans", ["a"])[0]
    before = snapshot(tmp_path)
    with pytest.raises(MedsegError, match="overwrite the input"):
        predict_files(tiny_checkpoint, [str(src)], tmp_path / "scans", "cpu", progress=False)
    assert snapshot(tmp_path) == before


def test_side_outputs_that_collide_refuse_the_batch_before_writing(tmp_path, tiny_checkpoint):
    """Inputs a, a_lesions and a_prob with --save-prob --save-instances: a's lesion map would be
    a_lesions' mask, a's probability map a_prob's mask."""
    folder = tmp_path / "scans"
    scans(folder, ["a", "a_lesions", "a_prob"])
    res = run_cli(
        "predict", tiny_checkpoint, folder, "--out", tmp_path / "out", "--save-prob", "--save-instances", "--quiet"
    )
    line = assert_clean_error(res, "both would be written", code=2)
    assert "a_lesions" in line or "a_prob" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_skip_existing_rerun_keeps_the_summary_of_earlier_scans(tmp_path, tiny_checkpoint):
    folder = tmp_path / "scans"
    first, second = scans(folder, ["a", "b"])
    out = tmp_path / "out"
    predict_files(tiny_checkpoint, [str(first)], out, "cpu", progress=False)
    rows, errors = predict_files(
        tiny_checkpoint, [str(folder)], out, "cpu", PredictOptions(skip_existing=True), progress=False
    )
    assert not errors and [Path(r["scan"]).name for r in rows] == ["b.nii.gz"]  # a was skipped
    with (out / "summary.csv").open() as fh:
        assert sorted(Path(r["scan"]).name for r in csv.DictReader(fh)) == ["a.nii.gz", "b.nii.gz"]


def test_case_ids_that_escape_are_named_by_check_and_refused_by_predict(world, tiny_checkpoint):
    listing = case_list(
        world / "data" / "list.yaml",
        [("../../x", "s0.nii.gz", "s0_seg.nii.gz"), ("fine", "s1.nii.gz", "s1_seg.nii.gz")],
    )
    ds = discover(listing)
    assert [c.case_id for c in ds.cases] == ["fine"]
    problems = check_dataset(ds)
    assert len(problems) == 1 and "'../../x'" in problems[0] and "case_id" in problems[0]
    before = snapshot(world.parent)
    res = run_cli(
        "predict", tiny_checkpoint, "--dataset", listing, "--split", "training", "--out", world / "out", "--quiet"
    )
    assert_clean_error(res, "../../x", "path separator", code=2)
    assert snapshot(world.parent) == before  # nothing written, x not created two levels up


@pytest.mark.parametrize("where", ["absolute", "dotdot", "env"])
def test_case_list_paths_outside_its_folder_need_the_opt_out(world, where, monkeypatch):
    outside = world / "elsewhere"
    save_nifti(good_image(5), oblique_affine(SPACING), outside / "o.nii.gz")
    save_nifti(lesion_label(5), oblique_affine(SPACING), outside / "o_seg.nii.gz")
    monkeypatch.setenv("ELSEWHERE", str(outside))
    image = {"absolute": str(outside / "o.nii.gz"), "dotdot": "../elsewhere/o.nii.gz", "env": "$ELSEWHERE/o.nii.gz"}[
        where
    ]
    label = image.replace("o.nii.gz", "o_seg.nii.gz")
    strict = discover(case_list(world / "data" / "list.yaml", [("o", image, label)]))
    assert (
        not strict.cases
        and "escapes the dataset folder" in strict.problems[0]
        and "allow_outside" in strict.problems[0]
    )
    opted = discover(case_list(world / "data" / "list2.yaml", [("o", image, label)], allow_outside=True))
    assert [c.image for c in opted.cases] == [outside / "o.nii.gz"] and not opted.problems


def test_msd_entries_leaving_the_folder_are_refused_but_a_linked_images_folder_is_not(world):
    real = world / "store"
    save_nifti(good_image(1), oblique_affine(SPACING), real / "c0.nii.gz")
    save_nifti(lesion_label(1), oblique_affine(SPACING), world / "msd" / "labelsTr" / "c0.nii.gz")
    (world / "msd" / "imagesTr").symlink_to(real, target_is_directory=True)
    entries = [
        {"image": "./imagesTr/c0.nii.gz", "label": "./labelsTr/c0.nii.gz"},
        {"image": "../data/s0.nii.gz", "label": "../data/s0_seg.nii.gz"},
    ]
    (world / "msd" / "dataset.json").write_text(
        json.dumps({"labels": {"0": "bg", "1": "lesion"}, "modality": {"0": "MRI"}, "training": entries})
    )
    ds = discover(world / "msd")
    assert [c.case_id for c in ds.cases] == ["c0"]
    assert len(ds.problems) == 2 and all("escapes" in p for p in ds.problems)


def test_pattern_globs_leaving_the_root_are_refused(world):
    root = world / "tree"
    for case in ("p1", "p2"):
        save_nifti(good_image(2), oblique_affine(SPACING), root / case / "flair.nii.gz")
        save_nifti(lesion_label(2), oblique_affine(SPACING), root / case / "seg.nii.gz")
        save_nifti(lesion_label(2), oblique_affine(SPACING), world / "other" / case / "seg.nii.gz")
    ds = discover(root, "pattern", channels=["{case}/flair.nii.gz"], label="../other/{case}/seg.nii.gz")
    assert not ds.cases and len(ds.problems) == 2 and "escapes" in ds.problems[0]
    ok = discover(root, "pattern", channels=["{case}/flair.nii.gz"], label="{case}/seg.nii.gz")
    assert [c.case_id for c in ok.cases] == ["p1", "p2"]


# --------------------------------------------------------------------------------------- synth, evaluate


def test_synth_into_a_foreign_dataset_is_refused_and_leaves_it_alone(world):
    before = snapshot(world)
    res = run_cli("synth", "--out", world / "data", "--cases", "1")
    assert_clean_error(res, str(world / "data"), "did not write", code=2)
    assert snapshot(world) == before


def test_synth_writes_over_its_own_dataset(tmp_path):
    from medseg.data.synthetic import write_dataset

    write_dataset(tmp_path / "d", 1, shape=(16, 16, 8))
    write_dataset(tmp_path / "d", 2, shape=(16, 16, 8))
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["numTraining"] == 2


def test_evaluate_out_on_a_reference_file_is_refused(world):
    data = world / "data"
    refs, preds = world / "refs", world / "preds"
    for d in (refs, preds):
        d.mkdir()
        for i in range(2):
            os.link(data / f"s{i}_seg.nii.gz", d / f"s{i}.nii.gz")
    outs = [world / "ev0", world / "ev1"]
    for out, name, source in zip(outs, ("cases.csv", "lesions.csv"), (refs / "s0.nii.gz", preds / "s1.nii.gz")):
        out.mkdir()
        os.link(source, out / name)  # a file of the --out folder that is a reference, a prediction (the same inode)
    before = snapshot(world)
    for out in outs:
        with pytest.raises(MedsegError, match="overwrite the input"):
            evaluate_dirs(preds, refs, out)
    assert snapshot(world) == before


def test_evaluate_reads_nrrd_probability_maps(tmp_path, tiny_checkpoint):
    """predict writes <case>_prob.nrrd for NRRD scans; evaluate's FROC reads them (it crashed)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(good_image(3).transpose(2, 1, 0))
    image.SetSpacing(SPACING)
    scan = tmp_path / "scans" / "n.nrrd"
    scan.parent.mkdir()
    sitk.WriteImage(image, str(scan))
    predict_files(tiny_checkpoint, [str(scan)], tmp_path / "pred", "cpu", PredictOptions(prob=True), progress=False)
    assert (tmp_path / "pred" / "n_prob.nrrd").is_file()
    ref = sitk.GetImageFromArray(lesion_label(3).transpose(2, 1, 0))
    ref.CopyInformation(image)
    (tmp_path / "refs").mkdir()
    sitk.WriteImage(ref, str(tmp_path / "refs" / "n.nrrd"))
    summary, rows, errors = evaluate_dirs(tmp_path / "pred", tmp_path / "refs", tmp_path / "eval")
    assert not errors and len(rows) == 1 and "froc" in summary
    assert (tmp_path / "eval" / "froc.png").is_file()
    assert np.isfinite(summary["froc"]["cpm"])


def test_two_predicts_into_one_folder_both_finish_with_every_row(tmp_path, tiny_checkpoint):
    """Two processes on one --out: neither removes the other's temporary files, and the summary
    holds the scans of both (merged under a lock, not last writer wins)."""
    from tests.robustness.conftest import start_cli

    left, right = scans(tmp_path / "l", ["l0", "l1", "l2"]), scans(tmp_path / "r", ["r0", "r1", "r2"])
    out = tmp_path / "out"
    procs = [start_cli("predict", tiny_checkpoint, *files, "--out", out, "--quiet") for files in (left, right)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    with (out / "summary.csv").open() as fh:
        assert sorted(Path(r["scan"]).name for r in csv.DictReader(fh)) == sorted(p.name for p in left + right)
    assert not [p for p in out.iterdir() if "partial" in p.name]


def test_show_never_draws_over_its_inputs(world):
    from medseg.viz.show import show_case

    scan, label = world / "data" / "s0.nii.gz", world / "data" / "s0_seg.nii.gz"
    named = world / "data" / "s0_show.png"  # an input with the picture's name
    os.link(label, named)
    (world / "pics").mkdir()
    os.link(label, world / "pics" / "s0_show.png")  # the picture's path is the label under another name
    before = snapshot(world)
    for masks, out in (({"label": named}, world / "data"), ({"label": label}, world / "pics")):
        with pytest.raises(MedsegError, match="overwrite the input"):
            show_case(scan, out=out, **masks)
    assert snapshot(world) == before


def test_pyproject_floors_are_past_the_advisories():
    """torch < 2.6 (weights_only bypass, CVE-2025-32434), MONAI < 1.5.2 (pickle), MLflow < 3.1."""
    import re

    import tomllib

    deps = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    floors = {
        m[1].lower(): tuple(int(x) for x in m[2].split("."))
        for d in deps
        if (m := re.match(r"([A-Za-z_-]+)>=([\d.]+)", d))
    }
    assert floors["torch"] >= (2, 6) and floors["monai"] >= (1, 5, 2) and floors["mlflow"] >= (3, 1)


@pytest.mark.parametrize("header,field", [("x.mhd", "ElementDataFile = {}"), ("x.nrrd", "data file: {}")])
@pytest.mark.parametrize("target", ["../secret.raw", "/dev/zero", "LIST\nx.raw\n../secret.raw"])
def test_a_detached_header_pointing_outside_its_folder_is_refused(tmp_path, header, field, target):
    from medseg.io.geometry import read_geometry
    from medseg.io.volumes import read_array

    (tmp_path / "secret.raw").write_bytes(bytes(8 * 8 * 8))
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "x.raw").write_bytes(bytes(8 * 8 * 8))
    if header.endswith(".mhd"):
        text = "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\n" + field.format(target) + "\n"
    else:
        text = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n" + field.format(target) + "\n"
    (folder / header).write_text(text)
    for read in (read_geometry, read_array):
        with pytest.raises(MedsegError, match="not a file beside the header"):
            read(folder / header)


def test_a_detached_header_beside_its_data_reads(tmp_path):
    from medseg.io.volumes import read_array

    (tmp_path / "x.raw").write_bytes(bytes(range(8)) * 64)
    (tmp_path / "x.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\nElementDataFile = x.raw\n"
    )
    voxels, _ = read_array(tmp_path / "x.mhd")
    assert voxels.shape == (8, 8, 8) and int(voxels.sum()) == sum(range(8)) * 64


def test_plan_never_writes_over_the_dataset_it_plans(tmp_path):
    from medseg.data.synthetic import write_dataset

    write_dataset(tmp_path / "d", 2, shape=(16, 16, 8))
    (tmp_path / "out").mkdir()
    os.link(tmp_path / "d" / "dataset.json", tmp_path / "out" / "plan.yaml")  # --out's plan.yaml is the dataset.json
    before = snapshot(tmp_path)
    res = run_cli("plan", tmp_path / "d", "--out", tmp_path / "out")
    assert_clean_error(res, "overwrite the input", code=2)
    assert snapshot(tmp_path) == before
