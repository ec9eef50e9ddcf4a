"""The mutable state of a training run, in one place (what ``last.pt`` saves and restores)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from medseg.tracking.tracker import Tracker
from medseg.training.step import EpochProgress


@dataclass
class TrainState:
    """Best selection metric so far, per-epoch history, the last validation, where to start."""

    best: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    last_val: dict[str, float] = field(default_factory=dict)
    start_epoch: int = 1
    partial: EpochProgress = field(default_factory=EpochProgress)  # of a mid-epoch resume
    train_seconds: float = 0.0  # a resumed run's training time before (its time budget counts it)


@dataclass
class RunContext:
    """Where a run writes and who it is under torchrun: only rank 0 writes, validates and logs."""

    run_dir: Path
    tracker: Tracker
    rank: int = 0
    world: int = 1
    progress: bool = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"


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
