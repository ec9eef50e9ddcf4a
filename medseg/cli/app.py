"""Command line: each command parses its arguments and calls one function.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
A :class:`medseg.errors.MedsegError` is printed as one ``error:`` line and exits non-zero.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from medseg import __version__
from medseg.errors import MedsegError

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="3D lesion segmentation: train, predict, evaluate; lesion recall tracked in MLflow.")


def _fail(message: str, code: int) -> None:
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn MedsegError into one clear stderr line and its exit code, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MedsegError as err:
            _fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """medseg command line."""


def _triple(text: str, kind: type, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise MedsegError(f"{option} {text!r}: expected three positive numbers like 96,96,64")
    return values


@app.command()
@user_errors
def synth(out: Path = typer.Argument(..., help="Folder to create (MSD layout)."),
          cases: int = typer.Option(20, "--cases", min=1, help="Training cases (imagesTr/labelsTr)."),
          test_cases: int = typer.Option(0, "--test-cases", min=0, help="Held-back cases (imagesTs/labelsTs)."),
          seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
          shape: str = typer.Option("96,96,64", "--shape", help="Volume size in voxels X,Y,Z."),
          spacing: str = typer.Option("1.5,1.5,2.0", "--spacing", help="Voxel spacing in mm X,Y,Z.")) -> None:
    """Write a synthetic MRI-like lesion dataset (imagesTr/, labelsTr/, dataset.json)."""
    from medseg.data.synthetic import write_dataset

    size, mm = _triple(shape, int, "--shape"), _triple(spacing, float, "--spacing")
    path = write_dataset(out, cases, seed=seed, test_cases=test_cases, shape=size, spacing=mm)
    typer.echo(f"wrote {cases} + {test_cases} cases: {path}")


@app.command()
@user_errors
def train(config: Optional[Path] = typer.Argument(None, help="Experiment YAML, e.g. configs/demo.yaml (not with --resume)."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key: --set train.epochs=2 (repeatable)."),
          resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last.pt (same batches, same MLflow run); --set train.epochs=M extends a finished run."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Train a lesion segmenter; checkpoints in the run folder, metrics in MLflow.

    SIGTERM (e.g. from a scheduler) stops between steps and writes last.pt; --resume continues it.
    """
    from medseg.config.load import load_config
    from medseg.training.run import train as run_training

    if (config is None) == (resume is None):
        raise MedsegError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if resume is not None and not (resume / "last.pt").is_file():
        raise MedsegError(f"{resume}: no last.pt here; pass a run folder written by 'medseg train' (e.g. runs/20261123-101500)")
    cfg = load_config(resume / "config.yaml" if resume is not None else config, set_ or [])
    result = run_training(cfg, progress=not quiet, resume=resume)
    if _rank() > 0:
        return
    typer.echo(f"best {cfg.train.select_metric} = {result.best_metric:.4f}")
    typer.echo(f"checkpoints: {result.best_path} {result.last_path}")
    if result.run_id:
        typer.echo(f"MLflow run id: {result.run_id} (model: runs:/{result.run_id}/model)")
        typer.echo(f"open it with: {result.ui_command}")


@app.command()
@user_errors
def predict(model: str = typer.Argument(..., help="Checkpoint (best.pt) or MLflow URI runs:/<id>/model, models:/<name>/<version>."),
            inputs: Optional[List[str]] = typer.Argument(None, help="Scan files, folders or globs (.nii, .nii.gz, .nrrd, .mha); single-channel, or 4D with the channels last."),
            out: Path = typer.Option(..., "--out", help="Folder for the masks (same file names as the scans)."),
            dataset: Optional[str] = typer.Option(None, "--dataset", help="Also predict the cases of a dataset or experiment config (multi-channel cases: one file per channel); masks named <case_id>."),
            split: str = typer.Option("test", "--split", help="--dataset split: test (imagesTs / MSD test) or training."),
            device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
            threshold: Optional[float] = typer.Option(None, "--threshold", help="Override the model's probability threshold."),
            min_lesion_mm3: Optional[float] = typer.Option(None, "--min-lesion-mm3", help="Override the model's minimum lesion volume."),
            tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Mirror test-time augmentation (8 flips): about 8x the time, e.g. ~8 s instead of ~1 s per 96x96x64 scan on 2 CPU cores. Default: the model's setting (off)."),
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

    opts = PredictOptions(threshold, min_lesion_mm3, tta, save_prob, save_instances, table, skip_existing)
    cases = []
    if dataset is not None:
        from medseg.data.sources.discover import from_argument

        cases = from_argument(dataset, split=split)[0].require_clean()
    if not inputs and not cases:
        raise MedsegError("nothing to predict: give scan files/folders, or --dataset DATASET")
    rows, errors = predict_files(model, inputs or [], out, device, opts, not quiet, tracking_uri, cases)
    if _rank() > 0:
        return
    for row in rows:
        typer.echo(f"{row['mask']}: {row['lesions']} lesion(s), {row['lesion_volume_mm3']:.0f} mm3, {row['seconds']:.1f} s")
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    typer.echo(f"{len(rows)} scan(s) done, {len(errors)} failed")
    if errors:
        raise typer.Exit(1)


@app.command()
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
             hd95_empty: Optional[float] = typer.Option(None, "--hd95-empty", min=0, help="HD95 (mm) of a case where exactly one mask is empty: this penalty (BraTS 2023: 374); default: left out of the median and counted."),
             lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Reference values that are lesion, e.g. 1,2,3,4 (default: every non-zero value; a config's data.lesion_labels)."),
             split: str = typer.Option("training", "--split", help="Split of a dataset given as reference.")) -> None:
    """Per-case Dice, HD95, volumes, lesion-wise TP/FP/FN, recall, precision, F1; per-lesion table;
    summary; FROC (recall at 1/8..8 FP per scan, CPM, PNG) when predict wrote --save-prob maps."""
    from medseg.evaluation.evaluate import evaluate_dirs
    from medseg.evaluation.tables import EvalOptions

    if matching not in ("overlap", "iou", "dsc") or connectivity not in (6, 18, 26):
        raise MedsegError(f"--matching {matching!r} / --connectivity {connectivity}: use overlap|iou|dsc and 6|18|26")
    cases, wanted = None, _ints(lesion_labels, "--lesion-labels") if lesion_labels else None
    classes = [("", wanted)]  # (prediction suffix, reference label values)
    ref_path = Path(ref_dir)
    if ref_path.is_file() or (ref_path / "dataset.json").is_file():
        from medseg.config.schema import lesion_classes
        from medseg.data.sources.discover import from_argument

        ds, cfg = from_argument(ref_dir, split=split)
        cases = ds.require_clean()
        if cfg is not None and cfg.data.lesion_classes and len(cfg.data.lesion_classes) > 1:
            classes = [(f"_{name}", values) for name, values in lesion_classes(cfg.data)]  # <case>_<class> masks
        else:
            classes = [("", _lesion_values(lesion_labels, cfg))]
    failed = []
    for suffix, values in classes:
        opts = EvalOptions(matching, match_threshold, connectivity, dilate, min_voxels, min_mm3, lesion_labels=values,
                           empty_dice=_empty_dice(empty_dice), hd95_one_empty=float("nan") if hd95_empty is None else hd95_empty)
        target = out.with_name(f"{out.stem}{suffix}{out.suffix}") if out is not None and suffix else out
        if suffix:
            typer.echo(f"class {suffix[1:]} (label values {list(values)}):")
        summary, rows, errors = evaluate_dirs(pred_dir, ref_path, target, opts, cases, suffix)
        for row in rows:
            typer.echo(f"{row['case']}: dice {row['dice']:.3f}  lesions gt {row['gt_lesions']} pred {row['pred_lesions']} tp {row['tp']} fn {row['fn']} fp {row['fp']}")
        _print_summary(summary)
        if "froc" in summary:
            f = summary["froc"]
            typer.echo("FROC recall at " + ", ".join(f"{r:g}: {v:.3f}" for r, v in f["recall_at_fp_per_scan"].items())
                       + f" FP/scan; CPM {f['cpm']:.3f}")
        failed += errors
    for line in failed:
        typer.echo(f"error: {line}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def tune(checkpoint: Path = typer.Argument(..., help="best.pt of a training run (its validation cases are used)."),
         min_recall: Optional[float] = typer.Option(None, "--min-recall", min=0, max=1, help="Target: fewest FP per scan with lesion recall >= R (default: max lesion F1)."),
         device: str = typer.Option("auto", "--device", help="auto, cpu or cuda.")) -> None:
    """Choose threshold and minimum lesion volume on validation; store them in the checkpoint; FROC."""
    from medseg.training.tune import run_tune

    res = run_tune(checkpoint, min_recall, device)
    c = res["chosen"]
    typer.echo(f"operating point: threshold {c['threshold']:g}, min lesion {c['min_lesion_mm3']:g} mm3 -> lesion recall "
               f"{c['lesion_recall']:.3f} precision {c['lesion_precision']:.3f} F1 {c['lesion_f1']:.3f} FP/scan {c['fp_per_scan']:.2f}")
    typer.echo("FROC recall at " + ", ".join(f"{r:g}: {v:.3f}" for r, v in res["froc"]["recall_at"].items())
               + f" FP/scan; CPM {res['froc']['cpm']:.3f}")
    typer.echo(f"stored in {checkpoint}; curve {res['curve_csv']}, plot {res['froc_png']}")


def _dataset(dataset: str, layout: str, channels: Optional[List[str]], label: Optional[str]):
    from medseg.data.sources.discover import from_argument

    if layout not in ("auto", "msd", "nnunet", "list", "pattern"):
        raise MedsegError(f"--layout {layout!r}: use auto, msd, nnunet, list or pattern")
    return from_argument(dataset, layout, channels or None, label)


DATASET_HELP = "Dataset folder (MSD, nnU-Net raw), case list (.csv/.yaml), or an experiment config whose data: section is used."


@app.command()
@user_errors
def check(dataset: str = typer.Argument(..., help=DATASET_HELP),
          layout: str = typer.Option("auto", "--layout", help="auto, msd, nnunet, list or pattern."),
          channel: Optional[List[str]] = typer.Option(None, "--channel", help="pattern layout: a glob per channel with {case}; others: a channel name to keep (repeatable)."),
          label: Optional[str] = typer.Option(None, "--label", help="pattern layout: the label glob with {case}."),
          lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Label values that are lesion, e.g. 1,2,3,4."),
          atol: float = typer.Option(1e-3, "--atol", help="Geometry tolerance (mm) between channels and label.")) -> None:
    """Validate every case and report all problems at once (exit 0 clean, 1 problems found)."""
    from medseg.data.check import check_dataset, format_report

    ds, cfg = _dataset(dataset, layout, channel, label)
    problems = check_dataset(ds, _lesion_values(lesion_labels, cfg), atol)
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    typer.echo(format_report(ds, problems))
    if problems:
        raise typer.Exit(1)


@app.command()
@user_errors
def plan(dataset: str = typer.Argument(..., help=DATASET_HELP),
         out: Optional[Path] = typer.Option(None, "--out", help="plan.yaml to write (default: print only)."),
         layout: str = typer.Option("auto", "--layout", help="auto, msd, nnunet, list or pattern."),
         channel: Optional[List[str]] = typer.Option(None, "--channel", help="As for 'medseg check'."),
         label: Optional[str] = typer.Option(None, "--label", help="pattern layout: the label glob with {case}."),
         lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Label values that are lesion, e.g. 1,2,3,4."),
         memory_gb: float = typer.Option(8.0, "--memory-gb", min=0.1, help="Training memory budget for the patch size (GPU memory, or RAM on CPU).")) -> None:
    """Fingerprint the dataset (spacing, shapes, intensities, lesion sizes) and plan spacing, patch and normalisation."""
    import yaml

    from medseg.config.schema import ModelConfig, SamplingConfig, TrainConfig
    from medseg.data.plan import fingerprint, make_plan, write_plan

    ds, cfg = _dataset(dataset, layout, channel, label)
    ds.require_clean()
    wanted = _lesion_values(lesion_labels, cfg)
    model_cfg, sampling, train_cfg = (cfg.model, cfg.sampling, cfg.train) if cfg else (ModelConfig(), SamplingConfig(), TrainConfig())
    fp = fingerprint(ds, wanted)
    planned = make_plan(fp, model_cfg, train_cfg.batch_size * sampling.samples_per_volume, memory_gb)
    typer.echo(yaml.safe_dump({"plan": planned, "fingerprint": fp}, sort_keys=False, default_flow_style=None).rstrip())
    if out is not None:
        write_plan(out, fp, planned, str(ds.root))
        typer.echo(f"wrote {out} (train with --set data.plan={out})")


@app.command()
@user_errors
def show(case: Path = typer.Argument(..., help="Scan file (.nii.gz, .nrrd, .mha); 4D: channel 0 is shown."),
         pred: Optional[Path] = typer.Option(None, "--pred", help="Predicted mask on the scan's grid (red contour)."),
         label: Optional[Path] = typer.Option(None, "--label", help="Ground-truth label on the scan's grid (green contour)."),
         out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: <case>_show.png in the current folder)."),
         lesion_labels: Optional[str] = typer.Option(None, "--lesion-labels", help="Label values that are lesion, e.g. 1,2 (default: every non-zero value).")) -> None:
    """PNG of axial, coronal and sagittal slices (RAS) through the largest lesion, label and prediction outlined."""
    from medseg.viz.show import show_case

    res = show_case(case, pred, label, out, _ints(lesion_labels, "--lesion-labels") if lesion_labels else None)
    counts = ", ".join(f"{w} {n} lesion(s)" for w, n in (("ground truth", res.gt_lesions), ("prediction", res.pred_lesions)) if n is not None)
    typer.echo(f"wrote {res.png}" + (f" ({counts})" if counts else ""))


def _lesion_values(text: Optional[str], cfg) -> Optional[tuple[int, ...]]:
    """--lesion-labels, else the label values a config counts as lesion (any class), else None."""
    if text:
        return _ints(text, "--lesion-labels")
    if cfg is None:
        return None
    from medseg.config.schema import all_lesion_values

    return all_lesion_values(cfg.data)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise MedsegError(f"{option} {text!r}: expected integers like 1,2,3,4") from None


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _empty_dice(text: str) -> float:
    if text.strip().lower() not in ("1", "nan"):
        raise MedsegError(f"--empty-dice {text!r}: use 1 or nan")
    return float(text)


def _print_summary(s: dict) -> None:
    typer.echo(f"{s['cases']} case(s), matching rule '{s['matching']}': dice {s['dice']:.3f}  lesion recall "
               f"{s['lesion_recall']:.3f}  precision {s['lesion_precision']:.3f}  F1 {s['lesion_f1']:.3f}  "
               f"FP/scan {s['fp_per_scan']:.2f}  (GT lesions {s['gt_lesions']}, found {s['tp']}, FP {s['fp']})")
    if s.get("hd95_cases_excluded"):
        median = "none" if s["hd95_mm_median"] is None else f"{s['hd95_mm_median']:.2f} mm"
        typer.echo(f"HD95 median {median} over {s['cases'] - s['hd95_cases_excluded']} case(s); {s['hd95_cases_excluded']} case(s) "
                   "with exactly one empty mask left out (--hd95-empty MM gives them a penalty instead)")
    if s.get("dice_cases_excluded"):
        typer.echo(f"Dice mean over {s['cases'] - s['dice_cases_excluded']} case(s); {s['dice_cases_excluded']} with both masks empty left out (--empty-dice nan)")


@app.command()
@user_errors
def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="Working folder (data, runs, predictions)."),
         cases: int = typer.Option(40, "--cases", min=3, help="Synthetic training cases."),
         test_cases: int = typer.Option(16, "--test-cases", min=1, help="Held-back synthetic cases."),
         seed: int = typer.Option(0, "--seed"),
         set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key of configs/demo.yaml."),
         quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")) -> None:
    """synth -> train (configs/demo.yaml) -> predict held-back cases -> evaluate, on CPU in minutes."""
    from medseg.demo import run_demo

    result = run_demo(out, cases, test_cases, seed, tuple(set_ or []), progress=not quiet)
    _print_summary(result.summary)
    typer.echo(f"held-back lesion recall {result.recall:.3f}  Dice {result.dice:.3f}  ({result.seconds:.0f} s)")
    if result.run_id:
        typer.echo(f"MLflow run id: {result.run_id}")
        typer.echo(f"open it with: {result.ui_command}")


@app.command()
@user_errors
def runs(tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)."),
         experiment: str = typer.Option("medseg", "--experiment", help="Experiment name (tracking.experiment)."),
         sort: str = typer.Option("started", "--sort", help="started, name, epoch, recall, precision, fp, dice or heldback_recall."),
         ascending: Optional[bool] = typer.Option(None, "--ascending/--descending", help="Order (default: best first; FP/scan lowest first)."),
         limit: int = typer.Option(20, "--limit", min=1, help="How many of the most recent runs.")) -> None:
    """Table of the recent runs of an experiment: best epoch, lesion recall, precision, FP per scan, Dice."""
    import os

    from medseg.tracking.runs import format_table, run_rows, sort_rows

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('runs/mlflow.db').resolve()}"
    rows = sort_rows(run_rows(uri, experiment, limit), sort, ascending)
    typer.echo(format_table(rows) if rows else f"no runs in experiment {experiment!r} at {uri}")


def main() -> None:
    """Console entry point."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines (database setup, monitors) are noise here
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MONAI announces a future default of Orientationd; it does not change our RAS reorientation.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
    warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
    app()


if __name__ == "__main__":
    main()
    sys.exit(0)
