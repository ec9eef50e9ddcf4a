"""``predict`` and ``evaluate``: masks for scans and their lesion-wise evaluation.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from medseg.cli.common import (
    check_device,
    check_exists,
    check_out_file,
    check_out_folder,
    check_protocol,
    check_split,
    eval_rule,
    ints,
    lesion_values,
    parse_empty_dice,
    print_summary,
    rank,
    user_errors,
)
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.data.case import Case


@user_errors
def predict(model: str = typer.Argument(..., help="Checkpoint (best.pt), MLflow URI runs:/<id>/model or models:/<name>/<version>; several separated by commas, or a folder of runs (every best.pt below it, e.g. the folds of train --folds): an ensemble averaging their probabilities."),
            inputs: Optional[List[str]] = typer.Argument(None, help="Scan files, folders or globs (.nii, .nii.gz, .nrrd, .mha); single-channel, or 4D with the channels last."),
            out: Path = typer.Option(..., "--out", help="Folder for the masks (same file names as the scans)."),
            dataset: Optional[str] = typer.Option(None, "--dataset", help="Also predict the cases of a dataset or experiment config (multi-channel cases: one file per channel); masks named <case_id>."),
            split: Optional[str] = typer.Option(None, "--split", help="Cases of --dataset: test (a config's held-out cases: its data.exclude_cases, else the dataset's imagesTs / MSD test), training, or test_labeled. Default: the held-out cases where the source has them, else every case of a case list or pattern folder (which have no test split: asking for one is an error)."),
            device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
            threshold: Optional[float] = typer.Option(None, "--threshold", min=0, max=1, help="Override the model's probability threshold (0 to 1)."),
            min_lesion_mm3: Optional[float] = typer.Option(None, "--min-lesion-mm3", min=0, help="Override the model's minimum lesion volume (mm3, >= 0)."),
            tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Mirror test-time augmentation (8 flips): about 8x the time, e.g. ~8 s instead of ~1 s per 96x96x64 scan on 2 CPU cores. Default: the model's setting (off)."),
            fill_holes: Optional[bool] = typer.Option(None, "--fill-holes/--no-fill-holes", help="Fill cavities enclosed by a predicted lesion (before --min-lesion-mm3). Default: the model's inference.fill_holes."),
            save_prob: bool = typer.Option(False, "--save-prob", help="Also write <case>_prob (uint8, NIfTI scale 1/255)."),
            save_instances: bool = typer.Option(False, "--save-instances", help="Also write <case>_lesions: each lesion numbered."),
            table: bool = typer.Option(True, "--table/--no-table", help="Per-lesion table <case>_lesions.csv/.json."),
            skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip scans whose mask exists (resume a batch)."),
            tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store for runs:/ and models:/ URIs (default $MLFLOW_TRACKING_URI)."),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Segment scans; each mask has exactly its scan's shape, affine and orientation.

    Writes <case>.nii.gz masks (NRRD/MHA scans keep their format), per-lesion tables and
    summary.csv. A scan that fails is reported and skipped; the exit code is then 1.
    """
    from medseg.inference.batch import PredictOptions, predict_files

    check_split(split)
    check_out_folder(out, "--out")
    check_device(device)
    opts = PredictOptions(threshold=threshold, min_lesion_mm3=min_lesion_mm3, tta=tta, fill_holes=fill_holes, prob=save_prob,
                          instances=save_instances, table=table, skip_existing=skip_existing)
    cases = []
    if dataset is not None:
        from medseg.data.sources.discover import from_argument

        cases = from_argument(dataset, split=split)[0].require_clean()
    if not inputs and not cases:
        raise MedsegError("nothing to predict: give scan files/folders, or --dataset DATASET")
    members = [m for m in model.split(",") if m] if "," in model else model
    rows, errors = predict_files(members, inputs or [], out, device, opts, not quiet, tracking_uri, cases)
    if rank() > 0:
        return
    for row in rows:
        typer.echo(f"{row['mask']}: {row['lesions']} lesion(s), {row['lesion_volume_mm3']:.0f} mm3, {row['seconds']:.1f} s")
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    typer.echo(f"{len(rows)} scan(s) done, {len(errors)} failed")
    if errors:
        raise typer.Exit(1)


@user_errors
def evaluate(pred_dir: Path = typer.Argument(..., help="Folder of predicted masks."),
             ref_dir: str = typer.Argument(..., help="Folder of reference labels (same file names), or a dataset / case list / experiment config (predictions named <case_id>; <case_id>_<class> for a config with several data.lesion_classes)."),
             out: Optional[Path] = typer.Option(None, "--out", help="Per-case CSV to write."),
             matching: str = typer.Option("overlap", "--matching", help="Lesion matching rule: overlap, iou or dsc."),
             match_threshold: Optional[float] = typer.Option(None, "--match-threshold", help="iou/dsc threshold (default 0.5 / 0.1)."),
             connectivity: int = typer.Option(26, "--connectivity", help="6, 18 or 26."),
             dilate: int = typer.Option(0, "--dilate", min=0, help="overlap rule: grow each GT lesion by N voxels (on its own) before the overlap test."),
             min_voxels: int = typer.Option(0, "--min-voxels", min=0, help="Leave out GT and predicted lesions below N voxels."),
             min_mm3: float = typer.Option(0.0, "--min-mm3", min=0, help="Leave out GT and predicted lesions below V mm3."),
             empty_dice: str = typer.Option("1", "--empty-dice", help="Dice of a case whose prediction and reference are both empty: 1, or nan (left out of the mean and counted)."),
             one_to_one: bool = typer.Option(False, "--one-to-one", help="Match each lesion to at most one (Hungarian on IoU, as panoptica/picai_eval) instead of many-to-one."),
             hd95_empty: Optional[float] = typer.Option(None, "--hd95-empty", min=0, help="HD95 (mm) of a case where exactly one mask is empty: this penalty (BraTS 2023: 374); default: left out of the median and counted."),
             lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Reference values that are lesion, e.g. 1,2,3,4 (default: every non-zero value; a config's data.lesion_labels)."),
             split: Optional[str] = typer.Option(None, "--split", help="Cases of a reference dataset or config: test (a config's held-out cases: its data.exclude_cases, else the dataset's imagesTs / MSD test), training, or test_labeled. Default: the held-out cases where the source has them, else every case of a case list or pattern folder (which have no test split: asking for one is an error)."),
             protocol: str = typer.Option("medseg", "--protocol", help="medseg (the rules above) or the BraTS 2023 lesion-wise protocol: brats2023 (= brats2023-gli), brats2023-ssa, -ped (dilation 3, GT > 50 mm3), brats2023-men (1, 50), brats2023-met (1, 2); GT lesions merged by 18-connected dilation, lesion-wise Dice/HD95 with penalties 0/374 mm.")) -> None:
    """Per-case Dice, HD95, volumes, lesion-wise TP/FP/FN, recall, precision, F1; per-lesion table;
    summary; FROC (recall at 1/8..8 FP per scan, CPM, PNG) when predict wrote --save-prob maps."""
    from medseg.evaluation.evaluate import evaluate_dirs
    from medseg.evaluation.tables import EvalOptions

    check_split(split)
    check_exists(pred_dir, "PRED_DIR", "folder of predicted masks", folder=True)
    check_exists(Path(ref_dir), "REF_DIR", "reference folder, dataset, case list or config")
    check_out_file(out, "--out", "metrics.csv")
    rule = eval_rule(matching, match_threshold, connectivity, one_to_one)
    check_protocol(protocol, dilate or min_voxels or min_mm3 or one_to_one or matching != "overlap")
    ref_path = Path(ref_dir)
    cases, classes = reference_classes(ref_dir, split, lesion_labels)
    failed = []
    for suffix, values in classes:
        opts = EvalOptions(rule, dilate, min_voxels, min_mm3, values, empty_dice=parse_empty_dice(empty_dice),
                           hd95_one_empty=float("nan") if hd95_empty is None else hd95_empty, protocol=protocol)
        target = out.with_name(f"{out.stem}{suffix}{out.suffix}") if out is not None and suffix else out
        if suffix:
            typer.echo(f"class {suffix[1:]} (label values {list(values)}):")
        summary, rows, errors = evaluate_dirs(pred_dir, ref_path, target, opts, cases, suffix)
        print_evaluation(rows, summary)
        failed += errors
    for line in failed:
        typer.echo(f"error: {line}", err=True)
    if failed:
        raise typer.Exit(1)


def reference_classes(ref_dir: str, split: Optional[str], lesion_labels: Optional[str]
                      ) -> tuple[Optional[list[Case]], list[tuple[str, Optional[tuple[int, ...]]]]]:
    """``evaluate``'s reference: (its cases when it is a dataset, case list or config, else None:
    a folder of labels; [(prediction-name suffix, reference label values)], one per lesion class
    of a config with several ``data.lesion_classes``, else one with suffix "")."""
    wanted = ints(lesion_labels, "--lesion-labels") if lesion_labels else None
    ref_path = Path(ref_dir)
    if not (ref_path.is_file() or (ref_path / "dataset.json").is_file()):
        return None, [("", wanted)]
    from medseg.config.schema import lesion_classes
    from medseg.data.sources.discover import from_argument

    ds, cfg = from_argument(ref_dir, split=split)
    cases = ds.require_clean()
    if cfg is not None and cfg.data.lesion_classes and len(cfg.data.lesion_classes) > 1:
        return cases, [(f"_{name}", values) for name, values in lesion_classes(cfg.data)]  # <case>_<class> masks
    return cases, [("", lesion_values(lesion_labels, cfg))]


def print_evaluation(rows: list[dict], summary: dict) -> None:
    """One line per case, the summary and, when there is one, the FROC."""
    for row in rows:
        lesionwise = f"  lesion-wise dice {row['lesionwise_dice']:.3f} HD95 {row['lesionwise_hd95_mm']:.1f} mm" if "lesionwise_dice" in row else ""
        typer.echo(f"{row['case']}: dice {row['dice']:.3f}{lesionwise}  lesions gt {row['gt_lesions']} pred {row['pred_lesions']} tp {row['tp']} fn {row['fn']} fp {row['fp']}")
    print_summary(summary)
    if "froc" in summary:
        f = summary["froc"]
        typer.echo("FROC recall at " + ", ".join(f"{r:g}: {v:.3f}" for r, v in f["recall_at_fp_per_scan"].items())
                   + f" FP/scan; CPM {f['cpm']:.3f}")
