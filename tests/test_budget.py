"""train.max_minutes: the epochs that fit, a schedule stretched to them, a final validation.
Time is simulated (a clock that advances 10 s per reading), so nothing here depends on speed."""

from __future__ import annotations

import pytest

from medseg.training import guards
from medseg.training.guards import TimeBudget


class Clock:
    """Stands in for the ``time`` module inside guards: each monotonic() reading is 10 s later."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 10.0
        return self.now


def test_budget_estimates_from_the_epochs_done(monkeypatch):
    monkeypatch.setattr(guards, "time", Clock())
    budget = TimeBudget(1.0, first_epoch=1, max_epochs=100)  # start at t=10
    assert budget.last_epoch(1) == 6  # t=20: 10 s per epoch, 50 s left -> 5 more
    assert budget.last_epoch(2) == 6
    assert TimeBudget(None, 1, 7).last_epoch(1) == 7
    assert TimeBudget(60.0, 1, 7).last_epoch(1) == 7  # never beyond train.epochs


def test_a_resumed_run_counts_the_time_it_trained_before(monkeypatch):
    """Stopped after 3 epochs in 30 s of a 60 s budget: the resumed run has 30 s left, not 60 s,
    and estimates 10 s per epoch from all the epochs (the earlier ones included)."""
    monkeypatch.setattr(guards, "time", Clock())
    budget = TimeBudget(1.0, first_epoch=4, max_epochs=100, spent_s=30.0)  # start at t=10-30
    assert budget.elapsed_s == 30.0  # what last.pt records until the first estimate
    assert budget.last_epoch(4) == 6  # t=20: 40 s in 4 epochs, 20 s left -> 2 more
    assert budget.elapsed_s == pytest.approx(40.0)


@pytest.mark.slow
def test_training_stops_at_the_budget_with_a_final_validation(monkeypatch, tmp_path):
    from medseg.config.load import load_config
    from medseg.data.synthetic import write_dataset
    from medseg.demo import DEMO_CONFIG
    from medseg.training.run import train

    monkeypatch.setattr(guards, "time", Clock())
    write_dataset(tmp_path / "data", 4, seed=2, shape=(32, 32, 24))
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"data.dataset={tmp_path / 'data'}",
            f"train.output_dir={tmp_path / 'runs'}",
            "train.epochs=50",
            "train.val_every=4",
            "train.max_minutes=1",
            "sampling.patch_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.batch_size=2",
            "preprocess.target_spacing=null",
            "tracking.enabled=false",
        ],
    )
    result = train(cfg, progress=False)
    epochs = [h["epoch"] for h in result.history]
    assert epochs == [1, 2, 3, 4, 5, 6]  # 10 s per simulated epoch, 60 s budget
    assert "val_dice" in result.history[-1] and "val_dice" in result.history[3]  # the last epoch validated
    assert "val_dice" not in result.history[4]
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-6)  # the schedule ended at the budget
