"""``train``, ``tune``, ``demo``, ``runs``: training, its operating point, the demo and the runs table.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from medseg.cli.common import (
    check_device,
    check_out_folder,
    print_summary,
    rank,
    run_overrides,
    user_errors,
)
from medseg.cli.datasets import dataset_cases
from medseg.cli.options import (
    CASES_HELP,
    TEST_CASES_HELP,
    Layout,
    Protocol,
    RunSort,
    Split,
    channel_option,
    dataset_option,
    device_option,
    label_option,
    layout_option,
    mask_option,
    protocol_option,
    quiet_option,
    seed_option,
    set_option,
    split_option,
    tracking_uri_option,
    value,
)
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.config.schema import ExperimentConfig


def fold_option() -> Any:
    """``--fold`` of train."""
    return typer.Option(
        None, "--fold", min=0, help="With --folds: train only fold K (0-based); default every fold in turn."
    )


def folds_option() -> Any:
    """``--folds`` of train."""
    return typer.Option(
        None,
        "--folds",
        min=2,
        help="Cross-validation with N folds (by case, or by data.group_pattern): one MLflow parent run, a child per "
        "fold, in <train.output_dir>/cv<N>-s<seed>/.",
    )


def init_from_option() -> Any:
    """``--init-from`` of train."""
    return typer.Option(
        None,
        "--init-from",
        metavar="MODEL",
        help="Fine-tune: start from this model's weights: a best.pt/last.pt, a run folder, runs:/<id>/model or "
        "models:/<name>/<version> (sets train.init_from; see docs/how-to/finetune.md). Not with --resume.",
    )


def max_fp_per_scan_option() -> Any:
    """``--max-fp-per-scan`` of tune."""
    return typer.Option(
        None,
        "--max-fp-per-scan",
        metavar="K",
        min=0,
        help="Target: highest lesion recall with at most K false-positive lesions per validation scan (ties: higher "
        "F1); none within K: the fewest FP per scan, with a warning. Not with --min-recall.",
    )


def min_recall_option() -> Any:
    """``--min-recall`` of tune."""
    return typer.Option(
        None,
        "--min-recall",
        min=0,
        max=1,
        help="Target: fewest FP per scan with lesion recall >= R (default: max lesion F1).",
    )


def resume_option() -> Any:
    """``--resume`` of train."""
    return typer.Option(
        None,
        "--resume",
        help="Continue the run in this folder from its last.pt (same batches, same MLflow run); --set train.epochs=M "
        "extends a finished run.",
    )


def seeds_option() -> Any:
    """``--seeds`` of train."""
    return typer.Option(
        None,
        "--seeds",
        min=2,
        help="A seed ensemble: the config trained N times (train.seed, +1, ...) on one split, one MLflow parent run, "
        "in <train.output_dir>/seeds<N>-s<seed>/.",
    )


def train_config_argument() -> Any:
    """The CONFIG argument of train."""
    return typer.Argument(None, help="Experiment YAML, e.g. configs/demo.yaml (not with --resume).")


def tune_checkpoint_argument() -> Any:
    """The CHECKPOINT argument of tune."""
    return typer.Argument(
        ...,
        help="best.pt of a training run (its validation cases are used), or a cross-validation folder (the pooled "
        "out-of-fold predictions of its folds).",
    )


@user_errors
def train(
    config: Path | None = train_config_argument(),
    set_: list[str] | None = set_option(),
    resume: Path | None = resume_option(),
    init_from: str | None = init_from_option(),
    folds: int | None = folds_option(),
    fold: int | None = fold_option(),
    seeds: int | None = seeds_option(),
    device: str | None = device_option(None),
    tracking_uri: str | None = tracking_uri_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train a lesion segmenter; checkpoints in the run folder, metrics in MLflow.

    SIGTERM (e.g. from a scheduler) stops between steps and writes last.pt; --resume continues it.
    With --folds (cross-validation) or --seeds (a seed ensemble): then medseg tune FOLDER and
    medseg predict FOLDER (the ensemble). The same --folds/--seeds command again keeps the members
    that finished, resumes the stopped ones and trains the rest.
    """
    from medseg.config.load import load_config
    from medseg.training.run import train as run_training

    _check_train_arguments(config, resume, init_from, folds, fold, seeds)
    overrides = run_overrides(set_, device, tracking_uri)
    if init_from is not None:
        overrides.append(f"train.init_from={json.dumps(init_from)}")  # a JSON string is a YAML string: as written
    cfg = load_config(resume / "config.yaml" if resume is not None else config, overrides)
    if seeds is not None:
        _train_seeds(cfg, seeds, quiet)
        return
    if folds is not None:
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


def _check_train_arguments(
    config: Path | None,
    resume: Path | None,
    init_from: str | None,
    folds: int | None,
    fold: int | None,
    seeds: int | None,
) -> None:
    """The combinations of ``train``'s arguments that mean nothing.

    Raises:
        MedsegError: naming the option and what to give instead.
    """
    if (config is None) == (resume is None):
        raise MedsegError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if init_from is not None and resume is not None:
        raise MedsegError("--init-from: not with --resume (a resumed run continues from its own last.pt)")
    if resume is not None and not (resume / "last.pt").is_file():
        raise MedsegError(
            f"{resume}: no last.pt here; pass a run folder written by 'medseg train' (e.g. runs/20261123-101500)"
        )
    if fold is not None and folds is None:
        raise MedsegError("--fold K needs --folds N")
    if fold is not None and folds is not None and fold >= folds:
        raise MedsegError(f"--fold {fold}: out of range for --folds {folds}; use 0 to {folds - 1} (0-based)")
    if seeds is not None and (folds is not None or resume is not None):
        raise MedsegError(
            "--seeds: not with --folds or --resume (the same --seeds command again continues a stopped ensemble)"
        )
    if folds is not None and resume is not None:
        raise MedsegError("--folds with --resume: the same --folds command again continues the stopped folds")


def _train_folds(cfg: ExperimentConfig, folds: int, fold: int | None, quiet: bool) -> None:
    from medseg.ensembles.cv import train_folds

    cv = train_folds(cfg, folds, fold, progress=not quiet)
    for k, res in cv.results.items():
        typer.echo(
            f"fold {k}: best {cfg.train.select_metric} = {res.best_metric:.4f}  ({len(cv.folds[k])} validation "
            f"cases)  {res.best_path}"
        )
    typer.echo(
        f"cross-validation folder: {cv.folder}"
        + (f" (MLflow parent run {cv.parent_run_id})" if cv.parent_run_id else "")
    )
    typer.echo(f"operating point on the pooled out-of-fold predictions: medseg tune {cv.folder}")
    typer.echo(f"fold ensemble: medseg predict {cv.folder} SCANS --out OUT")


def _train_seeds(cfg: ExperimentConfig, seeds: int, quiet: bool) -> None:
    from medseg.ensembles.cv import train_seeds

    ens = train_seeds(cfg, seeds, progress=not quiet)
    for seed, res in ens.results.items():
        typer.echo(f"seed {seed}: best {cfg.train.select_metric} = {res.best_metric:.4f}  {res.best_path}")
    typer.echo(
        f"seed ensemble folder: {ens.folder}"
        + (f" (MLflow parent run {ens.parent_run_id})" if ens.parent_run_id else "")
    )
    typer.echo(f"the ensemble's operating point on the shared validation cases: medseg tune {ens.folder}")
    typer.echo(f"seed ensemble: medseg predict {ens.folder} SCANS --out OUT")


@user_errors
def tune(
    checkpoint: Path = tune_checkpoint_argument(),
    min_recall: float | None = min_recall_option(),
    max_fp_per_scan: float | None = max_fp_per_scan_option(),
    dataset: str | None = dataset_option(),
    layout: Layout = layout_option(),
    channel: list[str] | None = channel_option(),
    label: str | None = label_option(),
    set_: list[str] | None = set_option(),
    split: Split | None = split_option(),
    mask: str | None = mask_option(),
    device: str = device_option(),
    protocol: Protocol = protocol_option(),
    tracking_uri: str | None = tracking_uri_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Choose threshold and minimum lesion volume on validation; store them in the checkpoint (rewritten); FROC."""
    from medseg.calibration.tune import check_targets, run_tune
    from medseg.inference.region import find_region_masks

    check_device(device)
    check_targets(min_recall, max_fp_per_scan)
    region = find_region_masks(mask) if mask is not None else None
    cases = dataset_cases(dataset, value(layout), channel, label, set_, value(split))  # checks the flags too
    if dataset is not None and not cases:
        raise MedsegError(f"--dataset {dataset}: no cases to tune on; choose them with --split or --set")
    res = run_tune(
        checkpoint,
        min_recall,
        device,
        None if protocol == Protocol.medseg else protocol.value,
        tracking_uri,
        max_fp_per_scan,
        cases if dataset is not None else None,
        region,
    )
    c = res["chosen"]
    brats = f" lesion-wise Dice {c['lesionwise_dice']:.3f} ({protocol.value})" if "lesionwise_dice" in c else ""
    typer.echo(
        f"operating point: threshold {c['threshold']:g}, min lesion {c['min_lesion_mm3']:g} mm3 -> lesion recall "
        f"{c['lesion_recall']:.3f} precision {c['lesion_precision']:.3f} F1 {c['lesion_f1']:.3f} FP/scan "
        f"{c['fp_per_scan']:.2f}{brats}"
    )
    if quiet:
        return
    typer.echo(
        "FROC recall at "
        + ", ".join(f"{r:g}: {v:.3f}" for r, v in res["froc"]["recall_at"].items())
        + f" FP/scan; CPM {res['froc']['cpm']:.3f}"
    )
    typer.echo(f"stored in {', '.join(map(str, res['checkpoints']))}; curve {res['curve_csv']}, plot {res['froc_png']}")


@user_errors
def demo(
    out: Path = typer.Option(
        Path("demo_out"), "--out", help="Working folder (data/, runs/, pred/, evaluation); created if missing."
    ),
    cases: int = typer.Option(40, "--cases", min=3, help=CASES_HELP),
    test_cases: int = typer.Option(16, "--test-cases", min=1, help=TEST_CASES_HELP),
    seed: int = seed_option(),
    set_: list[str] | None = set_option(),
    device: str | None = device_option(None),
    tracking_uri: str | None = tracking_uri_option(),
    quiet: bool = quiet_option(),
) -> None:
    """synth -> train (configs/demo.yaml) -> predict held-back cases -> evaluate, on CPU in minutes."""
    from medseg.demo import run_demo

    check_out_folder(out, "--out")
    result = run_demo(
        out, cases, test_cases, seed, tuple(run_overrides(set_, device, tracking_uri)), progress=not quiet
    )
    print_summary(result.summary)
    typer.echo(f"held-back lesion recall {result.recall:.3f}  Dice {result.dice:.3f}  ({result.seconds:.0f} s)")
    if result.run_id:
        typer.echo(f"MLflow run id: {result.run_id}")
        typer.echo(f"open it with: {result.ui_command}")


@user_errors
def runs(
    tracking_uri: str | None = tracking_uri_option(),
    config: Path | None = typer.Option(
        None, "--config", help="The store this config trains into, and its experiment (e.g. configs/brats_wt.yaml)."
    ),
    experiment: str | None = typer.Option(
        None, "--experiment", help="Only this experiment (default: all; with --config, its tracking.experiment)."
    ),
    sort: RunSort = typer.Option(
        RunSort.started, "--sort", help="Sort by start (newest first), name, or a metric (best first)."
    ),
    ascending: bool | None = typer.Option(
        None, "--ascending/--descending", help="Order (default: best first; FP/scan lowest first)."
    ),
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the most recent runs, per store."),
    set_: list[str] | None = set_option(),
) -> None:
    """Table of the recent runs: experiment, best epoch, lesion recall, precision, FP per scan, Dice.

    With no --tracking-uri, --config or $MLFLOW_TRACKING_URI it lists every MLflow store found in
    ./runs and ./demo_out (mlflow.db up to 3 folders below them), one table per store.
    """
    from medseg.config.load import load_config
    from medseg.tracking.runs import runs_report, store_uris

    if set_ and config is None:
        raise MedsegError("--set: applies to the config given with --config; add --config CONFIG or drop --set")
    cfg = load_config(config, set_ or []) if config is not None else None
    uris = store_uris(Path.cwd(), tracking_uri, cfg)
    typer.echo(
        runs_report(uris, experiment or (cfg.tracking.experiment if cfg else None), sort.value, ascending, limit)
    )
