"""Models in an MLflow store: fetching the checkpoint behind ``runs:/`` and ``models:/`` URIs.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from medseg.errors import MedsegError


def fetch_model(uri: str, tracking_uri: str | None, dest: Path) -> Path:
    """Download the checkpoint behind ``runs:/<id>/model`` or ``models:/<name>/<version>``.

    Raises:
        MedsegError: no tracking URI, unknown run/model, or no checkpoint in it.
    """
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
