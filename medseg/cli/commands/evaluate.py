"""``evaluate``: the lesion-wise evaluation of masks against references (the masks: :mod:`medseg.cli.commands.predict`).

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from medseg.cli.commands.review import (
    check_review,
    check_tracking,
    log_evaluation_step,
    print_review,
    read_decisions,
    review_evaluation_step,
)
from medseg.cli.common import (
    check_exists,
    check_out_folder,
    check_protocol,
    eval_rule,
    ints,
    lesion_values,
    print_summary,
    user_errors,
)
from medseg.cli.datasets import dataset_argument
from medseg.cli.options import (
    DATASET_HELP,
    Connectivity,
    EmptyDice,
    Layout,
    Matching,
    Protocol,
    Split,
    channel_option,
    label_option,
    layout_option,
    lesion_labels_option,
    min_lesion_mm3_option,
    min_lesion_voxels_option,
    protocol_option,
    quiet_option,
    review_option,
    set_option,
    split_option,
    tracking_uri_option,
    value,
)
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.data.case import Case
    from medseg.evaluation.reviewed import ReviewDecisions
    from medseg.evaluation.tables import EvalOptions


def connectivity_option() -> Any:
    """``--connectivity`` of evaluate."""
    return typer.Option(
        Connectivity.corners,
        "--connectivity",
        help=("Voxels joined into one lesion through 6 (faces), 18 (edges) or 26 (corners) neighbours."),
    )


def dilate_option() -> Any:
    """``--dilate`` of evaluate."""
    return typer.Option(
        0, "--dilate", min=0, help="overlap rule: grow each GT lesion by N voxels (on its own) before the overlap test."
    )


def empty_dice_option() -> Any:
    """``--empty-dice`` of evaluate."""
    return typer.Option(
        EmptyDice.one,
        "--empty-dice",
        help="Dice of a case whose prediction and reference are both empty: 1, or nan (left out of the mean and "
        "counted).",
    )


def evaluate_out_option() -> Any:
    """``--out`` of evaluate."""
    return typer.Option(
        None,
        "--out",
        help=(
            "Folder to write four files into (created when missing): cases.csv (per case), lesions.csv (per lesion), "
            "summary.json "
            "and froc.png (when every mask has its --save-prob map); for a config with several data.lesion_classes "
            "the four "
            "files of each class in <out>/<class>/."
        ),
    )


def evaluate_pred_argument() -> Any:
    """The PRED argument of evaluate."""
    return typer.Argument(
        ..., help="Folder of predicted masks, or one mask file (then REF is its reference label file)."
    )


def evaluate_ref_argument() -> Any:
    """The REF argument of evaluate."""
    return typer.Argument(
        ...,
        help=(
            "Reference: a folder of labels (same file names as the predictions), one label file "
            "(with a PRED file: that one case), or a dataset, its predictions named <case_id> "
            "(<case_id>_<class> for a config with several data.lesion_classes). " + DATASET_HELP
        ),
    )


def hd95_empty_option() -> Any:
    """``--hd95-empty`` of evaluate."""
    return typer.Option(
        None,
        "--hd95-empty",
        min=0,
        help="HD95 (mm) of a case where exactly one mask is empty: this penalty (BraTS 2023: 374); default: left out "
        "of the median and counted.",
    )


def marks_option() -> Any:
    """``--marks`` of evaluate."""
    return typer.Option(
        None,
        "--marks",
        help="Reviewer marks (the review_marks.json of medseg review): lesions.csv gets a review column (accept, "
        "reject, stale) and summary.json the rejected false positives and FP per scan after review. Lesion ids are "
        "the whole masks': not with --min-lesion-voxels, --min-lesion-mm3 or a BraTS --protocol.",
    )


def match_threshold_option() -> Any:
    """``--match-threshold`` of evaluate."""
    return typer.Option(None, "--match-threshold", help="iou/dsc threshold (default 0.5 / 0.1).")


def matching_option() -> Any:
    """``--matching`` of evaluate."""
    return typer.Option(
        Matching.overlap,
        "--matching",
        help="Lesion matching rule: overlap (a shared voxel), iou or dsc (over --match-threshold).",
    )


def one_to_one_option() -> Any:
    """``--one-to-one`` of evaluate."""
    return typer.Option(
        False,
        "--one-to-one",
        help="Match each lesion to at most one (Hungarian on IoU, as panoptica/picai_eval) instead of many-to-one.",
    )


@user_errors
def evaluate(
    pred: Path = evaluate_pred_argument(),
    ref: str = evaluate_ref_argument(),
    out: Path | None = evaluate_out_option(),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    split: Split | None = split_option(),
    matching: Matching = matching_option(),
    match_threshold: float | None = match_threshold_option(),
    connectivity: Connectivity = connectivity_option(),
    dilate: int = dilate_option(),
    min_lesion_voxels: int = min_lesion_voxels_option(0),
    min_lesion_mm3: float = min_lesion_mm3_option(0.0),
    empty_dice: EmptyDice = empty_dice_option(),
    one_to_one: bool = one_to_one_option(),
    hd95_empty: float | None = hd95_empty_option(),
    lesion_labels: str | None = lesion_labels_option(),
    protocol: Protocol = protocol_option(),
    marks: Path | None = marks_option(),
    review: bool = review_option(),
    tracking_uri: str | None = tracking_uri_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Per-case Dice, HD95, volumes, lesion-wise TP/FP/FN, recall, precision, F1; per-lesion table;
    summary; FROC (recall at 1/8..8 FP per scan, CPM, PNG) when predict wrote --save-prob maps."""
    from medseg.evaluation.tables import EvalOptions

    check_exists(pred, "PRED", "folder or file of predicted masks")
    check_exists(Path(ref), "REF", "reference folder, label file, dataset, case list or config")
    if out is not None:
        check_out_folder(out, "--out")
    rule = eval_rule(value(matching), match_threshold, int(connectivity.value), one_to_one)
    check_protocol(
        protocol.value,
        bool(dilate or min_lesion_voxels or min_lesion_mm3 or one_to_one or matching != Matching.overlap),
    )
    cases, classes = reference_classes(pred, ref, (value(layout), channel, label, set_), value(split), lesion_labels)
    check_review(review, out, classes)
    check_tracking(tracking_uri, out)
    decisions = read_decisions(marks, protocol.value, bool(min_lesion_voxels or min_lesion_mm3))
    base = EvalOptions(
        rule,
        dilate,
        min_lesion_voxels,
        min_lesion_mm3,
        empty_dice=float(empty_dice.value),
        hd95_one_empty=float("nan") if hd95_empty is None else hd95_empty,
        protocol=protocol.value,
    )
    failed, summaries = evaluate_classes(pred, Path(ref), out, base, cases, classes, decisions, quiet)
    site = review_evaluation_step(pred, ref, cases, out, rule, dilate, classes[0][1], quiet) if review else None
    if tracking_uri is not None and out is not None:
        sources = {"pred": str(pred), "ref": str(ref), **({"marks": str(marks)} if marks else {})}
        log_evaluation_step(tracking_uri, out, sources, summaries, site)
    for line in failed:
        typer.echo(f"error: {line}", err=True)
    if failed:
        raise typer.Exit(1)


def evaluate_classes(
    pred: Path,
    ref: Path,
    out: Path | None,
    base: EvalOptions,
    cases: list[Case] | None,
    classes: list[tuple[str, tuple[int, ...] | None]],
    decisions: ReviewDecisions | None,
    quiet: bool,
) -> tuple[list[str], list[tuple[str, dict]]]:
    """:func:`medseg.evaluation.evaluate.evaluate_dirs` once per lesion class (``base`` with the
    class's reference label values), each printed; returns (error lines, [(class, summary)])."""
    from medseg.evaluation.evaluate import evaluate_dirs

    failed, summaries = [], []
    for group, values in classes:
        if group:
            typer.echo(f"class {group} (label values {list(values or ())}):")
        opts = replace(base, lesion_labels=values)
        summary, rows, errors = evaluate_dirs(
            pred, ref, out, opts, cases, f"_{group}" if group else "", group, decisions
        )
        print_evaluation([] if quiet else rows, summary)
        if decisions is not None:
            print_review(summary)
        failed += errors
        summaries.append((group, summary))
    return failed, summaries


def reference_classes(
    pred: Path,
    ref: str,
    source: tuple[str, list[str] | None, str | None, list[str] | None],
    split: str | None,
    lesion_labels: str | None,
) -> tuple[list[Case] | None, list[tuple[str, tuple[int, ...] | None]]]:
    """``evaluate``'s reference: (its cases when it is a dataset, case list or config, else None:
    a folder of labels or one label file; [(class name, reference label values)], one per lesion
    class of a config with several ``data.lesion_classes`` (predictions ``<case_id>_<class>``),
    else one named "").

    Args:
        source: ``--layout``, ``--channel``, ``--label``, ``--set`` for a dataset reference.

    Raises:
        MedsegError: a mask file against a folder or dataset (or the other way round), an unsafe
            class name, or a problem of the dataset.
    """
    from medseg.config.schema import lesion_classes
    from medseg.io.names import check_name

    wanted = ints(lesion_labels, "--lesion-labels") if lesion_labels else None
    if not reference_is_dataset(pred, Path(ref), source):
        return None, [("", wanted)]
    ds, cfg = dataset_argument(ref, *source, split=split)
    cases = ds.require_clean()
    if cfg is not None and cfg.data.lesion_classes and len(cfg.data.lesion_classes) > 1:
        return cases, [
            (check_name(name, "data.lesion_classes name", ref), values) for name, values in lesion_classes(cfg.data)
        ]
    return cases, [("", lesion_values(lesion_labels, cfg))]


def reference_is_dataset(
    pred: Path, ref: Path, source: tuple[str, list[str] | None, str | None, list[str] | None]
) -> bool:
    """Whether ``evaluate``'s REF is read as a dataset, case list or config (else: a folder of
    labels beside a folder of predictions, or a label file beside one mask file).

    Raises:
        MedsegError: one of PRED and REF is a mask file and the other is not.
    """
    from medseg.io.paths import IMAGE_SUFFIXES

    pred_file, ref_file = pred.is_file(), ref.is_file() and ref.name.endswith(IMAGE_SUFFIXES)
    if pred_file and not pred.name.endswith(IMAGE_SUFFIXES):
        raise MedsegError(
            f"{pred}: PRED is not a folder of predicted masks nor a mask file (.nii.gz, .nii, .nrrd, .mha); "
            "pass the folder 'medseg predict --out' wrote, or one mask file"
        )
    if pred_file and not ref_file:
        raise MedsegError(
            f"{ref}: PRED {pred} is one mask file, so REF must be its reference label file (.nii.gz, .nrrd, .mha), "
            "not a folder, dataset or config; to evaluate many cases pass the folder of predicted masks as PRED"
        )
    if ref_file and not pred_file:
        raise MedsegError(
            f"{pred}: REF {ref} is one label file, so PRED must be its predicted mask file, not a folder; "
            "pass two files (one case) or two folders"
        )
    if ref_file:
        return False
    layout, channel, label, set_ = source
    return ref.is_file() or (ref / "dataset.json").is_file() or layout != "auto" or bool(channel or label or set_)


def print_evaluation(rows: list[dict], summary: dict) -> None:
    """One line per case, the summary and, when there is one, the FROC."""
    for row in rows:
        lesionwise = (
            f"  lesion-wise dice {row['lesionwise_dice']:.3f} HD95 {row['lesionwise_hd95_mm']:.1f} mm"
            if "lesionwise_dice" in row
            else ""
        )
        typer.echo(
            f"{row['case']}: dice {row['dice']:.3f}{lesionwise}  lesions gt {row['gt_lesions']} pred "
            f"{row['pred_lesions']} tp {row['tp']} fn {row['fn']} fp {row['fp']}"
        )
    print_summary(summary)
    if "froc" in summary:
        f = summary["froc"]
        typer.echo(
            "FROC recall at "
            + ", ".join(f"{r:g}: {v:.3f}" for r, v in f["recall_at_fp_per_scan"].items())
            + f" FP/scan; CPM {f['cpm']:.3f}"
        )
