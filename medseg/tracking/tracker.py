"""Experiment tracking: MLflow through its own client, or a no-op tracker.

Default store (no server needed): ``runs/mlflow.db`` for every config in configs/, which train
into ``runs/<config name>``: the store lies in the ``runs`` folder that holds ``train.output_dir``
(:func:`default_store_folder`), so all their runs meet in one MLflow UI. A SQLite store keeps its
artifacts beside it, in ``mlartifacts/``. ``tracking.uri`` in the config or ``MLFLOW_TRACKING_URI``
point elsewhere (any MLflow server).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mlflow.entities import Dataset, DatasetInput, LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient

from medseg.config.schema import TrackingConfig
from medseg.errors import MedsegError
from medseg.io.write import write_text
from medseg.tracking.store import fail_fast, open_client, redact_uri, sqlite_path, store_lock


class Tracker(Protocol):
    """What the training loop needs from a tracker."""

    run_id: str | None

    def log_params(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, subdir: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, dataset: DatasetInput) -> None: ...
    def log_model(self, folder: Path, register_as: str | None, card: ModelCard | None = None) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Tracker that records nothing (``tracking.enabled: false``)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, str]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        return None

    def set_tags(self, tags: dict[str, str]) -> None:
        return None

    def log_dataset(self, dataset: DatasetInput) -> None:
        return None

    def log_model(self, folder: Path, register_as: str | None, card: ModelCard | None = None) -> None:
        return None

    def end(self, status: str = "FINISHED") -> None:
        return None


RUNS_FOLDER = "runs"  # a folder of this name holds the run folders of several configs, and their one store
STORE_FILE = "mlflow.db"


def default_store_folder(output_dir: Path) -> Path:
    """The folder of the default SQLite store of runs trained into ``output_dir``: its parent when
    that is a folder named ``runs`` (``runs/<config name>``, as every config in configs/: one store
    ``runs/mlflow.db`` for all of them), else ``output_dir`` itself (``runs``, ``demo_out/runs``)."""
    folder = output_dir.absolute()
    return folder.parent if folder.name != RUNS_FOLDER and folder.parent.name == RUNS_FOLDER else folder


def default_uri(output_dir: Path) -> str:
    """The default SQLite store of runs trained into ``output_dir`` (see :func:`default_store_folder`)."""
    return f"sqlite:///{(default_store_folder(output_dir) / STORE_FILE).resolve()}"


def resolve_uri(cfg_uri: str | None, output_dir: Path) -> str:
    """Config URI, else ``$MLFLOW_TRACKING_URI``, else the SQLite default."""
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(output_dir)


LOGGED_MODEL_NAME = "lesion-segmenter"


@dataclass(frozen=True)
class ModelCard:
    """What the logged model's page shows beside its files: metrics (e.g. the best epoch's
    validation figures) at ``step``, and a description (Markdown)."""

    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0
    description: str = ""


class MlflowTracker:
    """One MLflow run, driven through ``MlflowClient``."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        output_dir: Path,
        resume_run_id: str | None = None,
        display_name: str | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        fail_fast()  # medseg keeps unsent metrics and retries them itself
        self.uri = uri
        self.shown_uri = redact_uri(uri)  # in messages: no credentials
        self._pending: list[tuple[str, tuple]] = []  # (method, args) not yet accepted by the server
        self.spool = output_dir / f"unsent-mlflow-{run_name}.jsonl"
        self._logged_steps: set[int] = set()
        self._params: dict[str, str] = {}
        self._dataset: Dataset | None = None  # the run's training dataset, once logged
        try:
            self.client = open_client(uri)
        except Exception as exc:  # MLflow raises MlflowException, requests errors, sqlalchemy errors; filelock.Timeout
            raise unreachable(uri, exc) from None
        if resume_run_id is not None:
            self._reopen(resume_run_id)
            return
        try:
            exp_id = ensure_experiment(self.client, experiment, output_dir)
            tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None
            self.run_id: str | None = self.client.create_run(
                exp_id, run_name=display_name or run_name, tags=tags
            ).info.run_id
        except Exception as exc:  # MLflow raises MlflowException, requests errors, sqlalchemy errors
            raise unreachable(uri, exc) from None
        self.experiment_id = exp_id
        self._start_system_metrics(resume=False)

    def _reopen(self, run_id: str) -> None:
        """Continue an existing run (resume): its metric steps already logged are not sent twice."""
        try:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status="RUNNING")
            self._logged_steps = {m.step for m in self.client.get_metric_history(run_id, "train_loss")}
            self._params = dict(run.data.params)
            inputs = run.inputs.dataset_inputs if run.inputs else []
            self._dataset = inputs[0].dataset if inputs else None
        except Exception as exc:  # MlflowException, store errors
            raise MedsegError(
                f"MLflow run {run_id} at {self.shown_uri} cannot be reopened ({type(exc).__name__}: {str(exc)[:120]}); "
                "resume with the tracking store of the original run (tracking.uri / MLFLOW_TRACKING_URI)"
            ) from None
        self.run_id = run_id
        self.experiment_id = run.info.experiment_id
        self._start_system_metrics(resume=True)

    def _start_system_metrics(self, resume: bool) -> None:
        """CPU, memory (and with nvidia-ml-py, GPU) utilisation as ``system/*`` metrics every
        10 s, by MLflow's own monitor thread."""
        self._system = SystemMetricsMonitor(
            self.run_id, sampling_interval=10, resume_logging=resume, tracking_uri=self.uri
        )
        self._system.start()

    def log_params(self, params: dict[str, str]) -> None:
        self._params.update({k: v[:6000] for k, v in params.items()})  # also the logged model's
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue the metrics and send everything queued; an outage keeps them queued (see flush)."""
        if step in self._logged_steps:  # logged before a crash, then redone after resume
            return
        self._logged_steps.add(step)
        now = int(time.time() * 1000)
        self._pending.append(("metrics", (dict(metrics), step, now)))
        self.flush()

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self._pending.append(("artifact", (str(path), subdir)))
        self.flush()

    def flush(self) -> bool:
        """Send queued records in order; stop at the first failure (server gone) and keep the
        rest for the next call. Returns True when nothing is left."""
        while self._pending:
            kind, args = self._pending[0]
            try:
                if kind == "metrics":
                    metrics, step, ts = args
                    self.client.log_batch(
                        self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()]
                    )
                elif kind == "tags":
                    self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in args[0].items()])
                else:
                    self.client.log_artifact(self.run_id, *args)
            except Exception as exc:  # connection errors, MlflowException: keep and retry later
                warnings.warn(
                    f"MLflow at {self.shown_uri} unavailable ({type(exc).__name__}); "
                    f"{len(self._pending)} record(s) kept for retry",
                    stacklevel=2,
                )
                return False
            self._pending.pop(0)
        return True

    def set_tags(self, tags: dict[str, str]) -> None:
        """Queue the tags and send everything queued (an outage keeps them, see :meth:`flush`)."""
        self._pending.append(("tags", (dict(tags),)))
        self.flush()

    def log_dataset(self, dataset: DatasetInput) -> None:
        """The run's training dataset (fills the Dataset column of the runs table); under the
        store's lock, as parallel folds log the same dataset."""
        self._dataset = dataset.dataset
        with store_lock(self.uri):
            self.client.log_inputs(self.run_id, datasets=[dataset])

    def log_model(self, folder: Path, register_as: str | None, card: ModelCard | None = None) -> None:
        """Log an MLflow model folder (``MLmodel`` and its files) under the run's ``model/``
        (``runs:/<id>/model``, what ``medseg predict`` and ``mlflow.pyfunc.load_model`` read) and as
        a logged model of the run (MLflow's "Logged models" and Models tab; ``models:/<model_id>``)
        with the run's params, the ``card``'s metrics (linked to the run's dataset) and description,
        so its page reads like the run's. Registration under ``register_as``
        (``models:/<name>/<version>``) happens at :meth:`end`, once everything is sent."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.parent.relative_to(folder)
                self.log_artifact(path, "model" if str(rel) == "." else f"model/{rel}")
        self._register_as = register_as
        try:
            # not named "model": MLflow 3 would then take runs:/<id>/model for this entry, not the run's model/ folder
            card = card or ModelCard()
            tags = {"mlflow.note.content": card.description} if card.description else None
            model = self.client.create_logged_model(
                self.experiment_id,
                name=LOGGED_MODEL_NAME,
                source_run_id=self.run_id,
                tags=tags,
                params=self._params or None,
                model_type="medseg",
            )
            self.client.log_model_artifacts(model.model_id, str(folder))
            self.client.finalize_logged_model(model.model_id, "READY")
            self._model_metrics(model.model_id, card)
            self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])
            self.model_id: str | None = model.model_id
        except Exception as exc:  # the run's own model/ artifacts are what predict needs; this is a view on them
            print(
                f"warning: MLflow at {self.shown_uri}: the logged-model entry was not created "
                f"({type(exc).__name__}: {str(exc)[:120]})",
                file=sys.stderr,
            )

    def _model_metrics(self, model_id: str, card: ModelCard) -> None:
        """The card's metrics logged to the run as ``best/<key>`` at its step, linked to ``model_id``
        and to the run's dataset (the logged model's Metrics and Datasets)."""
        ds = self._dataset
        where = {"dataset_name": ds.name, "dataset_digest": ds.digest} if ds is not None else {}
        now = int(time.time() * 1000)
        metrics = [  # keys of their own: the run's val_* histories keep one point per epoch
            Metric(f"best/{k}", float(v), now, card.step, model_id=model_id, **where)
            for k, v in card.metrics.items()
            if math.isfinite(float(v))
        ]
        for i in range(0, len(metrics), 100):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 100])

    def _register(self) -> None:
        name = getattr(self, "_register_as", None)
        if not name:
            return
        with contextlib.suppress(MlflowException):  # already registered: add a version
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
        version = self.client.create_model_version(name, source, run_id=self.run_id)
        self.registered = f"models:/{name}/{version.version}"

    def end(self, status: str = "FINISHED", retries: int = 6) -> None:
        """Flush (retrying with back-off for about a minute), then close the run. What the server
        never accepted is written to ``output_dir/unsent-mlflow-<run>.jsonl`` for a later replay."""
        self._system.finish()
        for attempt in range(retries):
            if self.flush():
                break
            time.sleep(min(2**attempt, 20))
        if self._pending:
            earlier = self.spool.read_text() if self.spool.exists() else ""
            write_text(
                earlier
                + "".join(
                    json.dumps({"run_id": self.run_id, "kind": kind, "args": args}) + "\n"
                    for kind, args in self._pending
                ),
                self.spool,
            )
            print(
                f"warning: MLflow at {self.shown_uri} did not accept {len(self._pending)} record(s); saved in "
                f"{self.spool}",
                file=sys.stderr,
            )
            return
        try:
            self._register()
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # the records are in; registry or end status must not fail the run
            print(
                f"warning: MLflow at {self.shown_uri}: {type(exc).__name__} while closing the run: {str(exc)[:160]}",
                file=sys.stderr,
            )

    def ui_command(self) -> str:
        """How to open this run in the MLflow UI: the server command for a SQLite store, then the
        run page in the training (machine learning) view."""
        return ui_hint(self.uri, self.experiment_id, self.run_id)


def mlflow_executable() -> str:
    """``mlflow`` next to this Python (e.g. ``.venv/bin/mlflow``) when it is there, else plain ``mlflow``."""
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() and shutil.which("mlflow") != str(beside) else "mlflow"


def ensure_experiment(client: MlflowClient, experiment: str, output_dir: Path) -> str:
    """The id of ``experiment``, created when missing. A SQLite store keeps its artifacts beside
    it in ``mlartifacts/`` (an in-memory one in ``output_dir/mlartifacts``), not in the working
    directory nor in the output folder of whichever config made the experiment first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    location = None  # a server's own artifact root
    if client.tracking_uri.startswith("sqlite:"):
        db = sqlite_path(client.tracking_uri)
        location = ((output_dir if db is None else db.parent) / "mlartifacts").resolve().as_uri()
    return client.create_experiment(experiment, artifact_location=location)


def parent_run(uri: str, experiment: str, name: str, output_dir: Path) -> str:
    """A new run to nest others under (``tracking.parent_run_id``), in ``experiment``; the caller
    ends it with ``open_client(uri).set_terminated``.

    Raises:
        MedsegError: the store cannot be reached.
    """
    try:
        client = open_client(uri)
        return client.create_run(ensure_experiment(client, experiment, output_dir), run_name=name).info.run_id
    except Exception as exc:  # MlflowException, requests and sqlalchemy errors, filelock.Timeout
        raise unreachable(uri, exc) from None


def unreachable(uri: str, exc: Exception) -> MedsegError:
    """The user error for a store that cannot be opened (its address redacted)."""
    return MedsegError(
        f"MLflow tracking at {redact_uri(uri)} is unreachable ({type(exc).__name__}); start the server, "
        "fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled=false"
    )


def child_run(client: MlflowClient, parent_id: str, name: str, tags: dict[str, str] | None = None) -> str:
    """A new run nested under ``parent_id`` (same experiment, ``mlflow.parentRunId`` tag): the
    UI shows it folded under its parent (``medseg tune``, cross-validation folds)."""
    parent = client.get_run(parent_id)
    run = client.create_run(
        parent.info.experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_id, **(tags or {})}
    )
    return run.info.run_id


def ui_hint(uri: str, experiment_id: str, run_id: str | None) -> str:
    """The command (SQLite store) and the address of a run's page in MLflow's training view
    (``workflowType=machine_learning``: MLflow 3 opens its GenAI view otherwise); no credentials."""
    uri = redact_uri(uri)
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + "?workflowType=machine_learning"
    if uri.startswith("sqlite:"):
        return f"{mlflow_executable()} ui --backend-store-uri {uri}  then open http://127.0.0.1:5000/{page}"
    return f"open {uri.rstrip('/')}/{page}"


def make_tracker(
    cfg: TrackingConfig,
    output_dir: Path,
    run_name: str,
    resume_run_id: str | None = None,
    uri: str | None = None,
    display_name: str | None = None,
) -> Tracker:
    """MlflowTracker when ``cfg.enabled``, else NullTracker; ``resume_run_id`` reopens that run
    (in store ``uri`` when given). ``run_name`` names the run folder's spool file; the MLflow run
    is called ``display_name`` (default ``run_name``)."""
    if not cfg.enabled:
        return NullTracker()
    return MlflowTracker(
        uri or resolve_uri(cfg.uri, output_dir),
        cfg.experiment,
        run_name,
        output_dir,
        resume_run_id,
        display_name,
        cfg.parent_run_id,
    )
