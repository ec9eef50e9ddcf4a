"""``medseg runs``: the recent runs as a terminal table, one per MLflow store.

Which stores: ``--tracking-uri``, else the store ``--config`` trains into, else
``$MLFLOW_TRACKING_URI``, else every ``mlflow.db`` found in ``./runs`` and ``./demo_out`` and up to
3 folders below them (where ``medseg train configs/*.yaml`` and ``make demo`` keep theirs). Every experiment of a store
is listed unless one is asked for. Columns come from what :mod:`medseg.training` logs: the kept
checkpoint's figures (``best_*``, falling back to the last validation ``val_*`` for runs that have
none) and, when present, the held-back figures (``heldback_*``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError
from medseg.tracking.store import open_client, redact_uri, sqlite_path
from medseg.tracking.tracker import RUNS_FOLDER, STORE_FILE, resolve_uri

SEARCH_FOLDERS = (RUNS_FOLDER, "demo_out")  # under the working folder: medseg train's store, make demo's
SEARCH_DEPTH = (
    3  # stores this many folders below them at most (demo_out/runs/mlflow.db and older runs/<config>/mlflow.db: 1)
)
POINT_IT = "pass --tracking-uri URI (e.g. sqlite:///runs/mlflow.db) or --config CONFIG (the store it trains into)"

# column -> (header, metric names tried in order, format)
COLUMNS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "epoch": ("best epoch", ("best_epoch",), "{:.0f}"),
    "recall": ("lesion recall", ("best_val_lesion_recall", "val_lesion_recall"), "{:.3f}"),
    "precision": ("precision", ("best_val_lesion_precision", "val_lesion_precision"), "{:.3f}"),
    "fp": ("FP/scan", ("best_val_fp_per_scan", "val_fp_per_scan"), "{:.2f}"),
    "dice": ("Dice", ("best_val_dice", "val_dice"), "{:.3f}"),
    "heldback_recall": ("held-back recall", ("heldback_lesion_recall",), "{:.3f}"),
}
SORTS = ("started", "name", *COLUMNS)


def _metric(run: Run, names: Sequence[str]) -> float:
    return next((run.data.metrics[n] for n in names if n in run.data.metrics), math.nan)


class ExperimentNotFound(MedsegError):
    """``--experiment`` names no experiment of a store; ``names`` are those it has."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


def find_stores(where: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """The SQLite stores (``mlflow.db`` files) in ``where/runs`` and ``where/demo_out`` and up to
    ``depth`` folders below them: absolute, each once, shallowest first, then by path.

    A fixed-depth glob per level rather than a recursive walk: run folders hold thousands of
    files, and a link loop cannot make it endless."""
    found: dict[Path, None] = {}
    for level in range(depth + 1):
        for top in SEARCH_FOLDERS:
            for db in sorted((where / top).glob("/".join(["*"] * level + [STORE_FILE]))):
                if db.is_file():
                    found.setdefault(db.resolve(), None)
    return list(found)


def store_uris(where: Path, tracking_uri: str | None = None, config: ExperimentConfig | None = None) -> list[str]:
    """The stores to list: ``tracking_uri``; else the store ``config`` trains into (its
    ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else its default store); else
    ``$MLFLOW_TRACKING_URI``; else every store :func:`find_stores` finds under ``where``.

    Raises:
        MedsegError: nothing given and no store under ``where`` (exit 2).
    """
    if tracking_uri:
        return [tracking_uri]
    if config is not None:
        return [resolve_uri(config.tracking.uri, Path(config.train.output_dir))]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return [os.environ["MLFLOW_TRACKING_URI"]]
    stores = find_stores(where)
    if not stores:
        raise MedsegError(
            f"{where}: no MLflow store found (looked for {STORE_FILE} in ./{SEARCH_FOLDERS[0]} and "
            f"./{SEARCH_FOLDERS[1]}, up to {SEARCH_DEPTH} folders below them); run it where you trained, or {POINT_IT}"
        )
    return [f"sqlite:///{db}" for db in stores]


def _experiments(client: MlflowClient, uri: str, experiment: str | None) -> dict[str, str]:
    """Experiment id -> name: ``experiment`` alone, or every experiment of the store.

    Raises:
        ExperimentNotFound: no experiment named ``experiment`` there.
    """
    if experiment is None:
        return {e.experiment_id: e.name for e in client.search_experiments()}
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ExperimentNotFound(
            f"experiment {experiment!r} not found at {redact_uri(uri)}; "
            f"experiments there: {', '.join(names) or 'none'}",
            names,
        )
    return {exp.experiment_id: exp.name}


def run_rows(uri: str, experiment: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """One row per run (newest first, at most ``limit``) of ``experiment`` (None: of every
    experiment of the store): experiment, name, short id, status, start, columns.

    Raises:
        ExperimentNotFound: unknown experiment.
        MedsegError: no store at ``uri``, or it cannot be read.
    """
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MLflow would create an empty store
        raise MedsegError(f"{uri}: no MLflow store there; {POINT_IT}, or set MLFLOW_TRACKING_URI")
    try:
        client = open_client(uri)
        experiments = _experiments(client, uri, experiment)
        runs = (
            client.search_runs(list(experiments), order_by=["attributes.start_time DESC"], max_results=limit)
            if experiments
            else []
        )
    except MedsegError:
        raise
    except Exception as exc:  # MlflowException, store or connection errors
        raise MedsegError(
            f"MLflow at {redact_uri(uri)} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            f"{POINT_IT}, or set MLFLOW_TRACKING_URI"
        ) from None
    return [
        {
            "experiment": experiments.get(r.info.experiment_id, r.info.experiment_id),
            "name": r.info.run_name or "",
            "id": r.info.run_id[:8],
            "status": r.info.status,
            "started": r.info.start_time or 0,
            **{key: _metric(r, names) for key, (_, names, _) in COLUMNS.items()},
        }
        for r in runs
    ]


def runs_report(
    uris: Sequence[str],
    experiment: str | None = None,
    sort: str = "started",
    ascending: bool | None = None,
    limit: int = 20,
) -> str:
    """The text ``medseg runs`` prints: per store, a ``store: URI`` line (no credentials), then
    its table (at most ``limit`` runs, sorted by ``sort``) or ``no runs``; stores apart by a blank line.

    Raises:
        MedsegError: unknown ``sort``; a store missing or unreadable; ``experiment`` in none of the stores.
    """
    sort_rows([], sort, ascending)  # checks --sort before MLflow is read
    sections, missing = [], []
    for uri in uris:
        try:
            rows = sort_rows(run_rows(uri, experiment, limit), sort, ascending)
        except ExperimentNotFound as exc:
            missing.append(exc)
            continue
        sections.append(f"store: {redact_uri(uri)}\n" + (format_table(rows) if rows else "no runs"))
    if not sections:
        if len(missing) == 1:
            raise missing[0]
        names = sorted({n for exc in missing for n in exc.names})
        raise MedsegError(
            f"experiment {experiment!r} not found in the {len(missing)} stores found; experiments there: "
            f"{', '.join(names) or 'none'}; drop --experiment to list them all, or {POINT_IT}"
        )
    return "\n\n".join(sections)


def sort_rows(rows: list[dict[str, Any]], key: str, ascending: bool | None = None) -> list[dict[str, Any]]:
    """Rows sorted by ``key`` (one of :data:`SORTS`); metrics best first (FP/scan lowest first),
    runs without the metric last.

    Raises:
        MedsegError: unknown key.
    """
    if key not in SORTS:
        raise MedsegError(f"--sort {key!r}: use one of {', '.join(SORTS)}")
    if ascending is None:
        ascending = key in ("fp", "name")
    present = [r for r in rows if not (isinstance(r[key], float) and math.isnan(r[key]))]
    missing = [r for r in rows if r not in present]
    return sorted(present, key=lambda r: r[key], reverse=not ascending) + missing


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table, one line per run."""
    headers = ["experiment", "run name", "id", "status", "started", *(h for h, _, _ in COLUMNS.values())]
    lines = [
        [
            r["experiment"],
            r["name"],
            r["id"],
            r["status"],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"] / 1000)),
            *("-" if math.isnan(r[k]) else fmt.format(r[k]) for k, (_, _, fmt) in COLUMNS.items()),
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [headers, *lines])
