"""``medseg runs``: the recent runs of an experiment as a terminal table, from any tracking URI.

Columns come from what :mod:`medseg.training` logs: the kept checkpoint's figures (``best_*``,
falling back to the last validation ``val_*`` for runs that have none) and, when present, the
held-back figures (``heldback_*``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from mlflow.entities import Run

from medseg.errors import MedsegError
from medseg.tracking.store import open_client, redact_uri, sqlite_path

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


def run_rows(uri: str, experiment: str, limit: int = 20) -> list[dict[str, Any]]:
    """One row per run (newest first, at most ``limit``): name, short id, status, start, columns.

    Raises:
        MedsegError: unreachable store or unknown experiment.
    """
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MLflow would create an empty store
        raise MedsegError(f"{uri}: no MLflow store there; pass --tracking-uri (e.g. sqlite:///runs/mlflow.db under train.output_dir) "
                          "or set MLFLOW_TRACKING_URI")
    try:
        client = open_client(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            raise MedsegError(f"experiment {experiment!r} not found at {redact_uri(uri)}; experiments there: {', '.join(names) or 'none'}")
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit)
    except MedsegError:
        raise
    except Exception as exc:  # MlflowException, store or connection errors
        raise MedsegError(f"MLflow at {redact_uri(uri)} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                          "pass --tracking-uri (e.g. sqlite:///runs/mlflow.db) or set MLFLOW_TRACKING_URI") from None
    return [{"name": r.info.run_name or "", "id": r.info.run_id[:8], "status": r.info.status,
             "started": r.info.start_time or 0, **{key: _metric(r, names) for key, (_, names, _) in COLUMNS.items()}}
            for r in runs]


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
    headers = ["run name", "id", "status", "started", *(h for h, _, _ in COLUMNS.values())]
    lines = [[r["name"], r["id"], r["status"], time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"] / 1000)),
              *("-" if math.isnan(r[k]) else fmt.format(r[k]) for k, (_, _, fmt) in COLUMNS.items())] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [headers, *lines])
