"""Experiment tracking: MLflow through its own client, or a no-op tracker.

Default store: ``sqlite:///<output_dir>/mlflow.db`` with artifacts under
``<output_dir>/mlartifacts`` (no server needed). ``tracking.uri`` in the config or
``MLFLOW_TRACKING_URI`` point elsewhere (any MLflow server).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from medseg.errors import MedsegError


class Tracker(Protocol):
    """What the training loop needs from a tracker."""

    run_id: str | None

    def log_params(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, subdir: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_model(self, checkpoint: Path, register_as: str | None) -> None: ...
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

    def log_model(self, checkpoint: Path, register_as: str | None) -> None:
        return None

    def end(self, status: str = "FINISHED") -> None:
        return None


def default_uri(output_dir: Path) -> str:
    """SQLite store inside ``output_dir``."""
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


def resolve_uri(cfg_uri: str | None, output_dir: Path) -> str:
    """Config URI, else ``$MLFLOW_TRACKING_URI``, else the SQLite default."""
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(output_dir)


class MlflowTracker:
    """One MLflow run, driven through ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str, run_name: str, output_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = (output_dir / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
                exp_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            self.run_id: str | None = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as exc:  # MLflow raises MlflowException, requests errors, sqlalchemy errors
            raise MedsegError(f"MLflow tracking at {uri} is unreachable ({type(exc).__name__}); start the server, "
                              "fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled=false") from None
        self.experiment_id = exp_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_model(self, checkpoint: Path, register_as: str | None) -> None:
        """Log the checkpoint under ``model/`` (``runs:/<id>/model``) and optionally register it
        (``models:/<name>/<version>``)."""
        from mlflow.exceptions import MlflowException

        self.client.log_artifact(self.run_id, str(checkpoint), "model")
        if register_as:
            try:
                self.client.create_registered_model(register_as)
            except MlflowException:
                pass  # already registered: add a version
            source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
            version = self.client.create_model_version(register_as, source, run_id=self.run_id)
            self.registered = f"models:/{register_as}/{version.version}"

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def ui_command(self) -> str:
        """The shell command that opens this store in the MLflow UI."""
        if self.uri.startswith("sqlite:"):
            return f"{mlflow_executable()} ui --backend-store-uri {self.uri}"
        return f"open {self.uri}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def mlflow_executable() -> str:
    """``mlflow`` next to this Python (e.g. ``.venv/bin/mlflow``) when it is there, else plain ``mlflow``."""
    import shutil
    import sys

    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() and shutil.which("mlflow") != str(beside) else "mlflow"


def make_tracker(cfg, output_dir: Path, run_name: str) -> Tracker:
    """MlflowTracker when ``cfg.enabled`` (a :class:`medseg.config.TrackingConfig`), else NullTracker."""
    if not cfg.enabled:
        return NullTracker()
    return MlflowTracker(resolve_uri(cfg.uri, output_dir), cfg.experiment, run_name, output_dir)


def fetch_model(uri: str, tracking_uri: str | None, dest: Path) -> Path:
    """Download the checkpoint behind ``runs:/<id>/model`` or ``models:/<name>/<version>``.

    Raises:
        MedsegError: no tracking URI, unknown run/model, or no checkpoint in it.
    """
    import mlflow

    uri_store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri_store:
        raise MedsegError(f"{uri}: an MLflow URI needs a tracking store; pass --tracking-uri (e.g. sqlite:///runs/mlflow.db) or set MLFLOW_TRACKING_URI")
    try:
        mlflow.set_tracking_uri(uri_store)
        mlflow.set_registry_uri(uri_store)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:  # MlflowException and store errors
        raise MedsegError(f"{uri}: cannot be fetched from {uri_store} ({str(exc).splitlines()[0][:160]}); check the run id / model name and version") from None
    found = [local] if local.is_file() else sorted(local.rglob("*.pt"))
    if not found:
        raise MedsegError(f"{uri}: holds no medseg checkpoint (*.pt); log one with 'medseg train'")
    return found[0]
