"""The MLflow record of a tuned operating point (``medseg tune``): a child run of each member's
training run, and on that run the chosen point and the tuned logged model, in the stores the user
named."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medseg.data.case import Case
from medseg.inference.region import RegionMasks
from medseg.nn.checkpoint import Checkpoint
from medseg.tracking.records import record, record_child, replace_model_checkpoint
from medseg.tracking.store import fail_fast, redact_uri


def user_store(stored: str, tracking_uri: str | None) -> str | None:
    """The address to log to for a checkpoint whose run lives in ``stored``: ``tracking_uri`` or
    ``$MLFLOW_TRACKING_URI`` when the user named that same store (with its credentials, which
    checkpoints hold redacted), else None: an address read from a file is never written to."""
    for uri in (tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri and stored in (uri, redact_uri(uri)):
            return uri
    return None


def tuned_on(cases: Sequence[Case] | None, region: RegionMasks | None) -> dict[str, str]:
    """MLflow tags naming what a point was chosen on: the cases of ``tune --dataset`` (None:
    the run's validation cases) and the region masks of ``--mask``."""
    ids = ",".join(c.case_id for c in cases) if cases is not None else "validation"
    named = {"tuning.cases": ids[:480] + ("..." if len(ids) > 480 else "")}
    return named | ({"tuning.mask": region.spec} if region is not None else {})


def log_tuning(
    tuned: Sequence[tuple[Checkpoint, Path]],
    chosen: dict,
    result: dict,
    files: Sequence[Path],
    tracking_uri: str | None,
    on: dict[str, str] | None = None,
) -> list[str]:
    """Log the tuning into each member's MLflow run (:func:`_log`) whose store the user named
    (:func:`user_store`). Members whose store the user did not name are left alone, with one
    ``warning:`` line; a store that fails gets one ``warning:`` line and is not tried again.
    ``on``: :func:`tuned_on` for a point chosen on other cases or with region masks.

    Returns:
        The run ids that got the tuning.
    """
    fail_fast()
    runs = [(ckpt, path) for ckpt, path in tuned if ckpt.mlflow_run_id and ckpt.tracking_uri]
    unnamed = [
        (path, redact_uri(c.tracking_uri)) for c, path in runs if user_store(c.tracking_uri, tracking_uri) is None
    ]
    if unnamed:
        path, uri = unnamed[0]
        others = f" (and {len(unnamed) - 1} more member(s))" if len(unnamed) > 1 else ""
        print(
            f"warning: {path}{others}: the tuning was not logged to MLflow: the store {uri!r} is read from the "
            "checkpoint, "
            "not given by you; pass --tracking-uri with that store (or set MLFLOW_TRACKING_URI) to log it there",
            file=sys.stderr,
        )
    logged, failed = [], set()
    for ckpt, path in runs:
        uri = user_store(ckpt.tracking_uri, tracking_uri)
        if uri is None or uri in failed:
            continue
        try:
            _log(uri, ckpt, path, chosen, result, files, on)
            logged.append(ckpt.mlflow_run_id)
        except Exception as exc:  # MlflowException, requests and sqlalchemy errors, filelock.Timeout
            failed.add(uri)
            first = (str(exc).strip().splitlines() or [""])[0].replace(uri, redact_uri(uri))[:120]
            print(
                f"warning: MLflow at {redact_uri(uri)}: the tuning was not logged ({type(exc).__name__}: {first}); "
                "the checkpoints hold the tuned point, run medseg tune again when the store is up to log it",
                file=sys.stderr,
            )
    return logged


def _log(
    uri: str,
    ckpt: Checkpoint,
    checkpoint: Path,
    chosen: dict,
    result: dict,
    files: Sequence[Path],
    on: dict[str, str] | None = None,
) -> None:
    """Record the tuning as a child run of the checkpoint's MLflow run (target, curve, FROC), put
    the chosen point on the training run too (``tuned_*``, for the runs table) and replace the
    logged model's checkpoint with the tuned one. A point chosen on other cases or with region
    masks (``on``: a site's copy of the model) is the child run only, with what it was chosen on
    in its tags: the training run and its logged model keep their own point."""
    run_id = ckpt.mlflow_run_id
    metrics = {
        "tuned_threshold": chosen["threshold"],
        "tuned_min_lesion_mm3": chosen["min_lesion_mm3"],
        "tuned_lesion_f1": chosen["lesion_f1"],
        "tuned_lesion_recall": chosen["lesion_recall"],
        "tuned_fp_per_scan": chosen["fp_per_scan"],
        "froc_cpm": result["cpm"],
        **{f"froc_recall_at_{r:g}fp": v for r, v in result["recall_at"].items()},
        **({"tuned_lesionwise_dice": chosen["lesionwise_dice"]} if "lesionwise_dice" in chosen else {}),
    }
    target = ckpt.operating_point.target or "max_f1"
    artifacts = [(path, "tuning") for path in files]
    record_child(uri, run_id, f"tune-{target}", {"tuning.target": target, **(on or {})}, metrics, artifacts)
    if on is not None:
        return
    record(uri, run_id, metrics, artifacts=artifacts)
    replace_model_checkpoint(uri, run_id, checkpoint)
