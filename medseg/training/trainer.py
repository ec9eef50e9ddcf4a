"""The trainer: setup, restore, run_epoch, validate_and_select, finish.

One :class:`Trainer` per run. ``fit`` runs the epochs: each is a pass over the loader
(:func:`medseg.training.step.run_epoch`), ``last.pt`` at its end (and every
``train.checkpoint_every_steps``), validation every ``train.val_every`` epochs with ``best.pt``
kept for the best ``train.select_metric``. Under torchrun the network is wrapped in
DistributedDataParallel; rank 0 alone validates, writes and logs, and decisions (early stop) are
broadcast from it. State lives in :class:`medseg.training.state.TrainState`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.data import Dataset
from tqdm import tqdm

from medseg.config.load import flatten
from medseg.config.plan import Plan
from medseg.config.schema import ExperimentConfig
from medseg.data.profile import ProfileRange
from medseg.errors import MedsegError
from medseg.inference.pyfunc import save_pyfunc
from medseg.io.write import write_text
from medseg.nn.checkpoint import (
    Checkpoint,
    OperatingPoint,
    ResumeState,
    save_checkpoint,
)
from medseg.nn.losses.registry import build_training_loss
from medseg.nn.registry import build_model
from medseg.runtime.distributed import broadcast, mean_over_ranks
from medseg.tracking.lineage import dataset_input, lineage_tags
from medseg.tracking.store import redact_config, redact_uri
from medseg.tracking.tracker import ModelCard
from medseg.training.finetune import EncoderFreeze, InitSource, initialise, record_init
from medseg.training.guards import EarlyStopping, NonFiniteGuard, Stopped, StopSignal, TimeBudget
from medseg.training.loaders import make_loader
from medseg.training.precision import precision_for
from medseg.training.prepare import Prepared
from medseg.training.reports import best_metrics, run_description, write_best_report
from medseg.training.resume import capture_rng, restore_rng
from medseg.training.review_site import WORST, keep_worst_volumes, review_note, write_review_site
from medseg.training.state import RunContext, TrainResult, TrainState
from medseg.training.step import EpochProgress, StepContext, lr_schedule, run_epoch
from medseg.training.validation import validate
from medseg.viz.plots import training_curve


class Trainer:
    """Train the network of ``prep.cfg`` on ``datasets`` (train, validation) into ``run``; with
    ``init`` (``train.init_from``), starting from that model's weights."""

    def __init__(
        self,
        prep: Prepared,
        datasets: tuple[Dataset, Dataset],
        device: torch.device,
        run: RunContext,
        init: InitSource | None = None,
        training_scans: ProfileRange | None = None,
    ) -> None:
        self.cfg: ExperimentConfig = prep.cfg
        self.training_scans = training_scans  # stored in every checkpoint: predict compares each scan with it
        self.recorded_cfg = redact_config(self.cfg)  # what is written down: config.yaml, checkpoints, MLflow params
        self.prep, self.device, self.run, self.init = prep, device, run, init
        self.train_ds, self.val_ds = datasets
        self.state = TrainState()
        self.early = EarlyStopping(self.cfg.train.early_stop_patience)
        self.guard = NonFiniteGuard(self.cfg.train.max_nonfinite_steps)
        self.budget = TimeBudget(self.cfg.train.max_minutes, 1, self.cfg.train.epochs)  # fit() starts it

    @property
    def total_steps(self) -> int:
        """Optimisation steps to the last epoch (``train.epochs``, or what the time budget allows)."""
        return self.last_epoch * self.per_epoch

    def setup(self, resumed: bool = False) -> None:
        """Record the run, then build loader, network (from ``init``'s weights unless resumed),
        precision, loss, optimiser and schedule."""
        cfg, run = self.cfg, self.run
        if run.main:
            self._record_run(resumed)
        self.loader = make_loader(cfg, self.train_ds, run.rank, run.world)
        plan = self.prep.plan
        self.net = build_model(
            plan.network, in_channels=plan.preprocess.in_channels, out_channels=len(plan.preprocess.classes)
        ).to(self.device)
        if self.init is not None and not resumed and run.main:  # other ranks get rank 0's weights from DDP
            record_init(run, self.init, plan, initialise(self.net, plan, self.init, cfg.train.init_new_channels))
        self.freeze = EncoderFreeze(self.net, plan.network.name, cfg.train.freeze_encoder_epochs)
        precision = precision_for(cfg.train, self.device)
        self.net = precision.apply(self.net)
        model = self.net
        if run.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.freeze.active,  # a frozen encoder gets no gradients
            )
        if cfg.train.compile:
            model = torch.compile(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.per_epoch = len(self.loader)
        self.last_epoch = cfg.train.epochs  # train.max_minutes moves it (fit_to_budget)
        self.schedule = lr_schedule(cfg.optim.schedule, self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        loss = build_training_loss(cfg.loss, plan.blob_weight, plan.network.deep_supervision)
        self.ctx = StepContext(
            model, loss, optimizer, scheduler, self.device, precision, cfg.train.grad_clip, self.guard
        )

    def _record_run(self, resumed: bool) -> None:
        """Config (and plan) into the run folder and MLflow; a resumed run only records the resume."""
        cfg, run, tracker = self.recorded_cfg, self.run, self.run.tracker
        config_path = run.run_dir / "config.yaml"
        write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), config_path)
        if resumed:  # MLflow params cannot change; the extended epochs are in config.yaml and a tag
            return
        params = {
            k: v for k, v in flatten(cfg).items() if v != "None"
        }  # unset keys: see config.yaml, not a column of None
        tracker.log_params(
            params
            | {
                **plan_params(self.prep.plan),
                "data.n_train": str(len(self.train_ds)),
                "data.n_val": str(len(self.val_ds)),
            }
        )
        tracker.set_tags(lineage_tags(cfg, self.device))
        splits = {"train": [d["case_id"] for d in self.train_ds.data], "val": [d["case_id"] for d in self.val_ds.data]}
        tracker.log_dataset(dataset_input(Path(cfg.data.dataset), splits))
        tracker.log_artifact(config_path)
        plan_path = run.run_dir / "plan.yaml"  # the resolved plan, then the proposal it started from
        record = {"resolved": self.prep.plan.to_dict(), "plan": self.prep.proposal or {}}
        write_text(yaml.safe_dump(record, sort_keys=False, default_flow_style=None), plan_path)
        tracker.log_artifact(plan_path)

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from a ``last.pt``: weights, optimiser, schedule, scaler, state and random streams."""
        rs = ckpt.resume
        if rs is None:
            raise MedsegError(
                f"{self.run.last_path}: holds no resume state (written by an older medseg or by a stopped run "
                "without one); start a new run"
            )
        try:
            self.net.load_state_dict(ckpt.state_dict)
            self.ctx.optimizer.load_state_dict(rs.optimizer)
        except (RuntimeError, ValueError) as exc:
            raise MedsegError(
                f"{self.run.last_path}: does not fit the network of the config ({str(exc).splitlines()[0][:120]}); "
                "resume without changing model settings"
            ) from None
        self.ctx.scheduler.load_state_dict(rs.scheduler)
        self.schedule.total_steps = self.total_steps  # the end comes from this config (train.epochs may be extended)
        if self.ctx.precision.scaler is not None and rs.scaler:
            self.ctx.precision.scaler.load_state_dict(rs.scaler)
        self.run.tracker.set_tags({"resumed_at_step": str(rs.global_step), "train.epochs": str(self.cfg.train.epochs)})
        history = list(rs.history)
        self.state = TrainState(
            rs.best,
            rs.best_epoch,
            history,
            history[-1] if history else {},
            rs.epoch + (1 if rs.step_in_epoch == 0 else 0),
            EpochProgress(rs.step_in_epoch, list(rs.epoch_losses)) if rs.step_in_epoch else EpochProgress(),
            0.0 if rs.finished else rs.train_seconds,
        )  # extending a finished run: a new budget
        self.early.since_best = rs.since_best
        restore_rng(rs.rng, self.train_ds, self.loader.generator)

    def checkpoint(self, epoch: int, metrics: dict[str, Any], resume: ResumeState | None = None) -> Checkpoint:
        """The network now, with everything predict (and, with ``resume``, a resumed run) needs."""
        cfg, plan = self.cfg, self.prep.plan
        uri = getattr(self.run.tracker, "uri", None)
        return Checkpoint(
            {k: v.contiguous() for k, v in self.net.state_dict().items()},  # the same file whatever the memory format
            self.recorded_cfg,
            plan.preprocess,
            OperatingPoint(cfg.inference.threshold, cfg.inference.min_lesion_mm3),
            epoch,
            dict(metrics),
            self.run.tracker.run_id,
            None if uri is None else redact_uri(uri),
            resume,
            plan,
            self.training_scans,
        )

    def save_last(
        self, epoch: int, step: EpochProgress, rng: dict[str, Any], metrics: dict[str, Any], finished: bool = False
    ) -> None:
        """``last.pt`` with everything to resume at this step (rank 0 only); ``finished``: the run
        ends after this epoch (``medseg train --folds/--seeds`` keep such a member instead of resuming it)."""
        if not self.run.main:
            return
        ctx, st = self.ctx, self.state
        scaler = ctx.precision.scaler
        resume = ResumeState(
            epoch,
            step.done,
            list(step.losses),
            (epoch - 1) * self.per_epoch + step.done if step.done else epoch * self.per_epoch,
            ctx.optimizer.state_dict(),
            ctx.scheduler.state_dict(),
            rng,
            scaler.state_dict() if scaler is not None else {},
            st.best,
            self.early.since_best,
            st.history,
            st.best_epoch,
            self.budget.elapsed_s,
            finished,
        )
        save_checkpoint(self.checkpoint(epoch, metrics, resume), self.run.last_path)

    def run_epoch(self, epoch: int, bar: tqdm, stop: StopSignal) -> dict[str, float]:
        """Train one epoch (periodic ``last.pt`` inside it); returns train_loss and lr."""
        cfg, every = self.cfg, self.cfg.train.checkpoint_every_steps
        status = f"epoch {epoch}/{cfg.train.epochs}", self.state.last_val.get("val_lesion_recall", float("nan"))
        rng = capture_rng(self.train_ds, self.loader.generator)  # before the loader draws its order: replayable

        def periodic(step: EpochProgress) -> None:
            if every and step.done % every == 0 and step.done < self.per_epoch:
                self.save_last(epoch, step, rng, {"train_loss_so_far": step.mean_loss if step.losses else 0.0})

        if self.run.world > 1:
            self.loader.sampler.set_epoch(epoch)
        frozen = self.freeze.apply(epoch)
        step_state, self.state.partial = self.state.partial, EpochProgress()
        try:
            train_loss = run_epoch(self.ctx, self.loader, bar, status, stop, step_state, periodic)
        except Stopped as sig:
            self.save_last(epoch, step_state, rng, {"stopped_by": str(sig)})
            bar.close()
            raise MedsegError(
                f"{self.run.run_dir}: stopped by {sig} at epoch {epoch} step {step_state.done}; "
                f"{self.run.last_path.name} holds "
                f"everything to continue: medseg train --resume {self.run.run_dir}",
                exit_code=143,
            ) from None
        return {"train_loss": mean_over_ranks(train_loss), "lr": self.ctx.scheduler.get_last_lr()[0], **frozen}

    def validate_and_select(self, epoch: int, metrics: dict[str, float]) -> None:
        """Validate (on the schedule, rank 0); a selection metric at least as good as the best so
        far writes ``best.pt`` and the best-epoch report."""
        cfg, st = self.cfg, self.state
        if not self.run.main or not (epoch % cfg.train.val_every == 0 or epoch == self.last_epoch):
            return
        val = validate(self.net, self.val_ds, cfg, self.prep.plan, self.device)
        st.last_val = val.metrics
        metrics.update(val.metrics)
        score = val.metrics[cfg.train.select_metric]
        self.early.update(score > st.best)
        if score >= st.best:
            st.best, st.best_epoch = score, epoch
            save_checkpoint(self.checkpoint(epoch, metrics), self.run.best_path)
            write_best_report(val, self.run.run_dir / "report")
            keep_worst_volumes(val, self.run.run_dir / WORST)
            metrics.update(best_metrics(epoch, val.metrics, cfg.train.select_metric))

    def fit_to_budget(self, budget: TimeBudget, epoch: int, bar: tqdm) -> None:
        """With ``train.max_minutes``: move the last epoch to what fits in the budget (every rank
        agrees with rank 0) and stretch the learning-rate schedule to end there."""
        estimate = budget.last_epoch(epoch)  # also the training time so far, for last.pt
        if budget.minutes is None:
            return
        last = int(broadcast(estimate))
        if last != self.last_epoch:
            self.last_epoch = last
            self.schedule.total_steps = self.total_steps  # the LambdaLR reads it from the next step on
            bar.total = self.total_steps
            self.run.tracker.set_tags({"budget_last_epoch": str(last)})

    def fit(self) -> TrainResult:
        """Epochs from ``state.start_epoch`` to the last one (``train.epochs``, or what fits in
        ``train.max_minutes``), then :meth:`finish`."""
        cfg, st = self.cfg, self.state
        bar = tqdm(
            total=self.total_steps,
            initial=min(self.total_steps, (st.start_epoch - 1) * self.per_epoch),
            desc="train",
            unit="step",
            disable=not self.run.progress,
            file=sys.stderr,
        )
        self.budget = budget = TimeBudget(cfg.train.max_minutes, st.start_epoch, cfg.train.epochs, st.train_seconds)
        with StopSignal() as stop:
            for epoch in range(st.start_epoch, cfg.train.epochs + 1):
                metrics = self.run_epoch(epoch, bar, stop)
                self.fit_to_budget(budget, epoch, bar)
                self.validate_and_select(epoch, metrics)
                st.history.append({"epoch": epoch, **metrics})
                early = bool(broadcast(self.early.stop))
                self.save_last(
                    epoch,
                    EpochProgress(),
                    capture_rng(self.train_ds, self.loader.generator),
                    metrics,
                    finished=early or epoch >= self.last_epoch,
                )
                self.run.tracker.log_metrics(metrics, step=epoch)
                if early:
                    print(
                        f"early stop: no better {cfg.train.select_metric} in {self.early.patience} validations "
                        f"(epoch {epoch})",
                        file=sys.stderr,
                    )
                    break
                if epoch >= self.last_epoch:
                    if epoch < cfg.train.epochs:
                        print(
                            f"time budget: {cfg.train.max_minutes:g} min reached after epoch {epoch}", file=sys.stderr
                        )
                    break
        bar.close()
        return self.finish()

    def finish(self) -> TrainResult:
        """Training curve and best-epoch report into MLflow, the best model logged (rank 0)."""
        run, st = self.run, self.state
        result = TrainResult(run.run_dir, run.best_path, run.last_path, None, st.best, st.history)
        if not run.main:
            return result
        report = run.run_dir / "report"
        training_curve(st.history, report / "training_curve.png")
        site = write_review_site(run.run_dir, self.cfg, st.best_epoch)
        for path in sorted(report.rglob("*")):
            if path.is_file():
                run.tracker.log_artifact(path, str(path.parent.relative_to(run.run_dir)))
        best = next((h for h in st.history if h["epoch"] == st.best_epoch), {})
        description = run_description(self.cfg, st.best_epoch, best, run.tracker.run_id)
        if run.best_path.exists():
            card = ModelCard({k: v for k, v in best.items() if k.startswith("val_")}, st.best_epoch, description)
            folder = save_pyfunc(run.best_path, run.run_dir / "mlflow_model")
            run.tracker.log_model(folder, self.cfg.tracking.register_model, card)
        run.tracker.set_tags(
            {
                "best_epoch": str(st.best_epoch),
                "mlflow.note.content": description
                + review_note(site, run.run_dir, run.tracker.run_id, getattr(run.tracker, "uri", None)),
            }
        )
        result.run_id = run.tracker.run_id
        return result


def plan_params(plan: Plan) -> dict[str, str]:
    """The resolved plan as MLflow params ``plan.<key>`` (the network's settings are the ``model.*``
    params already, with the planned topology)."""
    return {f"plan.{k}": v for k, v in flatten(plan.to_dict()).items() if not k.startswith("network.")}
