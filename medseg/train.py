"""The training loop: checks, data, model, focal + Dice, AdamW + poly/cosine, validation,
``last``/``best`` checkpoints, MLflow.

Every user mistake found in the dataset is reported before anything is written.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from medseg.config import ExperimentConfig, all_lesion_values, flatten, lesion_classes
from medseg.errors import MedsegError


@dataclass
class TrainResult:
    """What a finished training produced."""

    run_dir: Path
    best_path: Path
    last_path: Path
    run_id: str | None
    best_metric: float
    history: list[dict[str, float]] = field(default_factory=list)
    ui_command: str | None = None


def _schedule(kind: str, total_steps: int):
    """Per-step multiplier of the peak learning rate: poly (power 0.9) or cosine, both to 0."""
    if kind == "poly":
        return lambda step: (1 - min(step, total_steps) / total_steps) ** 0.9
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


@dataclass
class Prepared:
    """A checked dataset and the config completed by the plan."""

    cfg: ExperimentConfig
    cases: list
    spacing: tuple[float, float, float]
    channels: tuple[str, ...]
    plan: dict | None


def prepare(cfg: ExperimentConfig) -> Prepared:
    """List and check every case (all problems reported at once, as ``medseg check`` does), then
    fill the keys the config leaves unset from the plan (``data.plan`` or planned now).

    Raises:
        MedsegError: listing every problem of the dataset, or a config that does not fit it.
    """
    from medseg.check import check_dataset, rules_for
    from medseg.models import min_input_multiple
    from medseg.plan import apply_plan, fingerprint, make_plan, needs_plan, read_plan
    from medseg.sources import from_config

    ds = from_config(cfg.data)
    problems = check_dataset(ds, all_lesion_values(cfg.data))
    if problems:
        raise MedsegError("\n".join(problems + [f"{len(problems)} problem(s) in the dataset; fix them (see 'medseg check {cfg.data.dataset}') and train again"]))
    plan = None
    if cfg.data.plan is not None:
        plan = read_plan(cfg.data.plan)
    elif needs_plan(cfg):
        batch = cfg.train.batch_size * cfg.sampling.samples_per_volume
        plan = make_plan(fingerprint(ds, all_lesion_values(cfg.data)), cfg.model, batch)
    if plan is not None:
        cfg = apply_plan(cfg, plan)
    multiple = min_input_multiple(cfg.model)
    roi = cfg.inference.roi_size or cfg.sampling.patch_size
    for name, size in (("sampling.patch_size", cfg.sampling.patch_size), ("inference.roi_size", roi)):
        if any(s % multiple for s in size):
            raise MedsegError(f"{name}: {list(size)} must be multiples of {multiple} (the product of model.strides)")
    if cfg.preprocess.target_spacing is None:  # plan-less config with target_spacing: null
        from medseg.data import median_spacing

        spacing = median_spacing(ds.cases)
    else:
        spacing = cfg.preprocess.target_spacing
    _warn_if_patch_exceeds(ds.cases, cfg.sampling.patch_size, spacing)
    channels = ds.channels or tuple(f"channel{i}" for i in range(rules_for(ds).n_channels))
    return Prepared(cfg, ds.cases, tuple(float(s) for s in spacing), channels, plan)


def _warn_if_patch_exceeds(cases, patch, spacing) -> None:
    """A patch larger than every case (at the target spacing) is mostly padding: say so."""
    import numpy as np

    from medseg.data import ras_order, ras_spacing
    from medseg.io import read_geometry

    largest = np.zeros(3)
    for case in cases:  # headers only
        shape, affine = read_geometry(case.image)
        largest = np.maximum(largest, np.array(shape[:3])[ras_order(affine)] * np.array(ras_spacing(affine)) / np.array(spacing))
    if any(p > s for p, s in zip(patch, largest)):
        fit = [int(s) for s in largest]
        print(f"warning: sampling.patch_size {list(patch)} is larger than every image at the target spacing (at most {fit}); "
              "patches are mostly padding: use a smaller patch_size (or let 'medseg plan' choose it)", file=sys.stderr)


def _payload(cfg: ExperimentConfig, model, spacing, channels, epoch: int, metrics: dict[str, float], tracker) -> dict:
    return {
        "mlflow_run_id": tracker.run_id,
        "tracking_uri": getattr(tracker, "uri", None),
        "state_dict": model.state_dict(),
        "config": cfg.model_dump(mode="json"),
        "preprocess": {"spacing": list(spacing), "normalize": cfg.preprocess.normalize, "in_channels": len(channels),
                       "channels": list(channels), "ct_stats": [list(s) for s in cfg.preprocess.ct_stats or []],
                       "background": cfg.preprocess.background, "classes": [name for name, _ in lesion_classes(cfg.data)]},
        "operating_point": {"threshold": cfg.inference.threshold, "min_lesion_mm3": cfg.inference.min_lesion_mm3},
        "epoch": epoch,
        "metrics": dict(metrics),
    }


def _write_best_report(val, folder: Path) -> None:
    """Per-case and per-lesion CSVs and overlays of the best epoch so far (replacing older ones)."""
    import shutil

    from medseg.evaluate import write_csv
    from medseg.reports import overlays

    shutil.rmtree(folder / "overlays", ignore_errors=True)
    write_csv(val.cases, folder / "val_best_cases.csv")
    if val.lesions:
        write_csv(val.lesions, folder / "val_best_lesions.csv")
    for case_id, image, pred, ref in val.worst:
        overlays(case_id, image, pred, ref, folder / "overlays")


def _new_run_dir(output_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, n = output_dir / stamp, 1
    while run_dir.exists():
        n += 1
        run_dir = output_dir / f"{stamp}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


def train(cfg: ExperimentConfig, progress: bool = True, resume: Path | None = None) -> TrainResult:
    """Train a model as configured; returns where the checkpoints and the MLflow run are.

    With ``resume`` (a run folder), training continues from its ``last.pt`` exactly where it
    stopped (same batches, same MLflow run); a larger ``train.epochs`` extends a finished run.
    """
    from monai.utils import set_determinism

    from medseg.data import split_cases
    from medseg.distributed import broadcast, finish, rank_and_world
    from medseg.inference import pick_device
    from medseg.tracking import NullTracker, make_tracker

    state = _resume_state(resume) if resume is not None else None
    prep = prepare(cfg)
    cfg, spacing = prep.cfg, prep.spacing
    train_cases, val_cases = split_cases(prep.cases, cfg.data.val_fraction, cfg.train.seed, cfg.data.val_cases)
    device = pick_device(cfg.train.device)
    rank, world = rank_and_world(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    set_determinism(cfg.train.seed, use_deterministic_algorithms=cfg.train.deterministic or None)
    datasets = _load_datasets(cfg, train_cases, val_cases if rank == 0 else [], spacing)
    if rank > 0:  # only rank 0 writes: checkpoints, reports, MLflow
        run_dir = Path(broadcast(None))
        tracker = NullTracker()
    elif state is not None:
        run_dir = Path(resume)
        tracker = make_tracker(cfg.tracking, run_dir.parent, run_dir.name, state["mlflow_run_id"], state["tracking_uri"])
    else:
        output_dir = Path(cfg.train.output_dir)
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedsegError(f"{output_dir}: cannot create the output folder ({exc.strerror}); set train.output_dir to a writable folder") from None
        run_dir = _new_run_dir(output_dir)
        try:
            tracker = make_tracker(cfg.tracking, output_dir, run_dir.name)
        except MedsegError:
            run_dir.rmdir()
            raise
    if rank == 0 and world > 1:
        broadcast(str(run_dir))
    try:
        result = _fit(cfg, datasets, spacing, prep.channels, prep.plan, device, run_dir, tracker, progress and rank == 0,
                      state, rank, world)
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


def _resume_state(run_dir: Path) -> dict:
    """``last.pt`` of a run folder with its resume section.

    Raises:
        MedsegError: no run folder, no last.pt, or a checkpoint without resume state.
    """
    from medseg.checkpoint import load_checkpoint

    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise MedsegError(f"{run_dir}: no last.pt here; pass a run folder written by 'medseg train' (e.g. runs/20261123-101500)")
    ckpt = load_checkpoint(last)
    if "resume" not in ckpt:
        raise MedsegError(f"{last}: holds no resume state (written by an older medseg or by a stopped run without one); start a new run")
    return ckpt


def _load_datasets(cfg, train_cases, val_cases, spacing):
    """Preprocess and cache every case before anything is written; a file that cannot be read
    becomes a MedsegError naming it."""
    from medseg.data import make_datasets
    from medseg.io import Case

    try:
        return make_datasets(cfg, train_cases, val_cases, spacing)
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError chains
        text = "".join(str(e) for e in _chain(exc))
        culprit = next((c for c in [*train_cases, *val_cases] for f in (c.image, c.label) if str(f) in text), None)
        where = f"{culprit.image} / {culprit.label}" if isinstance(culprit, Case) else "a case of the dataset"
        last = _chain(exc)[-1]
        raise MedsegError(f"{where}: cannot be loaded ({type(last).__name__}: {str(last).strip()[:160]}); re-export or remove the case") from None


def _chain(exc: BaseException) -> list[BaseException]:
    out = [exc]
    while out[-1].__cause__ is not None or out[-1].__context__ is not None:
        out.append(out[-1].__cause__ or out[-1].__context__)
    return out


@dataclass
class EpochProgress:
    """Steps of the current epoch done so far and their losses (what a mid-epoch checkpoint keeps)."""

    done: int = 0
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and the GradScaler fp16 needs (None otherwise)."""

    dtype: torch.dtype | None = None
    scaler: object | None = None
    channels_last: bool = False


def precision_for(train_cfg, device: torch.device) -> Precision:
    """``train.amp``: auto = bf16 on CUDA GPUs that have it, else fp16 with a GradScaler; float32
    on CPU (bf16 training on CPU is slower than float32 on most CPUs)."""
    mode = train_cfg.amp
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
    if mode == "off":
        return Precision(channels_last=train_cfg.channels_last)
    if mode == "fp16":
        return Precision(torch.float16, torch.amp.GradScaler(device.type), train_cfg.channels_last)
    return Precision(torch.bfloat16, None, train_cfg.channels_last)


def _plain(t) -> torch.Tensor:
    """The tensor of a MetaTensor (or a tensor as is, when meta tracking is off)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _train_epoch(model, loader, loss_fn, optimizer, scheduler, device, bar, status: tuple[str, float],
                 guard=None, stop=None, grad_clip: float | None = None, progress: EpochProgress | None = None,
                 on_step=None, precision: Precision = Precision()) -> float:
    """One pass over the loader (autocast and loss scaling as ``precision`` says); returns the mean loss of the applied
    steps. A non-finite loss skips its step (``guard``); a stop signal ends the pass between steps
    (``stop``). With ``progress`` from a mid-epoch checkpoint, its first ``progress.done`` batches
    are drawn (keeping the random streams in step) but not trained on again. ``on_step(progress)``
    runs after every step (periodic checkpoints). The progress bar shows epoch, loss and the last
    validation lesion recall."""
    model.train()
    progress = progress if progress is not None else EpochProgress()
    skip = progress.done
    for i, batch in enumerate(loader):
        if i < skip:
            continue
        x, y = _plain(batch["image"]).to(device, non_blocking=True), _plain(batch["label"]).to(device, non_blocking=True)
        if precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=precision.dtype or torch.float32, enabled=precision.dtype is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        value = float(loss.detach())
        if guard is None or guard.ok(value, f"{status[0]} step {i + 1}"):
            scaler = precision.scaler
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if grad_clip is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()  # skipped steps do not advance the schedule
            progress.losses.append(value)
        progress.done = i + 1
        bar.update(1)
        bar.set_postfix_str(f"{status[0]} loss {value:.3f} val_recall {status[1]:.2f}")
        if on_step is not None:
            on_step(progress)
        if stop is not None:
            stop.check()
    return sum(progress.losses) / len(progress.losses) if progress.losses else float("nan")


def _start_run(cfg, train_ds, val_ds, spacing, plan, device, run_dir: Path, tracker, resumed: dict | None) -> None:
    """Config (and plan) into the run folder and MLflow; a resumed run only records the resume."""
    from medseg.lineage import lineage_tags

    config_path = run_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if resumed is not None:  # MLflow params cannot change; the extended epochs are in config.yaml and a tag
        tracker.set_tags({"resumed_at_step": str(resumed["global_step"]), "train.epochs": str(cfg.train.epochs)})
        return
    tracker.log_params(flatten(cfg) | {"preprocess.resolved_spacing": str(list(spacing)),
                                       "data.n_train": str(len(train_ds)), "data.n_val": str(len(val_ds))})
    tracker.set_tags(lineage_tags(cfg, device))
    tracker.log_artifact(config_path)
    if plan is not None:
        plan_path = run_dir / "plan.yaml"
        plan_path.write_text(yaml.safe_dump({"plan": plan}, sort_keys=False))
        tracker.log_artifact(plan_path)


def _fit(cfg, datasets, spacing, channels, plan, device, run_dir: Path, tracker, progress: bool,
         resumed: dict | None = None, rank: int = 0, world: int = 1) -> TrainResult:
    """The epochs. Under torchrun (``world > 1``) the model is wrapped in DistributedDataParallel,
    each rank trains on its share of the cases, and rank 0 alone validates, writes checkpoints and
    reports and logs to MLflow; decisions (early stop) are broadcast from it."""
    from tqdm import tqdm

    from medseg.checkpoint import save_checkpoint
    from medseg.data import make_loader
    from medseg.guards import EarlyStopping, NonFiniteGuard, StopSignal, Stopped
    from medseg.losses import build_loss
    from medseg.models import build_model
    from medseg.resume import capture_rng, restore_rng
    from medseg.validation import validate

    from medseg.distributed import broadcast, mean_over_ranks

    main = rank == 0
    train_ds, val_ds = datasets
    rs = resumed["resume"] if resumed is not None else None
    if main:
        _start_run(cfg, train_ds, val_ds, spacing, plan, device, run_dir, tracker, rs)
    loader = make_loader(cfg, train_ds, rank, world)
    net = build_model(cfg.model, in_channels=len(channels), out_channels=len(lesion_classes(cfg.data))).to(device)
    precision = precision_for(cfg.train, device)
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        model = torch.compile(model)
    loss_fn = build_loss(cfg.loss, mode="sigmoid")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    per_epoch = len(loader)
    total = cfg.train.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.optim.schedule, total))

    best_path, last_path = run_dir / "best.pt", run_dir / "last.pt"
    best, history, last_val = -math.inf, [], {}
    guard, early = NonFiniteGuard(cfg.train.max_nonfinite_steps), EarlyStopping(cfg.train.early_stop_patience)
    start, partial = 1, EpochProgress()
    if rs is not None:
        try:
            net.load_state_dict(resumed["state_dict"])
            optimizer.load_state_dict(rs["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise MedsegError(f"{last_path}: does not fit the network of the config ({str(exc).splitlines()[0][:120]}); "
                              "resume without changing model settings") from None
        scheduler.load_state_dict(rs["scheduler"])
        if precision.scaler is not None and rs.get("scaler"):
            precision.scaler.load_state_dict(rs["scaler"])
        best, history, early.since_best = rs["best"], list(rs["history"]), rs["since_best"]
        last_val = history[-1] if history else {}
        start = rs["epoch"] + (1 if rs["step_in_epoch"] == 0 else 0)
        if rs["step_in_epoch"]:
            partial = EpochProgress(rs["step_in_epoch"], list(rs["epoch_losses"]))
        restore_rng(rs["rng"], train_ds, loader.generator)

    def save_last(epoch: int, step: EpochProgress, rng: dict, metrics: dict) -> None:
        if not main:
            return
        state = {"epoch": epoch, "step_in_epoch": step.done, "epoch_losses": list(step.losses),
                 "global_step": (epoch - 1) * per_epoch + step.done if step.done else epoch * per_epoch,
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                 "scaler": precision.scaler.state_dict() if precision.scaler is not None else {},
                 "best": best, "since_best": early.since_best, "history": history}
        save_checkpoint(_payload(cfg, net, spacing, channels, epoch, metrics, tracker) | {"resume": state}, last_path)

    every = cfg.train.checkpoint_every_steps
    bar = tqdm(total=total, initial=min(total, (start - 1) * per_epoch), desc="train", unit="step", disable=not progress, file=sys.stderr)
    with StopSignal() as stop:
        for epoch in range(start, cfg.train.epochs + 1):
            status = f"epoch {epoch}/{cfg.train.epochs}", last_val.get("val_lesion_recall", float("nan"))
            rng = capture_rng(train_ds, loader.generator)  # before the loader draws its order: replayable

            def periodic(step: EpochProgress, epoch=epoch, rng=rng) -> None:
                if every and step.done % every == 0 and step.done < per_epoch:
                    save_last(epoch, step, rng, {"train_loss_so_far": sum(step.losses) / max(1, len(step.losses))})

            if world > 1:
                loader.sampler.set_epoch(epoch)
            step_state, partial = partial, EpochProgress()
            try:
                train_loss = _train_epoch(model, loader, loss_fn, optimizer, scheduler, device, bar, status,
                                          guard, stop, cfg.train.grad_clip, step_state, periodic, precision)
            except Stopped as sig:
                save_last(epoch, step_state, rng, {"stopped_by": str(sig)})
                bar.close()
                raise MedsegError(f"{run_dir}: stopped by {sig} at epoch {epoch} step {step_state.done}; {last_path.name} holds "
                                  f"everything to continue: medseg train --resume {run_dir}", exit_code=143) from None
            metrics = {"train_loss": mean_over_ranks(train_loss), "lr": scheduler.get_last_lr()[0]}
            if (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs) and main:
                val = validate(net, val_ds, cfg, spacing, device)
                last_val = val.metrics
                metrics.update(last_val)
                improved = last_val[cfg.train.select_metric] >= best
                early.update(last_val[cfg.train.select_metric] > best)
                if improved:
                    best = last_val[cfg.train.select_metric]
                    save_checkpoint(_payload(cfg, net, spacing, channels, epoch, metrics, tracker), best_path)
                    _write_best_report(val, run_dir / "report")
            history.append({"epoch": epoch, **metrics})
            save_last(epoch, EpochProgress(), capture_rng(train_ds, loader.generator), metrics)
            tracker.log_metrics(metrics, step=epoch)
            if broadcast(early.stop):
                print(f"early stop: no better {cfg.train.select_metric} in {early.patience} validations (epoch {epoch})", file=sys.stderr)
                break
    bar.close()
    if not main:
        return TrainResult(run_dir, best_path, last_path, None, best, history)
    from medseg.reports import training_curve

    training_curve(history, run_dir / "report" / "training_curve.png")
    for path in sorted((run_dir / "report").rglob("*")):
        if path.is_file():
            tracker.log_artifact(path, str(path.parent.relative_to(run_dir)))
    if best_path.exists():
        tracker.log_model(best_path, cfg.tracking.register_model)
    return TrainResult(run_dir, best_path, last_path, tracker.run_id, best, history)
