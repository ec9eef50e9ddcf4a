"""Records on runs that already exist: what ``medseg tune``, the ensembles (``--folds``,
``--seeds``) and the demo add to a training run or a parent run after it ended; and whole runs
logged at once (``medseg evaluate --tracking-uri``, :func:`record_run`).

Every MLflow call of those stages goes through here (the live training run has
:class:`medseg.tracking.tracker.MlflowTracker`); the store is opened with
:func:`medseg.tracking.store.open_client` (under its lock), and the callers never hold a client.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mlflow.entities import Param

from medseg.tracking.store import fail_fast, open_client
from medseg.tracking.tracker import child_run, ensure_experiment

NOTE_TAG = "mlflow.note.content"  # the run page's description (Markdown)


def record(
    uri: str,
    run_id: str,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts: Sequence[tuple[Path, str]] = (),
    status: str | None = None,
) -> None:
    """Log ``metrics``, ``tags`` and ``artifacts`` ((file, artifact folder) pairs) on the run
    ``run_id`` of the store ``uri``; with ``status`` (e.g. ``FINISHED``) the run then ends.

    Raises:
        Exception: what MLflow raises for a store or run it cannot reach (callers decide whether
            that is a warning or an error).
    """
    client = open_client(uri)
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, float(value))
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    for path, folder in artifacts:
        client.log_artifact(run_id, str(path), folder)
    if status is not None:
        client.set_terminated(run_id, status)


def record_child(
    uri: str,
    parent_id: str,
    name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    artifacts: Sequence[tuple[Path, str]] = (),
) -> str:
    """A finished run nested under ``parent_id`` holding ``metrics`` and ``artifacts``; returns its id."""
    child = child_run(open_client(uri), parent_id, name, dict(tags))
    record(uri, child, metrics, None, artifacts, status="FINISHED")
    return child


def record_run(
    uri: str,
    experiment: str,
    name: str,
    output_dir: Path,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    artifacts: Sequence[tuple[Path, str]],
    note: Callable[[str], str],
) -> str:
    """A new finished run ``name`` in ``experiment`` (created when missing; a SQLite store keeps
    its artifacts beside it, see :func:`medseg.tracking.tracker.ensure_experiment`) holding
    ``params``, ``metrics``, ``artifacts`` and the description ``note(run_id)``; returns its id.

    Raises:
        Exception: what MLflow raises for a store it cannot reach.
    """
    fail_fast()
    client = open_client(uri)
    run_id = client.create_run(ensure_experiment(client, experiment, output_dir), run_name=name).info.run_id
    try:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
        record(uri, run_id, metrics, {NOTE_TAG: note(run_id)}, artifacts, status="FINISHED")
    except Exception:  # the run holds part of it: say so in its status, and report the failure
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def replace_model_checkpoint(uri: str, run_id: str, checkpoint: Path) -> None:
    """Put ``checkpoint`` in place of the logged model's ``model/artifacts/best.pt`` (the pyfunc
    model loads that file, so a tuned operating point reaches ``runs:/<id>/model``)."""
    with tempfile.TemporaryDirectory(prefix="medseg-tuned-") as tmp:
        shutil.copy(checkpoint, Path(tmp) / "best.pt")
        record(uri, run_id, artifacts=[(Path(tmp) / "best.pt", "model/artifacts")])


def run_metrics(uri: str, run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run."""
    return dict(open_client(uri).get_run(run_id).data.metrics)


def append_note(uri: str, run_id: str, section: str) -> None:
    """Add ``section`` (Markdown) to the end of the run page's description."""
    client = open_client(uri)
    note = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
    client.set_tag(run_id, NOTE_TAG, note + section)
