"""``medseg runs`` where the user stands (issue 32): the stores it finds under the working folder,
the one default store every shipped config trains into, and the one-line error when none is found."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medseg.config.load import load_config
from medseg.errors import MedsegError
from medseg.tracking.runs import ExperimentNotFound, find_stores, runs_report, store_uris
from medseg.tracking.tracker import default_uri, make_tracker, resolve_uri
from tests.robustness.conftest import DEMO, TINY_TRAIN, assert_clean_error, describe, good_cases, run_cli, write_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("runs_data"), *good_cases(4))


def store(folder: Path) -> str:
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


def test_default_store_is_the_runs_folder_that_holds_the_output(tmp_path):
    runs = tmp_path / "runs"
    assert default_uri(runs / "brats_wt") == default_uri(runs / "demo") == default_uri(runs) == store(runs)
    assert default_uri(tmp_path / "demo_out" / "runs") == store(tmp_path / "demo_out" / "runs")  # make demo's store
    assert default_uri(tmp_path / "out") == store(tmp_path / "out")  # any other folder keeps its own
    assert default_uri(runs / "a" / "b") == store(runs / "a" / "b")


def test_every_shipped_config_trains_into_runs_of_its_name_and_one_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        cfg = load_config(path)
        assert cfg.train.output_dir == Path("runs") / path.stem and cfg.tracking.uri is None, path.name
        assert resolve_uri(cfg.tracking.uri, cfg.train.output_dir) == store(tmp_path / "runs"), path.name


def test_find_stores_looks_in_runs_and_demo_out_three_levels_down(tmp_path):
    for rel in (
        "runs/mlflow.db",
        "demo_out/runs/mlflow.db",
        "runs/a/b/c/mlflow.db",
        "runs/a/b/c/d/mlflow.db",
        "other/mlflow.db",
        "mlflow.db",
        "runs/x/mlflow.db/keep",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    found = find_stores(tmp_path)
    assert found == [
        (tmp_path / rel).resolve() for rel in ("runs/mlflow.db", "demo_out/runs/mlflow.db", "runs/a/b/c/mlflow.db")
    ]


def test_which_stores_an_option_or_the_environment_picks(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mlflow.db").touch()
    cfg = load_config(DEMO, [f"train.output_dir={tmp_path / 'elsewhere' / 'runs'}"])
    assert store_uris(tmp_path) == [store(tmp_path / "runs")]
    assert store_uris(tmp_path, config=cfg) == [store(tmp_path / "elsewhere" / "runs")]
    assert store_uris(tmp_path, "sqlite:///given.db", cfg) == ["sqlite:///given.db"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert store_uris(tmp_path) == ["http://tracking:5000"]
    assert store_uris(tmp_path, "sqlite:///given.db") == ["sqlite:///given.db"]
    with pytest.raises(MedsegError, match=r"no MLflow store found .*--tracking-uri.*--config"):
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
        store_uris(tmp_path / "empty")


def log_run(cfg, metric: float, file: Path) -> str:
    """A run as ``medseg train`` makes it (its tracker, into the config's default store), without training."""
    tracker = make_tracker(cfg.tracking, Path(cfg.train.output_dir), "r", display_name=f"run-{cfg.tracking.experiment}")
    tracker.log_metrics({"best_val_lesion_recall": metric}, step=1)
    tracker.log_artifact(file)
    tracker.end()
    return tracker.run_id


def test_two_configs_runs_meet_in_one_store_and_one_listing(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "note.txt").write_text("x")
    brats, ms = load_config(CONFIGS / "brats_wt.yaml"), load_config(CONFIGS / "ms_flair.yaml")
    ids = [log_run(brats, 0.9, tmp_path / "note.txt"), log_run(ms, 0.4, tmp_path / "note.txt")]
    client = MlflowClient(store(tmp_path / "runs"))
    for run_id in ids:  # artifacts beside the shared store, not in one config's folder
        assert client.get_run(run_id).info.artifact_uri.startswith(
            (tmp_path / "runs" / "mlartifacts").resolve().as_uri()
        )
    demo = MlflowClient(store(tmp_path / "demo_out" / "runs"))  # make demo's store, found as well
    demo.set_terminated(demo.create_run(demo.create_experiment("medseg-demo")).info.run_id)

    report = runs_report(store_uris(tmp_path), sort="recall")
    sections = report.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == [
        f"store: {store(tmp_path / folder)}" for folder in ("runs", "demo_out/runs")
    ]
    rows = [line.split()[:2] for line in sections[0].splitlines()[2:]]
    assert sections[0].splitlines()[1].split()[:3] == ["experiment", "run", "name"]
    assert rows == [
        ["medseg-brats-wt", "run-medseg-brats-wt"],
        ["medseg-ms-flair", "run-medseg-ms-flair"],
    ]  # best recall first
    assert [line.split()[0] for line in sections[1].splitlines()[2:]] == ["medseg-demo"]

    only = runs_report(store_uris(tmp_path), experiment="medseg-demo")
    assert only.count("store: ") == 1 and "medseg-demo" in only and "brats" not in only
    with pytest.raises(MedsegError, match=r"'nope' not found in the 2 stores .*medseg-brats-wt.*medseg-demo"):
        runs_report(store_uris(tmp_path), experiment="nope")
    with pytest.raises(ExperimentNotFound, match="experiments there: .*medseg-ms-flair"):
        runs_report([store(tmp_path / "runs")], experiment="nope")


@pytest.mark.slow
def test_runs_with_no_flags_lists_a_training_run_where_it_was_trained(tmp_path, dataset):
    work = tmp_path / "work"
    work.mkdir()
    res = run_cli(
        "train", DEMO, "--set", f"data.dataset={dataset}", *TINY_TRAIN, "--set", "tracking.enabled=true", cwd=work
    )
    assert res.returncode == 0, describe(res)
    shared = store(work / "runs")
    assert f"--backend-store-uri {shared} " in res.stdout  # the mlflow ui hint names the shared store
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing written outside runs/
    assert {p.name for p in (work / "runs").iterdir() if not p.name.startswith("mlflow.db")} == {"demo", "mlartifacts"}

    res = run_cli("runs", cwd=work)
    assert res.returncode == 0, describe(res)
    lines = res.stdout.splitlines()
    assert (
        lines[0] == f"store: {shared}"
        and len(lines) == 3
        and lines[2].split()[:2] == ["medseg-demo", "unet-focal_dice-lesion-s0"]
    )


def test_runs_finding_nothing_is_one_line_and_exit_2(tmp_path):
    res = run_cli("runs", cwd=tmp_path)
    line = assert_clean_error(res, str(tmp_path), "no MLflow store found", code=2)
    assert "--tracking-uri" in line and "--config" in line and "./runs" in line and "./demo_out" in line
    assert list(tmp_path.iterdir()) == []  # no empty store made
