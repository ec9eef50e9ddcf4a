"""Opening an MLflow store, and its address as it may be written down.

:func:`open_client` is the one place a client (and so a store) is made: MLflow creates and
migrates a SQLite store when the first client opens it, and two processes doing that at once
(parallel ``medseg train --folds N --fold K``) race in the migration (one dies with ``duplicate
column name: step``). :func:`redact_uri` is the address without credentials, for everything that
is written to a file, logged or printed; :func:`live_uri` finds the credentials again to reconnect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from filelock import FileLock
from mlflow.tracking import MlflowClient

from medseg.config.schema import ExperimentConfig

LOCK_TIMEOUT_S = 600  # a store's creation takes seconds; a lock held longer belongs to a hung process
SECRET_WORDS = (
    "token",
    "passw",
    "pwd",
    "secret",
    "key",
    "signature",
    "credential",
    "auth",
)  # query names holding secrets
SECRET_NAMES = ("sig", "sas")  # short names matched whole (Azure SAS signatures)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other stores and in-memory SQLite."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def fail_fast() -> None:
    """One try and 10 s per MLflow HTTP request (unless the user set them): a dead server costs
    seconds, not MLflow's minutes of retries; medseg keeps what was not sent and says so."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def open_client(uri: str, registry_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` for the store ``uri`` (model registry ``registry_uri``, default the
    same store). A SQLite store is opened under a file lock ``<db>.lock`` beside the database, so
    that one process at a time creates or migrates it (the client's constructor does).

    Raises:
        OSError: the SQLite file's folder cannot be created.
        filelock.Timeout: another process held the lock for :data:`LOCK_TIMEOUT_S`.
        Exception: what ``MlflowClient`` raises for a store it cannot open.
    """
    with store_lock(uri):
        return MlflowClient(tracking_uri=uri, registry_uri=registry_uri)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the lock ``<db>.lock`` of a SQLite store (nothing for other stores, or a read-only
    folder where no store can be created): for the store's creation and for writes that insert a
    row shared between runs (a dataset input: two folds logging the same dataset at once would
    both insert it and one would die on the UNIQUE constraint).

    Raises:
        OSError: the SQLite file's folder cannot be created.
        filelock.Timeout: another process held the lock for :data:`LOCK_TIMEOUT_S`.
    """
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # as MLflow would: the lock file goes there
    if db is None or not os.access(db.parent, os.W_OK):
        yield
        return
    with FileLock(f"{db}.lock", timeout=LOCK_TIMEOUT_S):
        yield


def _secret(name: str) -> bool:
    name = unquote(name).lower()
    return name in SECRET_NAMES or any(word in name for word in SECRET_WORDS)


def redact_uri(uri: str) -> str:
    """``uri`` without credentials: no user-info (``user:password@``) and no query parameters
    named like a secret (token, password, key, secret, signature, ...). Other URIs come back
    unchanged, character for character (a SQLite path, a plain server address); one that cannot
    be parsed (a malformed IPv6 host) comes back as ``<unparseable URI>``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(p for p in parts.query.split("&") if p and not _secret(p.split("=", 1)[0]))
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def live_uri(stored: str | None, configured: str | None) -> str | None:
    """The store to reconnect to for a URI written down redacted (a checkpoint's, a saved
    config's): ``configured`` or ``$MLFLOW_TRACKING_URI`` when it is the same store with its
    credentials, else ``stored`` itself."""
    if stored is None:
        return configured
    same = [c for c in (configured, os.environ.get("MLFLOW_TRACKING_URI")) if c and redact_uri(c) == stored]
    return next((c for c in same if c != stored), stored)


def redact_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` as it is written down (config.yaml, checkpoints, MLflow params): its tracking URI redacted."""
    if cfg.tracking.uri is None:
        return cfg
    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": redact_uri(cfg.tracking.uri)})})
