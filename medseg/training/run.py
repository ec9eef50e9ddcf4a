"""``medseg train``: prepare the data, open the run (folder + MLflow), train, close the run.

Every user mistake found in the dataset is reported before anything is written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from monai.utils import set_determinism

from medseg.config.schema import ExperimentConfig, run_name
from medseg.data.split import run_split
from medseg.errors import MedsegError
from medseg.io.write import remove_partials_below
from medseg.nn.checkpoint import Checkpoint, load_checkpoint
from medseg.runtime.device import pick_device
from medseg.runtime.distributed import broadcast, finish, rank_and_world
from medseg.tracking.store import live_uri
from medseg.tracking.tracker import NullTracker, Tracker, make_tracker
from medseg.training.finetune import read_init_source
from medseg.training.prepare import load_datasets, prepare
from medseg.training.state import RunContext, TrainResult
from medseg.training.trainer import Trainer
from medseg.transforms.preprocess import training_profile


def train(cfg: ExperimentConfig, progress: bool = True, resume: Path | None = None) -> TrainResult:
    """Train a model as configured; returns where the checkpoints and the MLflow run are.

    With ``resume`` (a run folder), training continues from its ``last.pt`` exactly where it
    stopped (same batches, same MLflow run); a larger ``train.epochs`` extends a finished run.
    ``train.init_from`` (fine-tuning) is read here, before the dataset is planned, and never on
    resume: a resumed run continues from its own weights.
    """
    resumed = resume_checkpoint(resume) if resume is not None else None
    init = read_init_source(cfg) if cfg.train.init_from is not None and resumed is None else None
    prep = prepare(cfg, init.preprocess if init is not None else None)
    cfg = prep.cfg
    train_cases, val_cases = run_split(prep.cases, cfg)
    device, rank, world = _device_and_rank(cfg)
    set_determinism(cfg.train.seed, use_deterministic_algorithms=cfg.train.deterministic or None)
    datasets = load_datasets(cfg, train_cases, val_cases if rank == 0 else [], prep.plan)
    scans = training_profile(prep.plan.preprocess, train_cases) if rank == 0 else None  # rank 0 writes checkpoints
    run_dir, tracker = _open_run(cfg, rank, world, resume, resumed)
    context = RunContext(run_dir, tracker, rank, world, progress and rank == 0)
    trainer = Trainer(prep, datasets, device, context, init, scans)
    try:
        trainer.setup(resumed=resumed is not None)
        if resumed is not None:
            trainer.restore(resumed)
        result = trainer.fit()
    except MedsegError as err:
        tracker.end("KILLED" if err.exit_code == 143 else "FAILED")
        raise
    except Exception:
        tracker.end("FAILED")
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit
        tracker.end("KILLED")
        raise
    tracker.end("FINISHED")
    finish()
    result.ui_command = getattr(tracker, "ui_command", lambda: None)()
    return result


def resume_checkpoint(run_dir: Path) -> Checkpoint:
    """``last.pt`` of a run folder, with its resume state.

    Raises:
        MedsegError: no run folder, no last.pt, or a checkpoint without resume state.
    """
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise MedsegError(
            f"{run_dir}: no last.pt here; pass a run folder written by 'medseg train' (e.g. runs/20261123-101500)"
        )
    ckpt = load_checkpoint(last)
    if ckpt.resume is None:
        raise MedsegError(
            f"{last}: holds no resume state (written by an older medseg or by a stopped run without one); start a "
            "new run"
        )
    return ckpt


def _device_and_rank(cfg: ExperimentConfig) -> tuple[torch.device, int, int]:
    """The training device and (rank, world size); under torchrun on GPUs each rank its own GPU."""
    device = pick_device(cfg.train.device)
    rank, world = rank_and_world(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, rank, world


def _open_run(
    cfg: ExperimentConfig, rank: int, world: int, resume: Path | None, resumed: Checkpoint | None
) -> tuple[Path, Tracker]:
    """The run folder and its tracker: new ones, the resumed run's, or (ranks > 0) rank 0's
    folder without a tracker."""
    if rank > 0:  # only rank 0 writes: checkpoints, reports, MLflow
        return Path(broadcast(None)), NullTracker()
    if resumed is not None and resume is not None:
        run_dir = Path(resume)
        clean_partials(run_dir, None)
        clean_partials(run_dir.parent, 0)
        tracker = make_tracker(
            cfg.tracking,
            run_dir.parent,
            run_dir.name,
            resumed.mlflow_run_id,
            live_uri(resumed.tracking_uri, cfg.tracking.uri),
        )
    else:
        output_dir = Path(cfg.train.output_dir)
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedsegError(
                f"{output_dir}: cannot create the output folder ({exc.strerror}); set train.output_dir to a writable "
                "folder"
            ) from None
        clean_partials(output_dir, 2)  # its run folders (a killed run's last.pt) and their report/, mlflow_model/
        run_dir = new_run_dir(output_dir)
        try:
            tracker = make_tracker(cfg.tracking, output_dir, run_dir.name, display_name=run_name(cfg))
        except MedsegError:
            run_dir.rmdir()
            raise
    if world > 1:
        broadcast(str(run_dir))
    return run_dir, tracker


def clean_partials(folder: Path, depth: int | None) -> None:
    """Delete what killed writers left half-written in ``folder`` and its subfolders down to
    ``depth`` (:func:`medseg.io.write.remove_partials`: files of live processes stay), and say so."""
    removed = remove_partials_below(folder, depth)
    if removed:
        print(f"{folder}: removed {removed} half-written file(s) left by a stopped process", file=sys.stderr)


def new_run_dir(output_dir: Path) -> Path:
    """A new run folder ``<output_dir>/<YYYYmmdd-HHMMSS>[-n]``, created exclusively: of two
    processes starting in the same second, each gets its own (the second takes the next ``-n``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        run_dir = output_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            n += 1
