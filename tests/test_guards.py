"""Training guard rails: non-finite losses skipped then fatal, SIGTERM stops cleanly with last.pt,
early stopping, gradient clipping."""

import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import Forked, cli

from medseg.errors import MedsegError
from medseg.training.guards import EarlyStopping, NonFiniteGuard, Stopped, StopSignal
from medseg.training.step import StepContext, run_epoch

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


class Batch(dict):
    pass


class Meta(torch.Tensor):
    def as_tensor(self):
        return torch.Tensor(self)


def loader(n):
    x = torch.randn(2, 1, 8, 8, 8).as_subclass(Meta)
    y = (torch.rand(2, 1, 8, 8, 8) > 0.8).float().as_subclass(Meta)
    return [{"image": x, "label": y} for _ in range(n)]


class Bar:
    def update(self, n):
        pass

    def set_postfix_str(self, s):
        pass


def setup():
    model = torch.nn.Conv3d(1, 1, 3, padding=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def test_nonfinite_losses_are_skipped_then_fatal(capsys):
    model, opt, sched = setup()
    before = [p.detach().clone() for p in model.parameters()]
    calls = iter([float("nan"), float("inf"), 1.0])

    def loss_fn(logits, y):
        return logits.mean() + next(calls)

    mean = run_epoch(
        StepContext(model, loss_fn, opt, sched, torch.device("cpu"), guard=NonFiniteGuard(3)),
        loader(3),
        Bar(),
        ("e1", 0.0),
    )
    assert math.isfinite(mean) and "step skipped" in capsys.readouterr().err
    assert sched.last_epoch == 1  # only the applied step advanced the schedule
    with pytest.raises(MedsegError, match="3 non-finite losses in a row"):
        run_epoch(
            StepContext(
                model, lambda lg, y: lg.mean() * float("nan"), opt, sched, torch.device("cpu"), guard=NonFiniteGuard(3)
            ),
            loader(5),
            Bar(),
            ("e2", 0.0),
        )
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the finite step was applied


def test_grad_clip_bounds_the_update():
    model, opt, sched = setup()
    before = [p.detach().clone() for p in model.parameters()]
    run_epoch(
        StepContext(model, lambda lg, y: (lg * 1e6).sum(), opt, sched, torch.device("cpu"), grad_clip=1.0),
        loader(1),
        Bar(),
        ("e", 0.0),
    )
    step = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, model.parameters())))
    assert step <= 0.1 * 1.0 + 1e-5  # lr * max norm


def test_stop_signal_and_early_stopping():
    with StopSignal() as stop:
        stop.check()
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Stopped, match="SIGTERM"):
            stop.check()
    early = EarlyStopping(2)
    for improved in (True, False):
        early.update(improved)
    assert not early.stop
    early.update(False)
    assert early.stop and not EarlyStopping(None).stop


def test_sigterm_during_training_writes_last_and_exits_cleanly(tmp_path):
    data = tmp_path / "data"
    assert cli("synth", "--out", data, "--cases", 4, "--shape", "32,32,24").returncode == 0
    args = [
        "train",
        DEMO,
        "--set",
        f"data.dataset={data}",
        "--set",
        f"train.output_dir={tmp_path / 'runs'}",
        "--set",
        "train.epochs=500",
        "--set",
        "sampling.patch_size=[16,16,16]",
        "--set",
        "model.channels=[4,8,16]",
        "--set",
        "model.strides=[2,2]",
        "--set",
        "tracking.enabled=false",
        "--quiet",
    ]
    proc = Forked(args)
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob("*/last.pt")) and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err
    last = next((tmp_path / "runs").glob("*/last.pt"))
    weights = torch.load(last, weights_only=False)["state_dict"]
    kernels = [w for w in weights.values() if w.dim() == 5]  # channels_last_3d in training (train.channels_last auto)
    assert kernels and all(w.is_contiguous() for w in weights.values())  # the checkpoint: plain layout
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("amp,channels_last", [("fp16", False), ("bf16", True), ("off", True)])
def test_mixed_precision_and_memory_format_steps(amp, channels_last):
    from medseg.config.schema import TrainConfig
    from medseg.training.precision import precision_for

    model, opt, sched = setup()
    before = [p.detach().clone() for p in model.parameters()]
    precision = precision_for(TrainConfig(amp=amp, channels_last=channels_last), torch.device("cpu"))
    assert (precision.scaler is not None) == (amp == "fp16")
    mean = run_epoch(
        StepContext(
            model,
            lambda lg, y: ((lg.float() - y) ** 2).mean(),
            opt,
            sched,
            torch.device("cpu"),
            precision,
            guard=NonFiniteGuard(3),
        ),
        loader(2),
        Bar(),
        ("e", 0.0),
    )
    assert math.isfinite(mean) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_on_the_cpu_is_bf16_only_where_it_is_native(monkeypatch, native):
    from medseg.config.schema import TrainConfig
    from medseg.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    chosen = precision.precision_for(TrainConfig(), torch.device("cpu"))
    assert chosen.dtype is (torch.bfloat16 if native else None) and chosen.scaler is None
    assert precision.precision_for(TrainConfig(amp="off"), torch.device("cpu")).dtype is None


def test_channels_last_auto_is_on_for_the_cpu_only():
    from medseg.config.schema import TrainConfig
    from medseg.training.precision import precision_for

    assert precision_for(TrainConfig(), torch.device("cpu")).channels_last
    assert not precision_for(TrainConfig(amp="off"), torch.device("cuda")).channels_last
    assert precision_for(TrainConfig(amp="off", channels_last=True), torch.device("cuda")).channels_last
    assert not precision_for(TrainConfig(channels_last=False), torch.device("cpu")).channels_last
