"""``export``: a trained model for other runtimes (ONNX, for onnxruntime; an MLflow model folder,
for ``mlflow models serve``).

Heavy imports (torch, onnx) happen inside the command so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.common import check_out_folder, user_errors
from medseg.cli.options import ExportFormat, quiet_option, tracking_uri_option


@user_errors
def export(
    model: str = typer.Argument(
        ...,
        help="Checkpoint (best.pt), MLflow URI runs:/<id>/model or models:/<name>/<version>; several separated by "
        "commas, or a folder of runs: one model averaging their probabilities.",
    ),
    format_: ExportFormat = typer.Option(
        ExportFormat.onnx,
        "--format",
        help="onnx: model.onnx (batch and spatial axes dynamic; needs medseg[onnx]); mlflow: the MLflow model "
        "folder mlflow_model/ of one checkpoint, for 'mlflow models serve -m OUT/mlflow_model --env-manager local'.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder for model.onnx (the network, with the preprocessing, window, operating point, class names "
        "and spacing as metadata) or mlflow_model/; created when missing.",
    ),
    tracking_uri: str | None = tracking_uri_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Export a trained model to ONNX (for medseg predict --engine onnxruntime or any ONNX runtime)
    or as an MLflow model folder (for mlflow models serve).

    ONNX: onnxruntime then runs the file on a random window and the largest difference from the
    torch logits is printed; an export that differs by more than 1e-3 is refused.
    """
    check_out_folder(out, "--out")
    if format_ == ExportFormat.mlflow:
        from medseg.inference.pyfunc import export_pyfunc

        folder = export_pyfunc(Path(model), out)
        typer.echo(f"{folder}: MLflow model; serve it with: mlflow models serve -m {folder} --env-manager local")
        return
    from medseg.inference.export import export_onnx

    members = [m for m in model.split(",") if m] if "," in model else model
    done = export_onnx(members, out, tracking_uri)
    if not quiet:
        pre = done.metadata.plan.preprocess
        typer.echo(
            f"classes {', '.join(pre.classes)}; spacing {', '.join(f'{s:g}' for s in pre.spacing)} mm; "
            f"normalize {pre.normalize}; window {'x'.join(map(str, done.metadata.plan.roi_size))}; "
            f"threshold {done.metadata.operating_point.threshold:g}"
        )
        typer.echo(
            f"onnxruntime vs torch on a {'x'.join(map(str, done.window[2:]))} window: max |logit difference| "
            f"{done.max_difference:.2g}"
        )
    typer.echo(f"{done.path}: ONNX model ({format_.value}); predict with --engine onnxruntime")
