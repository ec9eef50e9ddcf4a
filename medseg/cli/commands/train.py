"""``train``, ``tune``, ``demo``, ``runs``: training, its operating point, the demo and the runs table.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from medseg.cli.common import check_device, check_out_folder, check_protocol, print_summary, rank, user_errors
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.config.schema import ExperimentConfig


@user_errors
def train(config: Optional[Path] = typer.Argument(None, help="Experiment YAML, e.g. configs/demo.yaml (not with --resume)."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key: --set train.epochs=2 (repeatable)."),
          resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last.pt (same batches, same MLflow run); --set train.epochs=M extends a finished run."),
          folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Cross-validation with N folds (by case, or by data.group_pattern): one MLflow parent run, a child per fold, in <train.output_dir>/cv<N>-s<seed>/."),
          fold: Optional[int] = typer.Option(None, "--fold", min=0, help="With --folds: train only fold K (0-based); default every fold in turn."),
          seeds: Optional[int] = typer.Option(None, "--seeds", min=2, help="A seed ensemble: the config trained N times (train.seed, +1, ...) on one split, one MLflow parent run, in <train.output_dir>/seeds<N>-s<seed>/."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Train a lesion segmenter; checkpoints in the run folder, metrics in MLflow.

    SIGTERM (e.g. from a scheduler) stops between steps and writes last.pt; --resume continues it.
    With --folds (cross-validation) or --seeds (a seed ensemble): then medseg tune FOLDER and
    medseg predict FOLDER (the ensemble). The same --folds/--seeds command again keeps the members
    that finished, resumes the stopped ones and trains the rest.
    """
    from medseg.config.load import load_config
    from medseg.training.run import train as run_training

    if (config is None) == (resume is None):
        raise MedsegError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if resume is not None and not (resume / "last.pt").is_file():
        raise MedsegError(f"{resume}: no last.pt here; pass a run folder written by 'medseg train' (e.g. runs/20261123-101500)")
    if fold is not None and folds is None:
        raise MedsegError("--fold K needs --folds N")
    if fold is not None and folds is not None and fold >= folds:
        raise MedsegError(f"--fold {fold}: out of range for --folds {folds}; use 0 to {folds - 1} (0-based)")
    if seeds is not None and (folds is not None or resume is not None):
        raise MedsegError("--seeds: not with --folds or --resume (the same --seeds command again continues a stopped ensemble)")
    cfg = load_config(resume / "config.yaml" if resume is not None else config, set_ or [])
    if seeds is not None:
        _train_seeds(cfg, seeds, quiet)
        return
    if folds is not None:
        if resume is not None:
            raise MedsegError("--folds with --resume: the same --folds command again continues the stopped folds")
        _train_folds(cfg, folds, fold, quiet)
        return
    result = run_training(cfg, progress=not quiet, resume=resume)
    if rank() > 0:
        return
    typer.echo(f"best {cfg.train.select_metric} = {result.best_metric:.4f}")
    typer.echo(f"checkpoints: {result.best_path} {result.last_path}")
    if result.run_id:
        typer.echo(f"MLflow run id: {result.run_id} (model: runs:/{result.run_id}/model)")
        typer.echo(f"open it with: {result.ui_command}")


def _train_folds(cfg: ExperimentConfig, folds: int, fold: Optional[int], quiet: bool) -> None:
    from medseg.training.cv import train_folds

    cv = train_folds(cfg, folds, fold, progress=not quiet)
    for k, res in cv.results.items():
        typer.echo(f"fold {k}: best {cfg.train.select_metric} = {res.best_metric:.4f}  ({len(cv.folds[k])} validation cases)  {res.best_path}")
    typer.echo(f"cross-validation folder: {cv.folder}" + (f" (MLflow parent run {cv.parent_run_id})" if cv.parent_run_id else ""))
    typer.echo(f"operating point on the pooled out-of-fold predictions: medseg tune {cv.folder}")
    typer.echo(f"fold ensemble: medseg predict {cv.folder} SCANS --out OUT")


def _train_seeds(cfg: ExperimentConfig, seeds: int, quiet: bool) -> None:
    from medseg.training.cv import train_seeds

    ens = train_seeds(cfg, seeds, progress=not quiet)
    for seed, res in ens.results.items():
        typer.echo(f"seed {seed}: best {cfg.train.select_metric} = {res.best_metric:.4f}  {res.best_path}")
    typer.echo(f"seed ensemble folder: {ens.folder}" + (f" (MLflow parent run {ens.parent_run_id})" if ens.parent_run_id else ""))
    typer.echo(f"the ensemble's operating point on the shared validation cases: medseg tune {ens.folder}")
    typer.echo(f"seed ensemble: medseg predict {ens.folder} SCANS --out OUT")


@user_errors
def tune(checkpoint: Path = typer.Argument(..., help="best.pt of a training run (its validation cases are used), or a cross-validation folder (the pooled out-of-fold predictions of its folds)."),
         min_recall: Optional[float] = typer.Option(None, "--min-recall", min=0, max=1, help="Target: fewest FP per scan with lesion recall >= R (default: max lesion F1)."),
         device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
         protocol: str = typer.Option("medseg", "--protocol", help="medseg (the run's eval: rules, max lesion F1) or a BraTS 2023 lesion-wise protocol (brats2023, brats2023-ssa, -ped, -men, -met): max mean lesion-wise Dice, false tumours as the challenge counts them."),
         tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store of the training run(s) to log the tuning into (default $MLFLOW_TRACKING_URI); the store a checkpoint names is written to only when given here.")) -> None:
    """Choose threshold and minimum lesion volume on validation; store them in the checkpoint (it is rewritten); FROC."""
    from medseg.training.tune import run_tune

    check_protocol(protocol, False)
    check_device(device)
    res = run_tune(checkpoint, min_recall, device, None if protocol == "medseg" else protocol, tracking_uri)
    c = res["chosen"]
    brats = f" lesion-wise Dice {c['lesionwise_dice']:.3f} ({protocol})" if "lesionwise_dice" in c else ""
    typer.echo(f"operating point: threshold {c['threshold']:g}, min lesion {c['min_lesion_mm3']:g} mm3 -> lesion recall "
               f"{c['lesion_recall']:.3f} precision {c['lesion_precision']:.3f} F1 {c['lesion_f1']:.3f} FP/scan {c['fp_per_scan']:.2f}{brats}")
    typer.echo("FROC recall at " + ", ".join(f"{r:g}: {v:.3f}" for r, v in res["froc"]["recall_at"].items())
               + f" FP/scan; CPM {res['froc']['cpm']:.3f}")
    typer.echo(f"stored in {', '.join(map(str, res['checkpoints']))}; curve {res['curve_csv']}, plot {res['froc_png']}")


@user_errors
def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="Working folder (data, runs, predictions)."),
         cases: int = typer.Option(40, "--cases", min=3, help="Synthetic training cases."),
         test_cases: int = typer.Option(16, "--test-cases", min=1, help="Held-back synthetic cases."),
         seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same data and run."),
         set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key of configs/demo.yaml."),
         quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")) -> None:
    """synth -> train (configs/demo.yaml) -> predict held-back cases -> evaluate, on CPU in minutes."""
    from medseg.demo import run_demo

    check_out_folder(out, "--out")
    result = run_demo(out, cases, test_cases, seed, tuple(set_ or []), progress=not quiet)
    print_summary(result.summary)
    typer.echo(f"held-back lesion recall {result.recall:.3f}  Dice {result.dice:.3f}  ({result.seconds:.0f} s)")
    if result.run_id:
        typer.echo(f"MLflow run id: {result.run_id}")
        typer.echo(f"open it with: {result.ui_command}")


@user_errors
def runs(tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)."),
         experiment: str = typer.Option("medseg", "--experiment", help="Experiment name (tracking.experiment)."),
         sort: str = typer.Option("started", "--sort", help="started, name, epoch, recall, precision, fp, dice or heldback_recall."),
         ascending: Optional[bool] = typer.Option(None, "--ascending/--descending", help="Order (default: best first; FP/scan lowest first)."),
         limit: int = typer.Option(20, "--limit", min=1, help="How many of the most recent runs.")) -> None:
    """Table of the recent runs of an experiment: best epoch, lesion recall, precision, FP per scan, Dice."""
    import os

    from medseg.tracking.runs import format_table, run_rows, sort_rows

    sort_rows([], sort, ascending)  # checks --sort before MLflow is read
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('runs/mlflow.db').resolve()}"
    rows = sort_rows(run_rows(uri, experiment, limit), sort, ascending)
    typer.echo(format_table(rows) if rows else f"no runs in experiment {experiment!r} at {uri}")
