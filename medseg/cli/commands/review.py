"""``review``: the interactive review site of a folder of masks; and the ``--review`` step of
``predict`` and ``evaluate``, evaluate's ``--marks`` (reviewer marks into its tables) and its
``--tracking-uri`` (the evaluation and its site as an MLflow run).

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medseg.cli.common import check_exists, check_out_folder, ints, user_errors
from medseg.cli.options import lesion_labels_option, quiet_option, ref_option
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.config.schema import EvalConfig
    from medseg.data.case import Case
    from medseg.evaluation.reviewed import ReviewDecisions
    from medseg.review.site import SiteResult


@user_errors
def review(
    pred: Path = typer.Argument(
        ...,
        help="Folder of predicted masks (what medseg predict --out wrote), or one mask file; a <case>_prob map "
        "beside a mask gives its lesions' probabilities.",
    ),
    images: list[str] | None = typer.Option(
        None,
        "--images",
        help="Scans shown under the masks: files, folders or globs (repeatable), paired with the masks by file name "
        "(<case> or <case>_0000).",
    ),
    ref: Path | None = ref_option(),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder to write review/ into (index.html, case_<case>.html, data/, img/, static/) and, with --serve, "
        "the reviewer marks review_marks.json; default: the folder of the masks.",
    ),
    lesion_labels: str | None = lesion_labels_option(),
    max_display_voxels: int | None = typer.Option(
        None,
        "--max-display-voxels",
        min=1000,
        help="A scan with more voxels is shown as a coarser display copy (blocks of N^3 voxels); lesion coordinates "
        "stay those of the full-resolution masks. Default: 8000000 (a 200^3 scan).",
    ),
    serve: bool = typer.Option(
        False,
        "--serve",
        help="Then serve the site on 127.0.0.1 (the URL is printed) and save reviewer marks to "
        "<out>/review_marks.json; Ctrl-C stops.",
    ),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="The port of --serve (0: a free one)."),
    quiet: bool = quiet_option(),
) -> None:
    """Write an interactive review site: a page per scan with a 3D viewer (scan, prediction and
    reference), its lesion table (volume, probabilities, centroid, matched / missed / false
    positive) and reviewer marks; an index sorted worst first. Opens from the file, or with --serve."""
    from medseg.evaluation.tables import EvalOptions
    from medseg.review.display import DEFAULT_MAX_VOXELS
    from medseg.review.run import default_out, review_folder, serve_site
    from medseg.review.site import SiteOptions

    check_exists(pred, "PRED", "folder or file of predicted masks")
    out = out if out is not None else default_out(pred)
    check_out_folder(out, "--out")
    values = ints(lesion_labels, "--lesion-labels") if lesion_labels else None
    opts = SiteOptions(EvalOptions(lesion_labels=values), max_display_voxels or DEFAULT_MAX_VOXELS)
    site, cases = review_folder(pred, images or [], ref, out, opts)
    report(site, quiet)
    if serve:
        serve_site(out, cases, port, lambda url: typer.echo(f"serving the review at {url} (Ctrl-C stops)"))
    if site.errors:
        raise typer.Exit(1)


def report(site: SiteResult, quiet: bool = False) -> None:
    """The site's index and scan count, and one ``error:`` line per scan it could not show."""
    for line in site.errors:
        typer.echo(f"error: {line}", err=True)
    if not quiet:
        typer.echo(f"review: {site.index.resolve().as_uri()}")
    typer.echo(f"wrote the review of {site.scans} scan(s): {site.index}")


def review_predictions_step(out: Path, inputs: list[str], cases: list[Case], quiet: bool = False) -> None:
    """``predict --review``: the site of the masks just written into ``out``."""
    from medseg.review.run import review_predictions

    report(review_predictions(out, inputs, cases), quiet)


def check_review(review: bool, out: Path | None, classes: list) -> None:
    """``evaluate --review`` needs ``--out`` and one lesion class.

    Raises:
        MedsegError: naming the fix.
    """
    if review and out is None:
        raise MedsegError("--review: writes the site into --out; give --out FOLDER")
    if review and len(classes) > 1:
        raise MedsegError(
            "--review: a config with several data.lesion_classes; review each class's masks with medseg review"
        )


def review_evaluation_step(
    pred: Path,
    ref: str,
    cases: list[Case] | None,
    out: Path,
    rule: EvalConfig,
    dilate: int,
    values: tuple | None,
    quiet: bool = False,
) -> SiteResult:
    """``evaluate --review``: the site of ``pred`` against ``ref`` under evaluate's matching rule."""
    from medseg.evaluation.tables import EvalOptions
    from medseg.review.run import review_evaluation
    from medseg.review.site import SiteOptions

    opts = SiteOptions(EvalOptions(rule, dilate, lesion_labels=values))
    site = review_evaluation(pred, Path(ref), cases, out, opts)
    report(site, quiet)
    return site


def read_decisions(marks: Path | None, protocol: str, size_filter: bool) -> ReviewDecisions | None:
    """``evaluate --marks FILE``: its accept / reject marks on lesions (None without it).

    Raises:
        MedsegError: a missing or invalid marks file, or options that renumber lesions.
    """
    from medseg.io.review_marks import read_marks
    from medseg.review.marks import lesion_decisions

    if marks is None:
        return None
    if protocol != "medseg" or size_filter:
        raise MedsegError(
            "--marks: reviewer marks name the lesions of the whole masks (the review site's ids); drop "
            "--min-lesion-voxels / --min-lesion-mm3 and --protocol, which renumber them"
        )
    if not marks.is_file():
        raise MedsegError(f"{marks}: no such marks file (--marks); medseg review --serve saves review_marks.json")
    return lesion_decisions(read_marks(marks), str(marks))


def print_review(summary: dict) -> None:
    """One line on the reviewer marks applied to an evaluation, and a warning for marks not applied."""
    r = summary["review"]
    typer.echo(
        f"review marks {r['marks']}: {r['pred_rejected']} predicted lesion(s) rejected "
        f"({r['rejected_false_positives']} false positive(s)), {r['accepted_false_positives']} false positive(s) "
        f"accepted; FP/scan after review {r['fp_per_scan_after_review']:.2f} (before {summary['fp_per_scan']:.2f})"
    )
    if r["stale"] or r["not_found"]:
        typer.echo(
            f"warning: {r['stale']} mark(s) on lesions that moved since they were marked and {r['not_found']} on "
            "lesion ids these masks do not have were not applied (review column 'stale'); mark these masks again",
            err=True,
        )


def check_tracking(tracking_uri: str | None, out: Path | None) -> None:
    """``evaluate --tracking-uri`` logs what it writes into ``--out``.

    Raises:
        MedsegError: no ``--out``.
    """
    if tracking_uri is not None and out is None:
        raise MedsegError("--tracking-uri: evaluate logs the files it writes into --out; give --out FOLDER")


def log_evaluation_step(
    uri: str, out: Path, sources: dict[str, str], summaries: list[tuple[str, dict]], site: SiteResult | None
) -> None:
    """``evaluate --tracking-uri``: the evaluation as a new MLflow run; prints its id.

    Raises:
        MedsegError: the store cannot be reached (the files in --out are written already).
    """
    from medseg.review.logged import log_evaluation
    from medseg.tracking.store import redact_uri

    try:
        run_id = log_evaluation(uri, out, sources, summaries, site)
    except Exception as exc:  # MlflowException, requests and sqlalchemy errors, filelock.Timeout
        first = (str(exc).strip().splitlines() or [""])[0].replace(uri, redact_uri(uri))[:120]
        raise MedsegError(
            f"MLflow at {redact_uri(uri)}: the evaluation was not logged ({type(exc).__name__}: {first}); its files "
            f"are in {out}; start the server or fix --tracking-uri, then run evaluate again"
        ) from None
    typer.echo(f"logged to MLflow at {redact_uri(uri)}: run {run_id}")
