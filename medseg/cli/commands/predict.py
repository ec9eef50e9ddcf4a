"""``predict``: masks for scans (their lesion-wise evaluation: :mod:`medseg.cli.commands.evaluate`).

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

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
    engine_option,
    fill_holes_option,
    label_option,
    layout_option,
    mask_option,
    min_confidence_option,
    min_lesion_mm3_option,
    min_lesion_voxels_option,
    output_format_option,
    predict_inputs_argument,
    predict_model_argument,
    predict_out_option,
    quiet_option,
    review_option,
    save_instances_option,
    save_prob_option,
    set_option,
    skip_existing_option,
    split_option,
    table_option,
    threshold_option,
    tracking_uri_option,
    tta_option,
    value,
)
from medseg.errors import MedsegError


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
