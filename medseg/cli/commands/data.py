"""``synth``, ``check``, ``plan``, ``show``: making, checking, planning and looking at data.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.common import check_out_folder, ints, lesion_values, triple, user_errors
from medseg.cli.datasets import dataset_argument
from medseg.cli.options import (
    CASES_HELP,
    DATASET_HELP,
    TEST_CASES_HELP,
    Layout,
    channel_option,
    label_option,
    layout_option,
    lesion_labels_option,
    quiet_option,
    ref_option,
    seed_option,
    set_option,
    value,
)


@user_errors
def synth(
    out: Path = typer.Option(
        ...,
        "--out",
        help=(
            "Folder to write the dataset into (MSD layout: imagesTr/, labelsTr/, imagesTs/, labelsTs/, "
            "dataset.json); created when missing."
        ),
    ),
    cases: int = typer.Option(20, "--cases", min=1, help=CASES_HELP),
    test_cases: int = typer.Option(0, "--test-cases", min=0, help=TEST_CASES_HELP),
    seed: int = seed_option(),
    shape: str = typer.Option("96,96,64", "--shape", help="Volume size in voxels X,Y,Z."),
    spacing: str = typer.Option("1.5,1.5,2.0", "--spacing", help="Voxel spacing in mm X,Y,Z."),
) -> None:
    """Write a synthetic MRI-like lesion dataset (imagesTr/, labelsTr/, dataset.json)."""
    from medseg.data.synthetic import write_dataset

    size, mm = triple(shape, int, "--shape"), triple(spacing, float, "--spacing")
    check_out_folder(out, "--out")
    path = write_dataset(out, cases, seed=seed, test_cases=test_cases, shape=size, spacing=mm)
    typer.echo(f"wrote {cases} + {test_cases} cases: {path}")


@user_errors
def check(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    lesion_labels: str | None = lesion_labels_option(),
    atol: float = typer.Option(1e-3, "--atol", min=0, help="Geometry tolerance (mm) between channels and label."),
    quiet: bool = quiet_option(),
) -> None:
    """Validate every case and report all problems at once (exit 0 clean, 1 problems found); a
    config's held-out cases (data.exclude_cases) are checked too."""
    from medseg.data.check import check_dataset, format_report
    from medseg.data.sources.discover import with_held_out

    ds, cfg = dataset_argument(dataset, value(layout), channel, label, set_)
    ds = with_held_out(ds, cfg.data) if cfg is not None else ds
    problems = check_dataset(ds, lesion_values(lesion_labels, cfg), atol)
    for line in problems if not quiet else []:
        typer.echo(f"problem: {line}", err=True)
    typer.echo(format_report(ds, problems))
    if problems:
        raise typer.Exit(1)


@user_errors
def plan(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write plan.yaml into (created if missing; default: print)."
    ),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    lesion_labels: str | None = lesion_labels_option(),
    memory_gb: float | None = typer.Option(
        None,
        "--memory-gb",
        min=0.1,
        max=4096,
        help="Training memory budget for the patch size (GPU memory, or RAM on CPU); default: the config's "
        "sampling.memory_gb (8).",
    ),
) -> None:
    """Fingerprint the dataset (spacing, shapes, intensities, lesion sizes); plan spacing, patch and normalisation."""
    import yaml

    from medseg.config.plan import patches_per_step
    from medseg.config.schema import ModelConfig, SamplingConfig, TrainConfig
    from medseg.planning.fingerprint import fingerprint
    from medseg.planning.proposal import make_plan, write_plan

    if out is not None:
        check_out_folder(out, "--out")
    ds, cfg = dataset_argument(dataset, value(layout), channel, label, set_)
    ds.require_clean()
    wanted = lesion_values(lesion_labels, cfg)
    model_cfg, sampling, train_cfg = (
        (cfg.model, cfg.sampling, cfg.train) if cfg else (ModelConfig(), SamplingConfig(), TrainConfig())
    )
    fp = fingerprint(ds, wanted, preprocess=cfg.preprocess if cfg else None)
    batch = patches_per_step(train_cfg.batch_size, sampling.samples_per_volume)
    planned = make_plan(fp, model_cfg, batch, sampling.memory_gb if memory_gb is None else memory_gb)
    typer.echo(yaml.safe_dump({"plan": planned, "fingerprint": fp}, sort_keys=False, default_flow_style=None).rstrip())
    if out is not None:
        path = write_plan(out, fp, planned, str(ds.root), [*ds.files(), *([Path(dataset)] if cfg is not None else [])])
        typer.echo(f"wrote {path} (train with --set data.plan={path})")


@user_errors
def show(
    case: Path = typer.Argument(..., help="Scan file (.nii.gz, .nrrd, .mha); 4D: channel 0 is shown."),
    pred: Path | None = typer.Option(None, "--pred", help="Predicted mask on the scan's grid (red contour)."),
    ref: Path | None = ref_option(),
    out: Path = typer.Option(
        Path("."), "--out", help="Folder to write <case>_show.png into (created if missing; default: here)."
    ),
    lesion_labels: str | None = lesion_labels_option(),
) -> None:
    """PNG of axial, coronal and sagittal slices (RAS) through the largest lesion, label and prediction outlined."""
    from medseg.viz.show import show_case

    check_out_folder(out, "--out")
    res = show_case(case, pred, ref, out, ints(lesion_labels, "--lesion-labels") if lesion_labels else None)
    counts = ", ".join(
        f"{w} {n} lesion(s)"
        for w, n in (("ground truth", res.gt_lesions), ("prediction", res.pred_lesions))
        if n is not None
    )
    typer.echo(f"wrote {res.png}" + (f" ({counts})" if counts else ""))
