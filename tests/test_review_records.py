"""The review as data and in MLflow (issue 36): reviewer marks in ``evaluate --marks``' tables,
``evaluate --tracking-uri`` logging the evaluation and its review site, the training run's site of
its worst validation cases, a rewritten site removing only its own stale files, and
``predict --review --quiet`` printing no address.

Predictions are the synthetic masks of ``tests/test_review.py``: the reference less its smallest
lesion (a miss) plus a cube away from every lesion (a false positive).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from medseg.config.load import load_config
from medseg.demo import DEMO_CONFIG
from medseg.io.review_marks import MARKS_FORMAT
from medseg.review.manifest import MANIFEST
from medseg.training.review_site import keep_worst_volumes, worst_cases, write_review_site
from medseg.training.validation import Validation
from tests.test_review import invoke, site_data, write_case


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_records")
    cases = [write_case(root, "synth_a", 1), write_case(root, "synth_b", 2)]
    res = invoke("review", root / "pred", "--images", root / "images", "--ref", root / "labels", "--out", root / "site")
    assert res.returncode == 0, res.stdout + res.stderr
    lesions = {c.name: site_data(root / "site", f"data/case_{c.name}.js")["lesions"] for c in cases}
    return SimpleNamespace(root=root, cases=cases, lesions=lesions)


def _lesion(data, case: str, status: str) -> dict:
    return next(les for les in data.lesions[case] if les["status"] == status)


def _mark(lesion: dict, case: str, decision: str, **extra) -> dict:
    mark = {"case": case, "kind": lesion["kind"], "id": lesion["id"], "decision": decision}
    return {**mark, "status": lesion["status"], "centroid_mm": lesion["centroid_mm"], **extra}


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------ evaluate --marks


@pytest.fixture(scope="module")
def marked(data, tmp_path_factory):
    """``evaluate --marks`` with: the false positive of synth_a rejected, a matched lesion of
    synth_a accepted, synth_b's missed lesion rejected, a mark whose lesion has moved, a mark on
    a lesion id synth_b does not have, a comment alone and a scan mark."""
    fp, hit = _lesion(data, "synth_a", "false_positive"), _lesion(data, "synth_a", "matched")
    miss, other = _lesion(data, "synth_b", "missed"), _lesion(data, "synth_b", "false_positive")
    moved = {**_mark(other, "synth_b", "reject"), "centroid_mm": [c + 5.0 for c in other["centroid_mm"]]}
    marks = [
        _mark(fp, "synth_a", "reject", comment="vessel"),
        _mark(hit, "synth_a", "accept"),
        _mark(miss, "synth_b", "reject"),
        moved,
        {"case": "synth_b", "kind": "pred", "id": 99, "decision": "reject"},
        {"case": "synth_b", "kind": "pred", "id": 1, "decision": "", "comment": "look again"},
        {"case": "synth_a", "kind": "scan", "id": None, "decision": "accept"},
    ]
    path = tmp_path_factory.mktemp("marks") / "review_marks.json"
    path.write_text(json.dumps({"format": MARKS_FORMAT, "marks": marks}))
    out = path.parent / "ev"
    res = invoke("evaluate", data.root / "pred", data.root / "labels", "--out", out, "--marks", path)
    assert res.returncode == 0, res.stdout + res.stderr
    return SimpleNamespace(out=out, res=res, fp=fp, hit=hit, miss=miss, other=other, path=path)


def test_marks_become_a_review_column(marked):
    rows = {(r["case"], r["kind"], int(r["id"])): r["review"] for r in _rows(marked.out / "lesions.csv")}
    assert rows[("synth_a", "pred", marked.fp["id"])] == "reject"
    assert rows[("synth_a", "pred", marked.hit["id"])] == "accept"
    assert rows[("synth_b", "gt", marked.miss["id"])] == "reject"
    assert rows[("synth_b", "pred", marked.other["id"])] == "stale"
    assert sum(1 for v in rows.values() if v) == 4  # the comment alone and the scan mark are no verdicts


def test_summary_counts_the_rejected_false_positives(marked):
    summary = json.loads((marked.out / "summary.json").read_text())
    review = summary["review"]
    assert review["marks"] == str(marked.path)
    assert (review["pred_rejected"], review["rejected_false_positives"], review["rejected_matched"]) == (1, 1, 0)
    assert (review["pred_accepted"], review["accepted_false_positives"]) == (1, 0)
    assert (review["gt_rejected"], review["gt_accepted"], review["stale"], review["not_found"]) == (1, 0, 1, 1)
    assert summary["fp"] == 2 and review["fp_after_review"] == 1
    assert review["fp_per_scan_after_review"] == pytest.approx(0.5) and summary["fp_per_scan"] == pytest.approx(1.0)
    assert "1 predicted lesion(s) rejected (1 false positive(s))" in marked.res.stdout
    assert "FP/scan after review 0.50 (before 1.00)" in marked.res.stdout
    assert marked.res.stderr.count("warning:") == 1 and "moved" in marked.res.stderr


def test_without_marks_the_tables_are_unchanged(data, tmp_path):
    res = invoke("evaluate", data.root / "pred", data.root / "labels", "--out", tmp_path / "ev", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "review" not in _rows(tmp_path / "ev" / "lesions.csv")[0]
    assert "review" not in json.loads((tmp_path / "ev" / "summary.json").read_text())


def test_marks_user_errors_are_one_line(data, marked, tmp_path):
    args = ["evaluate", data.root / "pred", data.root / "labels", "--out", tmp_path / "ev", "--marks"]
    res = invoke(*args, marked.path, "--min-lesion-voxels", "3")
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "--min-lesion-voxels" in res.stderr
    res = invoke(*args, marked.path, "--protocol", "brats2023")
    assert res.returncode == 2 and "--protocol" in res.stderr
    res = invoke(*args, tmp_path / "none.json")
    assert res.returncode == 2 and "none.json" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": MARKS_FORMAT, "marks": [{"case": "synth_a", "kind": "pred", "id": -1}]}))
    res = invoke(*args, bad)
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "bad.json" in res.stderr
    assert not (tmp_path / "ev").exists()  # refused before anything was written


# ------------------------------------------------------------------------------------ evaluate --tracking-uri


def test_evaluate_logs_its_tables_and_review_site(data, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "ev"
    res = invoke("evaluate", data.root / "pred", data.root / "labels", "--out", out, "--review", "--tracking-uri", uri)
    assert res.returncode == 0, res.stdout + res.stderr
    run_id = res.stdout.strip().splitlines()[-1].split()[-1]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "medseg-evaluate"
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate-ev"
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["lesion_recall"] == pytest.approx(summary["lesion_recall"])
    assert run.data.metrics["fp"] == 2 and run.data.params["eval.matching"] == "overlap"
    note = run.data.tags["mlflow.note.content"]
    assert f"--run-id {run_id} --artifact-path review" in note and str(out / "review" / "index.html") in note
    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="review", dst_path=str(tmp_path / "dl"), tracking_uri=uri
        )
    )
    local = {p.relative_to(out / "review").as_posix() for p in (out / "review").rglob("*") if p.is_file()}
    assert {p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()} == local
    assert {"index.html", "data/case_synth_a.js", "static/niivue.umd.js", MANIFEST} <= local
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {
        "evaluation/cases.csv",
        "evaluation/lesions.csv",
        "evaluation/summary.json",
        "evaluation/froc.png",
    }


def test_evaluate_tracking_needs_out_and_a_store(data, tmp_path):
    res = invoke("evaluate", data.root / "pred", data.root / "labels", "--tracking-uri", "sqlite:///x.db")
    assert res.returncode == 2 and "--out" in res.stderr and res.stderr.count("error:") == 1
    out = tmp_path / "ev"
    res = invoke(
        "evaluate", data.root / "pred", data.root / "labels", "--out", out, "--tracking-uri", "http://127.0.0.1:9"
    )
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "not logged" in res.stderr
    assert (out / "summary.json").is_file()  # the evaluation itself is kept


# ------------------------------------------------------------------------------------ the training run's site


def test_training_site_shows_the_kept_worst_cases(data, tmp_path):
    a, b = data.cases
    worst = [(c.name, c.image, c.pred, c.label, np.where(c.pred, 0.9, 0.02).astype(np.float16)) for c in (b, a)]
    val = Validation({}, worst=worst, spacing=(1.5, 1.5, 2.0))
    run_dir = tmp_path / "run"
    keep_worst_volumes(val, run_dir / "val_worst")
    assert [c.name for c in worst_cases(run_dir / "val_worst")] == ["synth_a", "synth_b"]
    cfg = load_config(DEMO_CONFIG, [f"data.dataset={tmp_path}"])
    site = write_review_site(run_dir, cfg, 3)
    assert site is not None and site.scans == 2 and site.errors == []
    scans = {s["name"]: s for s in site_data(run_dir / "report")["scans"]}
    assert (scans["synth_a"]["missed"], scans["synth_a"]["false_positives"]) == (1, 1)
    assert "epoch 3" in site_data(run_dir / "report")["title"]
    page = site_data(run_dir / "report", "data/case_synth_a.js")
    assert page["space"].startswith("model grid")  # not the scanner's coordinates
    predicted = [les for les in page["lesions"] if les["kind"] == "pred"]
    assert predicted and all(les["max_prob"] == pytest.approx(0.9, abs=1e-3) for les in predicted)
    assert write_review_site(tmp_path / "empty_run", cfg, 1) is None


# ------------------------------------------------------------------------------------ rewriting a site


def test_a_rewritten_site_removes_only_the_files_of_the_previous_one(data, tmp_path):
    out, pred_a = tmp_path / "site", tmp_path / "pred_a"
    first = invoke("review", data.root / "pred", "--ref", data.root / "labels", "--out", out)
    assert first.returncode == 0, first.stderr
    review = out / "review"
    before = {p.relative_to(review).as_posix() for p in review.rglob("*") if p.is_file()}
    assert "case_synth_b.html" in before and any(n.startswith("img/crop_synth_b") for n in before)
    (review / "notes.txt").write_text("mine")
    (review / "img" / "link.png").symlink_to(data.root / "images" / "synth_a.nii.gz")
    manifest = json.loads((review / MANIFEST).read_text())
    manifest["files"] += ["notes/../../../images/synth_a.nii.gz", str(data.root / "labels" / "synth_a.nii.gz")]
    manifest["files"] += ["img/link.png", "img"]
    (review / MANIFEST).write_text(json.dumps(manifest))
    pred_a.mkdir()
    for name in ("synth_a.nii.gz", "synth_a_prob.nii.gz"):
        shutil.copy(data.root / "pred" / name, pred_a / name)
    again = invoke("review", pred_a, "--ref", data.root / "labels", "--out", out)
    assert again.returncode == 0, again.stderr
    after = {p.relative_to(review).as_posix() for p in review.rglob("*") if p.is_file() or p.is_symlink()}
    assert not any("synth_b" in name for name in after)
    assert {"notes.txt", "img/link.png", "case_synth_a.html", "index.html", MANIFEST} <= after
    assert (data.root / "images" / "synth_a.nii.gz").is_file() and (data.root / "labels" / "synth_a.nii.gz").is_file()
    listed = set(json.loads((review / MANIFEST).read_text())["files"])
    assert listed == after - {"notes.txt", "img/link.png", MANIFEST}


# ------------------------------------------------------------------------------------ predict --review --quiet


@pytest.mark.parametrize("quiet", [True, False])
def test_predict_review_quiet_prints_no_address(data, tmp_path, monkeypatch, quiet):
    out = tmp_path / "masks"
    shutil.copytree(data.root / "pred", out)
    monkeypatch.setattr("medseg.inference.batch.predict_files", lambda *args, **kwargs: ([], []))
    args = ["predict", tmp_path / "best.pt", data.root / "images", "--out", out, "--review"]
    res = invoke(*args, *(["--quiet"] if quiet else []))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wrote the review of 2 scan(s)" in res.stdout
    assert ("review: file://" in res.stdout) is not quiet
