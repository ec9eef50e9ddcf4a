"""Processes that run at the same time (issue 31, "Process safety" and "Crash hygiene"): parallel
``medseg train --folds N --fold K`` on one fresh MLflow store and one cv.json, two runs started in
the same second, two ``medseg predict`` on one ``--out``, a ``kill -9`` in the middle of a write;
and no tracking credentials in what is written down.

Processes that must start together wait on a ``multiprocessing.Barrier``; they are forked from the
test fork server (``tests.conftest.fork_context``), so they share nothing with pytest's process.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import medseg.ensembles.cv as cv
import medseg.training.run as run_module
from medseg.config.load import load_config
from medseg.io.write import atomic_write, remove_partials, remove_partials_below
from medseg.planning.resolve import plan_of_config
from medseg.tracking.store import live_uri, open_client, redact_config, redact_uri
from medseg.training.state import TrainResult
from medseg.training.trainer import Trainer
from tests.conftest import fork_context
from tests.robustness.conftest import DEMO, TINY_TRAIN, describe, partial_files, run_many

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])  # as medseg.io.write names temporary files
SECRET_URI = "https://alice:s3cret@mlflow.example.org:5000/base?token=abc&workspace=lab&api_key=k1"


def _join(procs: list, timeout: float = 240) -> None:
    for proc in procs:
        proc.join(timeout)
        assert proc.exitcode == 0, f"child exited with {proc.exitcode}"


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------- one fresh SQLite store


def _open_stores(uris: list[str], barrier, answers) -> None:
    """Child: for each store, wait for the other child, then open it and read it (MLflow's own
    migrations, not the test server's template copy: they are what races)."""
    preload = sys.modules.get("tests.preload")  # the fork server's preload (tests/conftest.py PRELOAD)
    if preload is not None:
        preload.fresh_store_template = False
    for uri in uris:
        barrier.wait()
        try:
            open_client(uri).search_experiments()
            answers.put("ok")
        except Exception as exc:  # what the test reports
            answers.put(f"{type(exc).__name__}: {str(exc)[:160]}")


def test_two_processes_create_one_fresh_sqlite_store(tmp_path):
    """Without the lock, one of two processes opening a fresh store dies in MLflow's schema
    migration (``duplicate column name: step``); with it both succeed, round after round."""
    uris = [f"sqlite:///{tmp_path / f'round{i}' / 'mlflow.db'}" for i in range(3)]  # folders made by open_client
    ctx = fork_context()  # children forked from the preloaded server, not fresh interpreters
    barrier, answers = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_open_stores, args=(uris, barrier, answers)) for _ in range(2)]
    for proc in procs:
        proc.start()
    got = [answers.get(timeout=240) for _ in range(2 * len(uris))]
    _join(procs)
    assert got == ["ok"] * 6


# -------------------------------------------------------------------------------- parallel folds


def _fake_member(member, progress: bool = True) -> TrainResult:
    """A fold that trains nothing: its validation count as its metric, after a pause."""
    out = Path(member.train.output_dir)
    time.sleep(0.5)  # the folds end close together
    return TrainResult(out, out / "best.pt", out / "last.pt", None, 0.25 + 0.5 * int(out.name[-1]))


def _one_fold(overrides: list[str], k: int, barrier, answers) -> None:
    """Child: ``medseg train CONFIG --folds 2 --fold k`` with the training stubbed out."""
    cfg = load_config(DEMO, overrides)
    cv.train_member = _fake_member
    barrier.wait()
    try:
        answers.put(cv.train_folds(cfg, 2, fold=k, progress=False).parent_run_id)
    except Exception as exc:  # what the test reports
        answers.put(f"{type(exc).__name__}: {str(exc)[:160]}")


def test_parallel_folds_share_cv_json_and_one_parent_run(tmp_path, good_dataset):
    """Two fold processes at once on a fresh folder and store: one parent run, which both use
    and which ends FINISHED with the mean of both folds; cv.json keeps both folds' results."""
    out = tmp_path / "runs"
    overrides = [f"data.dataset={good_dataset}", f"train.output_dir={out}", "tracking.experiment=cv"]
    ctx = fork_context()  # children forked from the preloaded server, not fresh interpreters
    barrier, answers = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_one_fold, args=(overrides, k, barrier, answers)) for k in (0, 1)]
    for proc in procs:
        proc.start()
    parents = {answers.get(timeout=240) for _ in procs}
    _join(procs)
    state = json.loads(next(out.glob("cv2-s*/cv.json")).read_text())
    assert parents == {state["parent_run_id"]} and state["parent_run_id"]
    assert {k: v["best_metric"] for k, v in state["results"].items()} == {"0": 0.25, "1": 0.75}
    client = open_client(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cv").experiment_id])
    assert [r.info.run_id for r in runs] == [state["parent_run_id"]]  # no orphan parent
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics[f"cv_mean_{load_config(DEMO).train.select_metric}"] == pytest.approx(0.5)


def test_two_fold_commands_at_once_train_into_one_cross_validation(tmp_path, good_dataset):
    """The README's parallel folds, for real: two ``medseg train --folds 2 --fold K`` started
    together on a fresh output folder (fresh MLflow store) both finish, under one parent run."""
    out = tmp_path / "runs"
    args = [
        "train",
        DEMO,
        "--set",
        f"data.dataset={good_dataset}",
        "--set",
        f"train.output_dir={out}",
        *TINY_TRAIN,
        "--set",
        "tracking.enabled=true",
        "--set",
        "tracking.experiment=cv",
        "--folds",
        "2",
        "--fold",
    ]
    results = run_many([(*args, "0"), (*args, "1")])
    assert [r.returncode for r in results] == [0, 0], "\n".join(describe(r) for r in results)
    state = json.loads(next(out.glob("cv2-s*/cv.json")).read_text())
    assert sorted(state["results"]) == ["0", "1"]
    client = open_client(f"sqlite:///{out / 'mlflow.db'}")
    runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("cv").experiment_id])}
    parent = runs.pop(state["parent_run_id"])
    mean = (state["results"]["0"]["best_metric"] + state["results"]["1"]["best_metric"]) / 2
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[f"cv_mean_{load_config(DEMO).train.select_metric}"] == pytest.approx(mean)
    assert (
        sorted((r.info.status, r.data.tags["mlflow.parentRunId"]) for r in runs.values())
        == [("FINISHED", parent.info.run_id)] * 2
    )
    assert partial_files(out) == []


# ------------------------------------------------------------------------------ run folders


def test_two_runs_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module.time, "strftime", lambda fmt: "20260101-120000")
    (tmp_path / "20260101-120000").mkdir()  # another process's run, made a moment ago
    assert run_module.new_run_dir(tmp_path).name == "20260101-120000-2"
    barrier, made = threading.Barrier(4), []

    def start() -> None:
        barrier.wait()
        made.append(run_module.new_run_dir(tmp_path).name)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made) == [f"20260101-120000-{n}" for n in range(3, 7)]


def test_a_new_run_removes_what_a_killed_run_left_half_written(tmp_path, good_dataset, capsys):
    """kill -9 while last.pt was written left its temporary file; the next run in that output
    folder deletes it (the owner is gone) and keeps a live writer's."""
    old = tmp_path / "runs" / "20260101-000000"
    old.mkdir(parents=True)
    dead = old / f".last.pt.partial-{_dead_pid()}@{HOST}.x1y2z3.pt"
    live = old / "report" / f".val_best_cases.csv.partial-{os.getpid()}@{HOST}.a1b2c3.csv"
    live.parent.mkdir()
    dead.write_bytes(b"x" * 1000)
    live.write_text("id\n")
    cfg = load_config(
        DEMO, [f"data.dataset={good_dataset}", f"train.output_dir={tmp_path / 'runs'}", "tracking.enabled=false"]
    )
    run_dir, _ = run_module._open_run(cfg, 0, 1, None, None)
    assert not dead.exists() and live.exists() and run_dir.parent == old.parent and run_dir != old
    assert f"{tmp_path / 'runs'}: removed 1 half-written file(s)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- temporary files


def test_temporary_files_are_owned_by_their_process(tmp_path):
    """``remove_partials`` (run at the start of every predict) deletes the temporary files of
    processes that are gone and leaves those another live process is writing."""
    with atomic_write(tmp_path / "mine.nii.gz") as tmp:
        assert tmp.name.startswith(f".mine.nii.gz.partial-{os.getpid()}@{HOST}.") and tmp.name.endswith(".nii.gz")
        assert remove_partials(tmp_path) == 0 and tmp.exists()  # another predict starting on this --out
        tmp.write_bytes(b"mask")
    old = time.time() - 2 * 24 * 3600
    files = {
        "dead": f".a.nii.gz.partial-{_dead_pid()}@{HOST}.abc.nii.gz",
        "live": f".b.nii.gz.partial-{os.getpid()}@{HOST}.abc.nii.gz",
        "other_host": f".c.nii.gz.partial-{os.getpid()}@elsewhere-node.abc.nii.gz",
        "other_host_old": f".d.nii.gz.partial-{os.getpid()}@elsewhere-node.abc.nii.gz",
        "live_old": f".e.nii.gz.partial-{os.getpid()}@{HOST}.abc.nii.gz",
        "no_owner": ".f.nii.gz.partial-abc.nii.gz",
    }  # an older medseg's name
    for key, name in files.items():
        (tmp_path / name).write_bytes(b"x")
        if key.endswith("_old"):
            os.utime(tmp_path / name, (old, old))
    assert remove_partials(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([files["live"], files["other_host"], "mine.nii.gz"])


def test_remove_partials_below_goes_down_as_far_as_asked(tmp_path):
    dead = _dead_pid()
    for sub in ("", "a", "a/b", "a/b/c"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / sub / f".x.partial-{dead}@{HOST}.q.pt").write_bytes(b"x")
    assert remove_partials_below(tmp_path, 1) == 2
    assert remove_partials_below(tmp_path, None) == 2 and partial_files(tmp_path) == []


def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    synced: list[tuple[str, bool]] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(
            (os.readlink(f"/proc/self/fd/{fd}"), (tmp_path / "t.json").exists())
        )  # what, and whether renamed yet
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    with atomic_write(tmp_path / "t.json") as tmp:
        tmp.write_text("{}")
    assert synced == [(os.path.realpath(tmp), False), (os.path.realpath(tmp_path), True)]


def test_config_yaml_is_written_atomically_and_without_credentials(tmp_path, good_dataset, monkeypatch):
    """The run's config.yaml goes through atomic_write: a disk that fills in the middle leaves
    the previous file whole and no temporary file; a written one holds the tracking URI redacted."""
    cfg = load_config(DEMO, [f"data.dataset={good_dataset}", f"tracking.uri={SECRET_URI}"])
    trainer = SimpleNamespace(
        recorded_cfg=redact_config(cfg), run=SimpleNamespace(run_dir=tmp_path, tracker=None), prep=None
    )
    Trainer._record_run(trainer, resumed=True)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["tracking"]["uri"] == "https://mlflow.example.org:5000/base?workspace=lab"
    real = Path.write_text

    def disk_full(self: Path, text: str, *args, **kwargs) -> int:
        real(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    before = (tmp_path / "config.yaml").read_bytes()
    with pytest.raises(OSError):
        Trainer._record_run(trainer, resumed=True)
    monkeypatch.undo()
    assert (tmp_path / "config.yaml").read_bytes() == before and partial_files(tmp_path) == []


# ------------------------------------------------------------------------------------ credentials


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("sqlite:////data/runs/mlflow.db", "sqlite:////data/runs/mlflow.db"),
        ("sqlite:///runs/mlflow.db", "sqlite:///runs/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://bob:pw@host:5000", "http://host:5000"),
        ("https://ghp_token123@host/mlflow", "https://host/mlflow"),
        (SECRET_URI, "https://mlflow.example.org:5000/base?workspace=lab"),
        ("https://h/x?Access_Token=a&PASSWORD=b&client_secret=c&sig=d&sv=2024&apikey=e", "https://h/x?sv=2024"),
        ("https://h/x?token=a", "https://h/x"),
        ("databricks://profile", "databricks://profile"),
        ("http://[::1", "<unparseable URI>"),
    ],
)
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


def test_live_uri_finds_the_credentials_again(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shown = redact_uri(SECRET_URI)
    assert live_uri(shown, SECRET_URI) == SECRET_URI
    assert live_uri(shown, shown) == shown and live_uri(shown, "http://other:5000") == shown
    assert live_uri(None, "http://other:5000") == "http://other:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    assert live_uri(shown, shown) == SECRET_URI


def test_checkpoints_hold_the_tracking_uri_redacted(good_dataset):
    cfg = load_config(DEMO, [f"data.dataset={good_dataset}", f"tracking.uri={SECRET_URI}"])
    trainer = SimpleNamespace(
        cfg=cfg,
        recorded_cfg=redact_config(cfg),
        net=torch.nn.Linear(1, 1),
        prep=SimpleNamespace(plan=plan_of_config(cfg, ("image",))),
        run=SimpleNamespace(tracker=SimpleNamespace(run_id="r1", uri=SECRET_URI)),
        training_scans=None,
    )
    ckpt = Trainer.checkpoint(trainer, 1, {})
    assert ckpt.tracking_uri == redact_uri(SECRET_URI) and ckpt.config.tracking.uri == redact_uri(SECRET_URI)
    assert "s3cret" not in json.dumps(ckpt.to_payload()["config"]) and "abc" not in ckpt.to_payload()["tracking_uri"]
