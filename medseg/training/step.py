"""One optimisation step and one pass over the training loader.

A :class:`StepContext` holds what a step needs (network, loss, optimiser, schedule, device,
precision, gradient clipping, the non-finite guard); :func:`run_epoch` draws the batches and
applies the steps. The learning rate follows :func:`lr_schedule` per applied step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from medseg.runtime.device import plain_tensor
from medseg.training.guards import NonFiniteGuard, StopSignal
from medseg.training.precision import Precision
from medseg.transforms.sampling import INSTANCE_KEY


class Bar(Protocol):
    """What the epoch needs of a progress bar (tqdm has both)."""

    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str = "") -> Any: ...


@dataclass
class EpochProgress:
    """Steps of the current epoch done so far and their losses (what a mid-epoch checkpoint keeps)."""

    done: int = 0
    losses: list[float] = field(default_factory=list)

    @property
    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else float("nan")


@dataclass
class StepContext:
    """Everything one optimisation step uses."""

    model: torch.nn.Module
    loss_fn: Callable[..., torch.Tensor]  # (logits, label) or, with needs_instances, (logits, label, instances)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    precision: Precision = field(default_factory=Precision)
    grad_clip: float | None = None
    guard: NonFiniteGuard | None = None


@dataclass
class LRSchedule:
    """Per-step multiplier of the peak learning rate, for ``LambdaLR``: poly (power 0.9) or cosine,
    both reaching 0 at ``total_steps`` and staying there. An object rather than a closure so that
    ``train.max_minutes`` moves the end by setting ``total_steps`` on the one schedule the
    ``LambdaLR`` holds, instead of swapping the scheduler's internals."""

    kind: str
    total_steps: int

    def __call__(self, step: int) -> float:
        frac = min(step, self.total_steps) / max(self.total_steps, 1)
        if self.kind == "poly":
            return (1 - frac) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * frac))


def lr_schedule(kind: str, total_steps: int) -> LRSchedule:
    """The schedule ``optim.schedule`` names (poly or cosine) over ``total_steps`` applied steps."""
    return LRSchedule(kind, total_steps)


def _backward_and_step(ctx: StepContext, loss: torch.Tensor) -> None:
    scaler = ctx.precision.scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if ctx.grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
    if scaler is not None:
        scaler.step(ctx.optimizer)
        scaler.update()
    else:
        ctx.optimizer.step()
    ctx.scheduler.step()  # skipped steps do not advance the schedule


def train_step(ctx: StepContext, batch: dict[str, torch.Tensor], where: str) -> tuple[float, bool]:
    """Forward, loss and (unless the guard skips a non-finite loss) backward and update.

    Args:
        batch: ``image`` (B, C_in, X, Y, Z), ``label`` (B, C, X, Y, Z) and, for the blob loss,
            ``instances`` (B, 1, X, Y, Z) lesion ids.

    Returns:
        (loss value, whether the step was applied).
    """
    x = plain_tensor(batch["image"]).to(ctx.device, non_blocking=True)
    y = plain_tensor(batch["label"]).to(ctx.device, non_blocking=True)
    if ctx.precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    ctx.optimizer.zero_grad(set_to_none=True)
    dtype = ctx.precision.dtype
    with torch.autocast(ctx.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = ctx.model(x)
    if getattr(ctx.loss_fn, "needs_instances", False):  # the blob loss: lesion ids of the patch
        instances = plain_tensor(batch[INSTANCE_KEY]).to(ctx.device, non_blocking=True)
        loss = ctx.loss_fn(logits, y, instances)
    else:
        loss = ctx.loss_fn(
            logits, y
        )  # logits: a tensor, or a list with deep supervision (the losses compute in float32)
    value = float(loss.detach())
    applied = ctx.guard is None or ctx.guard.ok(value, where)
    if applied:
        _backward_and_step(ctx, loss)
    return value, applied


def run_epoch(
    ctx: StepContext,
    loader: Iterable[dict[str, torch.Tensor]],
    bar: Bar,
    status: tuple[str, float],
    stop: StopSignal | None = None,
    progress: EpochProgress | None = None,
    on_step: Callable[[EpochProgress], None] | None = None,
) -> float:
    """One pass over ``loader``; returns the mean loss of the applied steps.

    With ``progress`` from a mid-epoch checkpoint, its first ``progress.done`` batches are drawn
    (keeping the random streams in step) but not trained on again. ``on_step(progress)`` runs
    after every step (periodic checkpoints); ``stop`` ends the pass between steps. The bar shows
    ``status`` (epoch, last validation lesion recall) and the loss.
    """
    ctx.model.train()
    progress = progress if progress is not None else EpochProgress()
    skip = progress.done
    for i, batch in enumerate(loader):
        if i < skip:
            continue
        value, applied = train_step(ctx, batch, f"{status[0]} step {i + 1}")
        if applied:
            progress.losses.append(value)
        progress.done = i + 1
        bar.update(1)
        bar.set_postfix_str(f"{status[0]} loss {value:.3f} val_recall {status[1]:.2f}")
        if on_step is not None:
            on_step(progress)
        if stop is not None:
            stop.check()
    return progress.mean_loss
