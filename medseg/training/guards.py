"""Guard rails of the training loop: non-finite losses, SIGTERM/SIGINT from a scheduler, early stopping.

- :class:`NonFiniteGuard`: a step whose loss is NaN/Inf is skipped (no optimiser update) with a
  warning; ``limit`` such steps in a row abort training with a clear message (usually a learning
  rate that is too high, or NaN voxels that slipped through).
- :class:`StopSignal`: SIGTERM (what Slurm/Kubernetes send before killing a job) sets a flag the
  loop checks after every step, so the run stops between steps, writes ``last.pt`` and ends its
  MLflow run as KILLED instead of dying mid-write.
- :class:`EarlyStopping`: stop after ``patience`` validations without improvement of the selection metric.
- :class:`TimeBudget`: ``train.max_minutes``, the epochs that fit in a wall-clock budget.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from types import FrameType

from medseg.errors import MedsegError
from medseg.runtime.distributed import any_rank


class Stopped(Exception):
    """Raised inside the training loop when a stop signal arrived."""


class NonFiniteGuard:
    """Count consecutive non-finite losses; ``ok(loss)`` says whether to apply the step."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row, self.skipped = limit, 0, 0

    def ok(self, loss: float, where: str) -> bool:
        if not any_rank(not math.isfinite(loss)):  # under torchrun every rank skips together
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped += 1
        print(f"warning: non-finite loss ({loss}) at {where}; step skipped", file=sys.stderr)
        if self.in_a_row >= self.limit:
            raise MedsegError(
                f"training: {self.in_a_row} non-finite losses in a row (at {where}); lower optim.lr, "
                "check the data with 'medseg check', or raise train.max_nonfinite_steps"
            )
        return False


class StopSignal:
    """Context manager turning SIGTERM into a flag (the previous handler is restored on exit)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> StopSignal:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. a notebook worker): no handler
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def check(self) -> None:
        """Raise :class:`Stopped` when a signal arrived (on any rank under torchrun)."""
        if any_rank(self.received is not None):
            raise Stopped(signal.Signals(self.received or signal.SIGTERM).name)


class EarlyStopping:
    """``update(improved)`` after each validation; ``stop`` once ``patience`` passed without improvement."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.since_best = patience, 0

    def update(self, improved: bool) -> None:
        self.since_best = 0 if improved else self.since_best + 1

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience


class TimeBudget:
    """``train.max_minutes``: how many epochs fit in the budget, from the mean duration of the
    epochs done so far (validations included). ``last_epoch(done)`` is re-estimated after every
    epoch; training ends at it with a final validation, so it overruns the budget by at most one
    epoch. ``minutes=None`` = no budget (the configured epochs). ``spent_s``: seconds a resumed
    run trained before (epochs 1..first_epoch-1 then count towards the budget and the estimate)."""

    def __init__(self, minutes: float | None, first_epoch: int, max_epochs: int, spent_s: float = 0.0) -> None:
        self.minutes, self.max_epochs = minutes, max_epochs
        self.first_epoch = 1 if spent_s > 0 else first_epoch
        self.start = time.monotonic() - spent_s
        self.elapsed_s = spent_s  # training seconds at the last estimate, a resumed run's earlier ones included

    def last_epoch(self, done: int) -> int:
        """The last epoch to run, given that epochs ``first_epoch..done`` took the time so far."""
        elapsed = self.elapsed_s = time.monotonic() - self.start
        if self.minutes is None:
            return self.max_epochs
        per_epoch = elapsed / max(done - self.first_epoch + 1, 1)
        more = int(max(self.minutes * 60 - elapsed, 0.0) // max(per_epoch, 1e-9))
        return min(self.max_epochs, done + more)
