"""``synth``, ``check``, ``plan``, ``show``: making, checking, planning and looking at data.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from medseg.cli.common import (
    DATASET_HELP,
    check_out_file,
    check_out_folder,
    dataset_argument,
    ints,
    lesion_values,
    triple,
    user_errors,
)


@user_errors
def synth(out: Path = typer.Argument(..., help="Folder to create (MSD layout)."),
          cases: int = typer.Option(20, "--cases", min=1, help="Training cases (imagesTr/labelsTr)."),
          test_cases: int = typer.Option(0, "--test-cases", min=0, help="Held-back cases (imagesTs/labelsTs)."),
          seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same files."),
          shape: str = typer.Option("96,96,64", "--shape", help="Volume size in voxels X,Y,Z."),
          spacing: str = typer.Option("1.5,1.5,2.0", "--spacing", help="Voxel spacing in mm X,Y,Z.")) -> None:
    """Write a synthetic MRI-like lesion dataset (imagesTr/, labelsTr/, dataset.json)."""
    from medseg.data.synthetic import write_dataset

    size, mm = triple(shape, int, "--shape"), triple(spacing, float, "--spacing")
    check_out_folder(out, "OUT")
    path = write_dataset(out, cases, seed=seed, test_cases=test_cases, shape=size, spacing=mm)
    typer.echo(f"wrote {cases} + {test_cases} cases: {path}")


@user_errors
def check(dataset: str = typer.Argument(..., help=DATASET_HELP),
          layout: str = typer.Option("auto", "--layout", help="auto, msd, nnunet, list or pattern."),
          channel: Optional[List[str]] = typer.Option(None, "--channel", help="pattern layout: a glob per channel with {case}; others: a channel name to keep (repeatable)."),
          label: Optional[str] = typer.Option(None, "--label", help="pattern layout: the label glob with {case}."),
          lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Label values that are lesion, e.g. 1,2,3,4."),
          atol: float = typer.Option(1e-3, "--atol", min=0, help="Geometry tolerance (mm) between channels and label.")) -> None:
    """Validate every case and report all problems at once (exit 0 clean, 1 problems found)."""
    from medseg.data.check import check_dataset, format_report

    ds, cfg = dataset_argument(dataset, layout, channel, label)
    problems = check_dataset(ds, lesion_values(lesion_labels, cfg), atol)
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    typer.echo(format_report(ds, problems))
    if problems:
        raise typer.Exit(1)


@user_errors
def plan(dataset: str = typer.Argument(..., help=DATASET_HELP),
         out: Optional[Path] = typer.Option(None, "--out", help="plan.yaml to write (default: print only)."),
         layout: str = typer.Option("auto", "--layout", help="auto, msd, nnunet, list or pattern."),
         channel: Optional[List[str]] = typer.Option(None, "--channel", help="As for 'medseg check'."),
         label: Optional[str] = typer.Option(None, "--label", help="pattern layout: the label glob with {case}."),
         lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Label values that are lesion, e.g. 1,2,3,4."),
         memory_gb: float = typer.Option(8.0, "--memory-gb", min=0.1, max=4096, help="Training memory budget for the patch size (GPU memory, or RAM on CPU).")) -> None:
    """Fingerprint the dataset (spacing, shapes, intensities, lesion sizes) and plan spacing, patch and normalisation."""
    import yaml

    from medseg.config.schema import ModelConfig, SamplingConfig, TrainConfig
    from medseg.data.plan import fingerprint, make_plan, write_plan

    check_out_file(out, "--out", "plan.yaml")
    ds, cfg = dataset_argument(dataset, layout, channel, label)
    ds.require_clean()
    wanted = lesion_values(lesion_labels, cfg)
    model_cfg, sampling, train_cfg = (cfg.model, cfg.sampling, cfg.train) if cfg else (ModelConfig(), SamplingConfig(), TrainConfig())
    fp = fingerprint(ds, wanted)
    planned = make_plan(fp, model_cfg, train_cfg.batch_size * sampling.samples_per_volume, memory_gb)
    typer.echo(yaml.safe_dump({"plan": planned, "fingerprint": fp}, sort_keys=False, default_flow_style=None).rstrip())
    if out is not None:
        write_plan(out, fp, planned, str(ds.root), [*ds.files(), *([Path(dataset)] if cfg is not None else [])])
        typer.echo(f"wrote {out} (train with --set data.plan={out})")


@user_errors
def show(case: Path = typer.Argument(..., help="Scan file (.nii.gz, .nrrd, .mha); 4D: channel 0 is shown."),
         pred: Optional[Path] = typer.Option(None, "--pred", help="Predicted mask on the scan's grid (red contour)."),
         label: Optional[Path] = typer.Option(None, "--label", help="Ground-truth label on the scan's grid (green contour)."),
         out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: <case>_show.png in the current folder)."),
         lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Label values that are lesion, e.g. 1,2 (default: every non-zero value).")) -> None:
    """PNG of axial, coronal and sagittal slices (RAS) through the largest lesion, label and prediction outlined."""
    from medseg.viz.show import show_case

    check_out_file(out, "--out", "show.png")
    res = show_case(case, pred, label, out, ints(lesion_labels, "--lesion-labels") if lesion_labels else None)
    counts = ", ".join(f"{w} {n} lesion(s)" for w, n in (("ground truth", res.gt_lesions), ("prediction", res.pred_lesions)) if n is not None)
    typer.echo(f"wrote {res.png}" + (f" ({counts})" if counts else ""))
