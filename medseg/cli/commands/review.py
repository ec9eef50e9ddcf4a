"""``review``: the interactive review site of a folder of masks; and the ``--review`` step of
``predict`` and ``evaluate``.

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


def review_predictions_step(out: Path, inputs: list[str], cases: list[Case]) -> None:
    """``predict --review``: the site of the masks just written into ``out``."""
    from medseg.review.run import review_predictions

    report(review_predictions(out, inputs, cases))


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
    pred: Path, ref: str, cases: list[Case] | None, out: Path, rule: EvalConfig, dilate: int, values: tuple | None
) -> None:
    """``evaluate --review``: the site of ``pred`` against ``ref`` under evaluate's matching rule."""
    from medseg.evaluation.tables import EvalOptions
    from medseg.review.run import review_evaluation
    from medseg.review.site import SiteOptions

    opts = SiteOptions(EvalOptions(rule, dilate, lesion_labels=values))
    report(review_evaluation(pred, Path(ref), cases, out, opts))
