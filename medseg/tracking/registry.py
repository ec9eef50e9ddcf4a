"""Models in an MLflow store: fetching the checkpoint behind ``runs:/`` and ``models:/`` URIs."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from medseg.errors import MedsegError
from medseg.tracking.store import open_client, redact_uri


def registered_source(uri: str, store: str) -> str:
    """Where the version behind ``models:/<name>/<version>`` (or ``models:/<name>@<alias>``) was
    logged from. Resolved through a client for ``store``: ``download_artifacts(registry_uri=...)``
    of MLflow 3.17 still asks the default registry for ``models:/`` URIs."""
    client = open_client(store, registry_uri=store)
    ref = uri[len("models:/") :].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_download_uri(name, client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    if not version.isdigit():
        raise MedsegError(f"{uri}: expected models:/<name>/<version> or models:/<name>@<alias>")
    return client.get_model_version_download_uri(name, version)


def fetch_model(uri: str, tracking_uri: str | None, dest: Path) -> Path:
    """Download the checkpoint behind ``runs:/<id>/model`` or ``models:/<name>/<version>``.

    Raises:
        MedsegError: no tracking URI, unknown run/model, or no checkpoint in it.
    """
    uri_store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri_store:
        raise MedsegError(
            f"{uri}: an MLflow URI needs a tracking store; pass --tracking-uri (e.g. sqlite:///runs/mlflow.db) or "
            "set MLFLOW_TRACKING_URI"
        )
    try:
        # the store passed per call: mlflow.set_tracking_uri would also export MLFLOW_TRACKING_URI to
        # this process and its children, redirecting every later run
        source = registered_source(uri, uri_store) if uri.startswith("models:/") else uri
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=uri_store)
        )
    except Exception as exc:  # MlflowException and store errors
        raise MedsegError(
            f"{uri}: cannot be fetched from {redact_uri(uri_store)} ({str(exc).splitlines()[0][:160]}); "
            "check the run id / model name and version"
        ) from None
    found = [local] if local.is_file() else sorted(local.rglob("*.pt"))
    if not found:
        raise MedsegError(f"{uri}: holds no medseg checkpoint (*.pt); log one with 'medseg train'")
    return found[0]
