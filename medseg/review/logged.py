"""The review site in MLflow: the run description's section that links it, and ``medseg evaluate
--tracking-uri``, which logs an evaluation (its tables, figures and review site) as a run.

MLflow serves every artifact as a download (never as a page on its own address), so a site of
several files cannot be browsed inside the MLflow UI: the description names the artifact folder,
the command that downloads it and the local copy, and ``index.html`` is opened from disk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.review.site import SITE, SiteResult
from medseg.tracking.records import record_run
from medseg.tracking.store import redact_uri

EVALUATE_EXPERIMENT = "medseg-evaluate"  # unless $MLFLOW_EXPERIMENT_NAME names another
HEADLINE = ("dice", "lesion_recall", "lesion_precision", "lesion_f1", "fp_per_scan", "hd95_mm_median")


def site_note(run_id: str | None, artifact: str, local: Path, uri: str | None, what: str) -> str:
    """Markdown for a run description: the review site ``what`` is the artifact folder
    ``artifact`` (e.g. ``report/review``) of run ``run_id`` in store ``uri`` (shown without
    credentials), and lies at ``local`` (its ``index.html``) where it was written."""
    dst = f"mlflow-{(run_id or 'run')[:8]}"
    env = f"MLFLOW_TRACKING_URI={redact_uri(uri)} " if uri else ""
    download = f"{env}mlflow artifacts download --run-id {run_id} --artifact-path {artifact} --dst-path {dst}"
    return (
        f"\n\n**Review site** ({what}): the artifact folder `{artifact}/`, an interactive page per scan "
        f"(3D viewer, lesion table with matched / missed / false-positive lesions, reviewer marks). Open "
        f"`{local / 'index.html'}` where it was written, or download it and open "
        f"`{dst}/{Path(artifact).name}/index.html`:\n\n```\n{download}\n```"
    )


def summary_metrics(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The headline figures, lesion counts, FROC CPM and reviewer-mark counts of an ``evaluate``
    summary as MLflow metrics (``<prefix><name>``; None and NaN left out)."""
    counts = ("cases", "gt_lesions", "pred_lesions", "tp", "fn", "fp")
    picked = {k: summary.get(k) for k in (*HEADLINE, *counts)}
    if "froc" in summary:
        picked["froc_cpm"] = summary["froc"]["cpm"]
    picked |= {f"review_{k}": v for k, v in summary.get("review", {}).items()}
    return {
        f"{prefix}{k}": float(v)
        for k, v in picked.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def evaluation_files(
    out: Path, summaries: Sequence[tuple[str, dict]], site: SiteResult | None
) -> list[tuple[Path, str]]:
    """(file, artifact folder) of what ``evaluate`` wrote into ``out``: per class group its tables
    and summary (``evaluation/[<group>/]``), its FROC plot when it made one, and the review site
    (``review/...``, the files of its manifest)."""
    files = []
    for group, summary in summaries:
        folder = out / group if group else out
        names = ["cases.csv", "lesions.csv", "summary.json", *(["froc.png"] if "froc" in summary else [])]
        artifact = f"evaluation/{group}" if group else "evaluation"
        files += [(folder / name, artifact) for name in names if (folder / name).is_file()]
    for path in site.files if site is not None else []:
        files.append((path, path.parent.relative_to(out).as_posix()))
    return files


def log_evaluation(
    uri: str,
    out: Path,
    sources: dict[str, str],
    summaries: Sequence[tuple[str, dict]],
    site: SiteResult | None,
) -> str:
    """Log an evaluation as a new finished MLflow run in ``$MLFLOW_EXPERIMENT_NAME`` (default
    ``medseg-evaluate``), named ``evaluate-<out folder name>``: ``sources`` (pred, ref, marks) and
    the matching rule as params, :func:`summary_metrics` per class group (``<group>_`` prefix),
    the files of :func:`evaluation_files`, and a description linking the review site. Returns
    the run id.

    Raises:
        Exception: what MLflow raises for a store it cannot reach (the caller reports it).
    """
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EVALUATE_EXPERIMENT
    rule = summaries[0][1].get("rule", {}) if summaries else {}
    params = {**sources, **{f"eval.{k}": str(v) for k, v in rule.items()}}
    metrics: dict[str, float] = {}
    for group, summary in summaries:
        metrics |= summary_metrics(summary, f"{group}_" if group else "")

    def note(run_id: str) -> str:
        text = f"`medseg evaluate` of `{sources['pred']}` against `{sources['ref']}`; tables in `evaluation/`."
        if site is not None:
            text += site_note(run_id, SITE, (out / SITE).absolute(), uri, f"{site.scans} scan(s)")
        return text

    return record_run(
        uri,
        experiment,
        f"evaluate-{out.resolve().name}",
        out,
        params,
        metrics,
        evaluation_files(out, summaries, site),
        note,
    )
