"""``evaluate``: the lesion-wise evaluation of masks against references (the masks: :mod:`medseg.cli.commands.predict`).

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
    Connectivity,
    EmptyDice,
    Layout,
    Matching,
    Protocol,
    Split,
    channel_option,
    connectivity_option,
    dilate_option,
    empty_dice_option,
    evaluate_out_option,
    evaluate_pred_argument,
    evaluate_ref_argument,
    hd95_empty_option,
    label_option,
    layout_option,
    lesion_labels_option,
    marks_option,
    match_threshold_option,
    matching_option,
    min_lesion_mm3_option,
    min_lesion_voxels_option,
    one_to_one_option,
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
    from medseg.evaluation.evaluate import evaluate_dirs
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
    failed, summaries = [], []
    for group, values in classes:
        opts = EvalOptions(
            rule,
            dilate,
            min_lesion_voxels,
            min_lesion_mm3,
            values,
            empty_dice=float(empty_dice.value),
            hd95_one_empty=float("nan") if hd95_empty is None else hd95_empty,
            protocol=protocol.value,
        )
        if group:
            typer.echo(f"class {group} (label values {list(values or ())}):")
        summary, rows, errors = evaluate_dirs(
            pred, Path(ref), out, opts, cases, f"_{group}" if group else "", group, decisions
        )
        print_evaluation([] if quiet else rows, summary)
        if decisions is not None:
            print_review(summary)
        failed += errors
        summaries.append((group, summary))
    site = review_evaluation_step(pred, ref, cases, out, rule, dilate, classes[0][1], quiet) if review else None
    if tracking_uri is not None and out is not None:
        sources = {"pred": str(pred), "ref": str(ref), **({"marks": str(marks)} if marks else {})}
        log_evaluation_step(tracking_uri, out, sources, summaries, site)
    for line in failed:
        typer.echo(f"error: {line}", err=True)
    if failed:
        raise typer.Exit(1)


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
