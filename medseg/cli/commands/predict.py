"""``predict`` and ``evaluate``: masks for scans and their lesion-wise evaluation.

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
    review_predictions_step,
)
from medseg.cli.common import (
    check_device,
    check_exists,
    check_out_folder,
    check_protocol,
    dataset_argument,
    eval_rule,
    ints,
    lesion_values,
    print_summary,
    rank,
    user_errors,
)
from medseg.cli.options import (
    DATASET_HELP,
    Connectivity,
    EmptyDice,
    Engine,
    Layout,
    Matching,
    OutputFormat,
    Protocol,
    Split,
    channel_option,
    device_option,
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


@user_errors
def predict(
    model: str = typer.Argument(
        ...,
        help="Checkpoint (best.pt), MLflow URI runs:/<id>/model or models:/<name>/<version>; several separated by "
        "commas, or a folder of runs (every best.pt below it, e.g. the folds of train --folds): an ensemble "
        "averaging their probabilities. With --engine onnxruntime: the model.onnx of medseg export.",
    ),
    inputs: list[str] | None = typer.Argument(
        None,
        help="Scan files, folders or globs (.nii, .nii.gz, .nrrd, .mha); single-channel, or 4D with the channels last. "
        "A folder of DICOM files is one scan (its series with the most slices), and so is each subfolder of a folder "
        "that holds such folders.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help=(
            "Folder for the masks (same file names as the scans), per-lesion "
            "tables and summary.csv; created when missing."
        ),
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help=(
            "Also predict the cases of a dataset (multi-channel cases: one file per channel; masks named <case_id>). "
            + DATASET_HELP
        ),
    ),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    split: Split | None = split_option(),
    device: str = device_option(),
    threshold: float | None = typer.Option(
        None, "--threshold", min=0, max=1, help="Override the model's probability threshold (0 to 1)."
    ),
    min_lesion_mm3: float | None = min_lesion_mm3_option(None),
    min_lesion_voxels: int = min_lesion_voxels_option(0),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Mirror test-time augmentation (8 flips): about 8x the time, e.g. ~8 s instead of ~1 s per 96x96x64 "
        "scan on 2 CPU cores. Default: the model's setting (off).",
    ),
    fill_holes: bool | None = typer.Option(
        None,
        "--fill-holes/--no-fill-holes",
        help="Fill cavities enclosed by a predicted lesion (before --min-lesion-mm3). Default: the model's "
        "inference.fill_holes.",
    ),
    save_prob: bool = typer.Option(False, "--save-prob", help="Also write <case>_prob (uint8, NIfTI scale 1/255)."),
    save_instances: bool = typer.Option(
        False, "--save-instances", help="Also write <case>_lesions: each lesion numbered."
    ),
    table: bool = typer.Option(True, "--table/--no-table", help="Per-lesion table <case>_lesions.csv/.json."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip scans whose mask exists (resume a batch)."),
    mask: str | None = typer.Option(
        None,
        "--mask",
        metavar="MASKS",
        help="Region masks (e.g. brain masks), each on its scan's grid: a folder, file or glob of masks named as the "
        "scans (case name, any image suffix), or a path with {case}, e.g. 'brain/{case}_mask.nii.gz'. Predicted "
        "lesions with more than half of their voxels outside the region (voxels > 0) are removed.",
    ),
    min_confidence: float | None = typer.Option(
        None,
        "--min-confidence",
        metavar="C",
        min=0,
        max=1,
        help="Remove predicted lesions whose confidence (maximum probability) is below C; unlike a higher "
        "--threshold, the lesions kept keep their whole extent.",
    ),
    engine: Engine = typer.Option(
        Engine.torch,
        "--engine",
        help="What runs the network: torch, or onnxruntime (MODEL: the model.onnx of medseg export; CPU, or CUDA "
        "where onnxruntime has it); needs medseg[onnx].",
    ),
    output_format: OutputFormat = typer.Option(
        OutputFormat.nifti,
        "--output-format",
        help="nifti: the masks (NIfTI for DICOM scans). dicom-seg: also <case>_seg.dcm per DICOM scan, a DICOM "
        "Segmentation referencing its series, one segment per lesion class; needs medseg[dicom].",
    ),
    tracking_uri: str | None = tracking_uri_option(),
    review: bool = review_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Segment scans; each mask has exactly its scan's shape, affine and orientation.

    Writes <case>.nii.gz masks (NRRD/MHA scans keep their format), per-lesion tables and
    summary.csv into --out. A scan that fails is reported and skipped; the exit code is then 1.
    """
    from medseg.inference.batch import PredictOptions, predict_files
    from medseg.inference.region import find_region_masks

    check_out_folder(out, "--out")
    check_device(device)
    check_engine(model, value(engine), value(output_format))
    opts = PredictOptions(
        threshold=threshold,
        min_lesion_mm3=min_lesion_mm3,
        min_lesion_voxels=min_lesion_voxels,
        tta=tta,
        fill_holes=fill_holes,
        prob=save_prob,
        instances=save_instances,
        table=table,
        skip_existing=skip_existing,
        region=find_region_masks(mask) if mask is not None else None,
        min_confidence=min_confidence,
        output_format=value(output_format),
    )
    cases = dataset_cases(dataset, value(layout), channel, label, set_, value(split))
    if not inputs and not cases:
        raise MedsegError("nothing to predict: give scan files/folders, or --dataset DATASET")
    members = [m for m in model.split(",") if m] if "," in model else model
    rows, errors = predict_files(
        members, inputs or [], out, device, opts, not quiet, tracking_uri, cases, engine=value(engine)
    )
    if rank() > 0:
        return
    for row in rows if not quiet else []:
        typer.echo(
            f"{row['mask']}: {row['lesions']} lesion(s), {row['lesion_volume_mm3']:.0f} mm3, {row['seconds']:.1f} s"
        )
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    typer.echo(f"{len(rows)} scan(s) done, {len(errors)} failed")
    if review:
        review_predictions_step(out, inputs or [], cases, quiet)
    if errors:
        raise typer.Exit(1)


def check_engine(model: str, engine: str, output_format: str) -> None:
    """The optional extras that ``--engine`` and ``--output-format`` need are installed, and an
    ONNX MODEL goes with ``--engine onnxruntime``.

    Raises:
        MedsegError: naming the option and the extra to install, or the option to add.
    """
    if engine == "onnxruntime":
        from medseg.inference.onnx_model import require_onnxruntime

        require_onnxruntime()
    elif model.endswith(".onnx"):
        raise MedsegError(f"{model}: an ONNX model runs with onnxruntime; add --engine onnxruntime")
    if output_format == "dicom-seg":
        from medseg.io.dicom_seg import require_highdicom

        require_highdicom()


def dataset_cases(
    dataset: str | None,
    layout: str,
    channel: list[str] | None,
    label: str | None,
    set_: list[str] | None,
    split: str | None,
) -> list[Case]:
    """``predict --dataset``'s cases ([] without it), read with the layout flags and ``--set``.

    Raises:
        MedsegError: layout flags, --set or --split without --dataset, or a problem of the dataset.
    """
    if dataset is None:
        given = [
            o
            for o, v in (
                ("--layout", layout != "auto"),
                ("--channel", channel),
                ("--label", label),
                ("--set", set_),
                ("--split", split),
            )
            if v
        ]
        if given:
            raise MedsegError(
                f"{'/'.join(given)}: describe the cases of --dataset; give --dataset DATASET or drop them"
            )
        return []
    return dataset_argument(dataset, layout, channel, label, set_, split)[0].require_clean()


@user_errors
def evaluate(
    pred: Path = typer.Argument(
        ..., help="Folder of predicted masks, or one mask file (then REF is its reference label file)."
    ),
    ref: str = typer.Argument(
        ...,
        help=(
            "Reference: a folder of labels (same file names as the predictions), one label file "
            "(with a PRED file: that one case), or a dataset, its predictions named <case_id> "
            "(<case_id>_<class> for a config with several data.lesion_classes). " + DATASET_HELP
        ),
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help=(
            "Folder to write four files into (created when missing): cases.csv (per case), lesions.csv (per lesion), "
            "summary.json "
            "and froc.png (when every mask has its --save-prob map); for a config with several data.lesion_classes "
            "the four "
            "files of each class in <out>/<class>/."
        ),
    ),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    split: Split | None = split_option(),
    matching: Matching = typer.Option(
        Matching.overlap,
        "--matching",
        help="Lesion matching rule: overlap (a shared voxel), iou or dsc (over --match-threshold).",
    ),
    match_threshold: float | None = typer.Option(
        None, "--match-threshold", help="iou/dsc threshold (default 0.5 / 0.1)."
    ),
    connectivity: Connectivity = typer.Option(
        Connectivity.corners,
        "--connectivity",
        help=("Voxels joined into one lesion through 6 (faces), 18 (edges) or 26 (corners) neighbours."),
    ),
    dilate: int = typer.Option(
        0, "--dilate", min=0, help="overlap rule: grow each GT lesion by N voxels (on its own) before the overlap test."
    ),
    min_lesion_voxels: int = min_lesion_voxels_option(0),
    min_lesion_mm3: float = min_lesion_mm3_option(0.0),
    empty_dice: EmptyDice = typer.Option(
        EmptyDice.one,
        "--empty-dice",
        help="Dice of a case whose prediction and reference are both empty: 1, or nan (left out of the mean and "
        "counted).",
    ),
    one_to_one: bool = typer.Option(
        False,
        "--one-to-one",
        help="Match each lesion to at most one (Hungarian on IoU, as panoptica/picai_eval) instead of many-to-one.",
    ),
    hd95_empty: float | None = typer.Option(
        None,
        "--hd95-empty",
        min=0,
        help="HD95 (mm) of a case where exactly one mask is empty: this penalty (BraTS 2023: 374); default: left out "
        "of the median and counted.",
    ),
    lesion_labels: str | None = lesion_labels_option(),
    protocol: Protocol = protocol_option(),
    marks: Path | None = typer.Option(
        None,
        "--marks",
        help="Reviewer marks (the review_marks.json of medseg review): lesions.csv gets a review column (accept, "
        "reject, stale) and summary.json the rejected false positives and FP per scan after review. Lesion ids are "
        "the whole masks': not with --min-lesion-voxels, --min-lesion-mm3 or a BraTS --protocol.",
    ),
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
