"""A finished run read back through MlflowClient, as a user sees it in the UI (issue 16): name,
description, best epoch and its figures, lesion-size bins, held-back metrics, the UI hint."""

import base64
import gzip
import json
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from medseg.demo import run_demo

TINY = (
    "train.epochs=3",
    "train.val_every=1",
    "sampling.patch_size=[16,16,16]",
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "train.batch_size=2",
    "preprocess.target_spacing=null",
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlflow_run")
    result = run_demo(out, cases=5, test_cases=2, seed=3, overrides=TINY, progress=False)
    client = MlflowClient(f"sqlite:///{(out / 'runs' / 'mlflow.db').resolve()}")
    return result, client, client.get_run(result.run_id), out


@pytest.mark.slow
def test_run_name_and_description(demo_run):
    result, _, run, _ = demo_run
    assert run.info.run_name == "unet-focal_dice-lesion-s0"
    note = run.data.tags["mlflow.note.content"]
    best_epoch = int(run.data.tags["best_epoch"])
    assert f"epoch **{best_epoch}** of 3" in note and "val_lesion_f1" in note and "Held-back cases" in note
    assert f"medseg predict runs:/{result.run_id}/model" in note and "mm³" in note


@pytest.mark.slow
def test_best_epoch_and_its_metrics(demo_run):
    result, client, run, _ = demo_run
    metrics = run.data.metrics
    best_epoch = int(metrics["best_epoch"])
    assert str(best_epoch) == run.data.tags["best_epoch"] and 1 <= best_epoch <= 3
    history = {m.step: m.value for m in client.get_metric_history(result.run_id, "val_lesion_f1")}
    assert metrics["best_val_lesion_f1"] == history[best_epoch] == max(history.values())
    assert (
        metrics["best_val_dice"]
        == {m.step: m.value for m in client.get_metric_history(result.run_id, "val_dice")}[best_epoch]
    )


@pytest.mark.slow
def test_size_bin_and_heldback_metrics(demo_run):
    result, client, run, _ = demo_run
    bins = {k for k in run.data.metrics if k.startswith("val_lesion_recall_") and k.endswith("mm3")}
    assert bins and bins <= {
        "val_lesion_recall_lt10mm3",
        "val_lesion_recall_10to100mm3",
        "val_lesion_recall_100to1000mm3",
        "val_lesion_recall_ge1000mm3",
    }
    assert len(client.get_metric_history(result.run_id, sorted(bins)[0])) >= 1
    assert {"heldback_dice", "heldback_lesion_recall", "heldback_fp_per_scan"} <= set(run.data.metrics)
    assert not [k for k in run.data.metrics if k.startswith("test_")]
    assert {a.path for a in client.list_artifacts(result.run_id, "heldback")} >= {"heldback/cases.csv"}


@pytest.mark.slow
def test_review_site_of_the_worst_validation_cases(demo_run):
    result, client, run, out = demo_run
    run_dir = next((out / "runs").glob("*/best.pt")).parent
    overlaid = {
        p.name.rsplit("_missed", 1)[0].rsplit("_false_positive", 1)[0]
        for p in (run_dir / "report" / "overlays").glob("*.png")
    }
    kept = {p.name.split(".")[0] for p in (run_dir / "val_worst" / "pred").glob("*.nii.gz")}
    assert len(kept) == min(2, int(run.data.params["data.n_val"])) and overlaid <= kept
    site = (run_dir / "report" / "review" / "data" / "site.js").read_text()
    assert sorted(s["name"] for s in json.loads(site[site.index("=") + 1 :].strip().rstrip(";"))["scans"]) == sorted(
        kept
    )
    logged = {a.path for a in client.list_artifacts(result.run_id, "report/review")}
    assert {"report/review/index.html", "report/review/data", "report/review/static"} <= logged
    pages = {a.path for a in client.list_artifacts(result.run_id, "report/review/data")}
    assert pages == {"report/review/data/site.js", *(f"report/review/data/case_{c}.js" for c in kept)}
    note = run.data.tags["mlflow.note.content"]
    assert "**Review site**" in note and f"--run-id {result.run_id} --artifact-path report/review" in note
    assert str(run_dir / "report" / "review" / "index.html") in note


@pytest.mark.slow
def test_ui_hint_opens_the_training_view(demo_run):
    result, _, run, _ = demo_run
    assert (
        f"#/experiments/{run.info.experiment_id}/runs/{result.run_id}?workflowType=machine_learning"
        in result.ui_command
    )


@pytest.mark.slow
def test_dataset_input_fills_the_dataset_column(demo_run):
    from medseg.tracking.lineage import dataset_fingerprint

    result, _, run, _ = demo_run
    (entry,) = run.inputs.dataset_inputs
    assert entry.dataset.name == "data" and entry.dataset.digest == dataset_fingerprint(
        Path(entry.dataset.source.split('"')[3])
    )
    tags = {t.key: t.value for t in entry.tags}
    assert tags["mlflow.data.context"] == "training" and int(tags["cases.train"]) + int(tags["cases.val"]) == 5


@pytest.mark.slow
def test_tune_logs_a_child_run(demo_run):
    from medseg.calibration.tune import run_tune

    result, client, run, out = demo_run
    run_tune(next((out / "runs").glob("*/best.pt")), device="cpu", tracking_uri=client.tracking_uri)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert [c.info.run_name for c in children] == ["tune-max_f1"] and children[0].info.status == "FINISHED"
    assert "tuned_threshold" in children[0].data.metrics and "froc_cpm" in children[0].data.metrics
    assert {a.path for a in client.list_artifacts(children[0].info.run_id, "tuning")} >= {"tuning/froc.png"}


@pytest.mark.slow
def test_tuning_on_other_cases_is_a_child_run_only(demo_run, tmp_path):
    """A point chosen with ``tune --dataset`` (a site's copy of the model) is logged as a child run
    naming its cases; the training run keeps its own tuned point (no new ``tuned_*`` values)."""
    import shutil

    from medseg.calibration.tune import run_tune, validation_cases
    from medseg.nn.checkpoint import load_checkpoint

    result, client, run, out = demo_run
    copy = tmp_path / "site_b" / "best.pt"
    copy.parent.mkdir()
    shutil.copy(next((out / "runs").glob("*/best.pt")), copy)
    cases = validation_cases(load_checkpoint(copy))
    before = len(client.get_metric_history(result.run_id, "tuned_threshold"))
    run_tune(copy, device="cpu", tracking_uri=client.tracking_uri, max_fp_per_scan=2, cases=cases)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    site = [c for c in children if "tuning.cases" in c.data.tags]
    assert len(site) == 1 and site[0].info.run_name == "tune-max_fp_per_scan<=2"
    assert site[0].data.tags["tuning.cases"] == ",".join(c.case_id for c in cases)
    assert "tuned_threshold" in site[0].data.metrics
    assert len(client.get_metric_history(result.run_id, "tuned_threshold")) == before
    assert load_checkpoint(copy).operating_point.target == "max_fp_per_scan<=2"


@pytest.mark.slow
def test_logged_model_with_signature_loads_without_pickled_code(demo_run, monkeypatch):
    import pickle

    import cloudpickle
    import mlflow.pyfunc

    result, client, run, out = demo_run
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    (model,) = [m for m in models if m.source_run_id == result.run_id]
    assert model.name == "lesion-segmenter" and str(model.status).endswith("READY")
    model = client.get_logged_model(model.model_id)  # its page: params, metrics on the dataset, description
    assert model.params["loss.name"] == "focal_dice" and model.tags["mlflow.note.content"].strip()
    metrics = {m.key: m for m in model.metrics or []}
    best_epoch = int(run.data.tags["best_epoch"])
    assert "best/val_dice" in metrics and metrics["best/val_dice"].step == best_epoch
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_dice")}
    assert metrics["best/val_dice"].value == pytest.approx(history[best_epoch])
    assert metrics["best/val_dice"].dataset_name == run.inputs.dataset_inputs[0].dataset.name
    files = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert "model/MLmodel" in files and not [f for f in files if f.endswith(".pkl")]

    def refuse(*args, **kwargs):
        raise AssertionError("loading a medseg model unpickled something")

    monkeypatch.setattr(cloudpickle, "load", refuse)
    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", client.tracking_uri
    )  # undone after the test (mlflow.set_tracking_uri is not)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", client.tracking_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    assert [(s.name, s.required) for s in loaded.metadata.signature.inputs.inputs] == [
        ("scan", False),
        ("path", False),
        ("mask", False),
    ]
    scan = next((out / "data" / "imagesTs").glob("*.nii.gz"))
    table = loaded.predict(pd.DataFrame({"scan": [base64.b64encode(scan.read_bytes()).decode("ascii")]}))
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(table["mask"][0])))
    assert mask.shape == nib.load(str(scan)).shape
    assert list(table.columns) == ["mask", "lesions", "unlike_training"] and table["unlike_training"][0] == ""


@pytest.mark.slow
def test_params_and_source_are_filled(demo_run):
    _, _, run, _ = demo_run
    assert run.data.params and "None" not in run.data.params.values()
    assert run.data.params["train.epochs"] == "3" and "tracking.register_model" not in run.data.params
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.source.name"]


@pytest.mark.slow
def test_fetching_a_model_leaves_the_tracking_uri_alone(demo_run, tmp_path, monkeypatch):
    """predict runs:/... must not export the model's store as MLFLOW_TRACKING_URI to later runs."""
    import os

    from medseg.tracking.registry import fetch_model

    result, client, _, _ = demo_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert fetch_model(f"runs:/{result.run_id}/model", client.tracking_uri, tmp_path).name == "best.pt"
    assert "MLFLOW_TRACKING_URI" not in os.environ


@pytest.mark.slow
def test_a_run_nests_under_a_parent(demo_run, tmp_path):
    from medseg.config.load import load_config
    from medseg.demo import DEMO_CONFIG
    from medseg.tracking.tracker import parent_run
    from medseg.training.run import train

    _, client, _, out = demo_run
    parent = parent_run(client.tracking_uri, "ablation", "loss-ablation-s0", out / "runs")
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"data.dataset={out / 'data'}",
            f"train.output_dir={out / 'runs'}",
            *TINY,
            "train.epochs=1",
            "tracking.experiment=ablation",
            f"tracking.parent_run_id={parent}",
        ],
    )
    child = client.get_run(train(cfg, progress=False).run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.info.artifact_uri.startswith((out / "runs" / "mlartifacts").resolve().as_uri())
