"""``predict``: masks for scans (their lesion-wise evaluation: :mod:`medseg.cli.commands.evaluate`).

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medseg.cli.commands.review import (
    review_predictions_step,
)
from medseg.cli.common import (
    check_device,
    check_out_folder,
    rank,
    user_errors,
)
from medseg.cli.datasets import dataset_cases
from medseg.cli.options import (
    Engine,
    Layout,
    OutputFormat,
    Split,
    channel_option,
    dataset_option,
    device_option,
    label_option,
    layout_option,
    mask_option,
    min_lesion_mm3_option,
    min_lesion_voxels_option,
    quiet_option,
    review_option,
    set_option,
    split_option,
    tracking_uri_option,
    value,
)
from medseg.errors import MedsegError


def engine_option() -> Any:
    """``--engine`` of predict."""
    return typer.Option(
        Engine.torch,
        "--engine",
        help="What runs the network: torch, or onnxruntime (MODEL: the model.onnx of medseg export; CPU, or CUDA "
        "where onnxruntime has it); needs medseg[onnx].",
    )


def fill_holes_option() -> Any:
    """``--fill-holes`` of predict."""
    return typer.Option(
        None,
        "--fill-holes/--no-fill-holes",
        help="Fill cavities enclosed by a predicted lesion (before --min-lesion-mm3). Default: the model's "
        "inference.fill_holes.",
    )


def min_confidence_option() -> Any:
    """``--min-confidence`` of predict."""
    return typer.Option(
        None,
        "--min-confidence",
        metavar="C",
        min=0,
        max=1,
        help="Remove predicted lesions whose confidence (maximum probability) is below C; unlike a higher "
        "--threshold, the lesions kept keep their whole extent.",
    )


def output_format_option() -> Any:
    """``--output-format`` of predict."""
    return typer.Option(
        OutputFormat.nifti,
        "--output-format",
        help="nifti: the masks (NIfTI for DICOM scans). dicom-seg: also <case>_seg.dcm per DICOM scan, a DICOM "
        "Segmentation referencing its series, one segment per lesion class; needs medseg[dicom].",
    )


def predict_inputs_argument() -> Any:
    """The INPUTS argument of predict."""
    return typer.Argument(
        None,
        help="Scan files, folders or globs (.nii, .nii.gz, .nrrd, .mha); single-channel, or 4D with the channels last. "
        "A folder of DICOM files is one scan (its series with the most slices), and so is each subfolder of a folder "
        "that holds such folders.",
    )


def predict_model_argument() -> Any:
    """The MODEL argument of predict."""
    return typer.Argument(
        ...,
        help="Checkpoint (best.pt), MLflow URI runs:/<id>/model or models:/<name>/<version>; several separated by "
        "commas, or a folder of runs (every best.pt below it, e.g. the folds of train --folds): an ensemble "
        "averaging their probabilities. With --engine onnxruntime: the model.onnx of medseg export.",
    )


def predict_out_option() -> Any:
    """``--out`` of predict."""
    return typer.Option(
        ...,
        "--out",
        help=(
            "Folder for the masks (same file names as the scans), per-lesion "
            "tables and summary.csv; created when missing."
        ),
    )


def save_instances_option() -> Any:
    """``--save-instances`` of predict."""
    return typer.Option(False, "--save-instances", help="Also write <case>_lesions: each lesion numbered.")


def save_prob_option() -> Any:
    """``--save-prob`` of predict."""
    return typer.Option(False, "--save-prob", help="Also write <case>_prob (uint8, NIfTI scale 1/255).")


def skip_existing_option() -> Any:
    """``--skip-existing`` of predict."""
    return typer.Option(False, "--skip-existing", help="Skip scans whose mask exists (resume a batch).")


def table_option() -> Any:
    """``--table`` of predict."""
    return typer.Option(True, "--table/--no-table", help="Per-lesion table <case>_lesions.csv/.json.")


def threshold_option() -> Any:
    """``--threshold`` of predict."""
    return typer.Option(None, "--threshold", min=0, max=1, help="Override the model's probability threshold (0 to 1).")


def tta_option() -> Any:
    """``--tta`` of predict."""
    return typer.Option(
        None,
        "--tta/--no-tta",
        help="Mirror test-time augmentation (8 flips): about 8x the time, e.g. ~8 s instead of ~1 s per 96x96x64 "
        "scan on 2 CPU cores. Default: the model's setting (off).",
    )


@user_errors
def predict(
    model: str = predict_model_argument(),
    inputs: list[str] | None = predict_inputs_argument(),
    out: Path = predict_out_option(),
    dataset: str | None = dataset_option(),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    split: Split | None = split_option(),
    device: str = device_option(),
    threshold: float | None = threshold_option(),
    min_lesion_mm3: float | None = min_lesion_mm3_option(None),
    min_lesion_voxels: int = min_lesion_voxels_option(0),
    tta: bool | None = tta_option(),
    fill_holes: bool | None = fill_holes_option(),
    save_prob: bool = save_prob_option(),
    save_instances: bool = save_instances_option(),
    table: bool = table_option(),
    skip_existing: bool = skip_existing_option(),
    mask: str | None = mask_option(),
    min_confidence: float | None = min_confidence_option(),
    engine: Engine = engine_option(),
    output_format: OutputFormat = output_format_option(),
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
    print_predictions(rows, errors, quiet)
    if review:
        review_predictions_step(out, inputs or [], cases, quiet)
    if errors:
        raise typer.Exit(1)


def print_predictions(rows: list[dict], errors: list[str], quiet: bool) -> None:
    """One line per mask written (not with ``quiet``), one per scan that failed, then the count."""
    for row in rows if not quiet else []:
        typer.echo(
            f"{row['mask']}: {row['lesions']} lesion(s), {row['lesion_volume_mm3']:.0f} mm3, {row['seconds']:.1f} s"
        )
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    typer.echo(f"{len(rows)} scan(s) done, {len(errors)} failed")


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
