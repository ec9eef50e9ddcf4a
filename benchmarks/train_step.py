"""medseg's training step against a plain PyTorch/MONAI loop doing the same work, one process.

    .venv/bin/python benchmarks/train_step.py [--size 96] [--steps 4] [--runs 5] [--device auto]
                                              [--peak-tflops 989] [--channels-last auto|true|false]
                                              [--amp auto|bf16|off] [--torch-norms]

Work: MONAI UNet 16-32-64-128-256, strides 2, 2 residual units (``medseg.models.build_model``),
1 -> 1 channels; batch 2 of ``--size``^3 patches (default 96 on CPU, 128 on CUDA) of random
intensities with a random sparse binary label (a few spheres, about 1 % of the voxels); AdamW
(lr 3e-3, weight decay 1e-4) with the poly LambdaLR of ``medseg.training.step.lr_schedule``. ``--steps``
pre-made batches (``MetaTensor`` image/label, kept on the host as a DataLoader would give them).

- medseg: ``medseg.training.step.run_epoch`` over that list (focal + Dice from
  ``build_loss(LossConfig(), mode="sigmoid")``, ``NonFiniteGuard(5)``, the precision policy of
  ``medseg train`` (``precision_for(TrainConfig())``; ``--amp`` as ``train.amp``, default auto: bf16
  autocast on CPUs with native bf16, float32 on others; ``off``: float32; ``train.channels_last`` as
  ``--channels-last`` says, default auto: network and inputs in channels_last_3d on CPU, the default
  of ``medseg train``; ``false``: the plain layout), no stop signal, no clipping,
  a do-nothing progress bar).
- torchnorm (with ``--torch-norms``): medseg's step with PyTorch's own ``nn.InstanceNorm3d`` instead
  of the layout-keeping one ``medseg train`` swaps in for channels_last_3d (``medseg.nn.norms``): what
  that change removes, in the same process.
- plain: the textbook loop written out below: zero_grad, forward (bf16 autocast on CUDA only: the
  MONAI tutorials train in float32 on a CPU), MONAI ``DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25, batch=True,
  smooth_nr=0, smooth_dr=1e-5)`` (the same terms and settings as medseg's default loss, MONAI's
  implementation), backward, optimizer.step, scheduler.step, and ``loss.item()`` for logging (medseg
  reads the loss value every step too).

Both start from the same weights (state dict copied) and see the same batches; each has its own
optimizer and scheduler. One warm-up pass each, then ``--runs`` timed passes of ``--steps`` steps,
interleaved with alternating order so machine noise hits both alike; medians. Reported: patches/s
(2 per step), ms/step, the ratio medseg / plain (CPU target <= 1.05; on a busy machine the ratio of
process CPU seconds, also printed, is steadier than wall time), CPU user and system seconds and
minor page faults per step (``resource.getrusage(RUSAGE_SELF)`` deltas over each pass: every
thread of the process; medians) and their ratios, and peak memory: on CPU the
peak RSS of each pipeline measured in a fresh process (the script re-invokes itself with a hidden
flag and runs one pass; ``ru_maxrss`` only ever grows, so one process cannot measure two pipelines), shown absolute
and above the RSS after setup; on CUDA ``torch.cuda.max_memory_allocated`` over the timed passes.

FLOPs: forward + backward of one patch counted with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matmuls; the element-wise work of norms, activations and the loss is not
counted), printed on every device; achieved TFLOP/s = GFLOP/patch x patches/s. On CUDA also the
share of ``--peak-tflops`` (default 989: H100/H200 SXM dense bf16). A GPU utilisation proxy (busy
time / wall time) is not printed: CUDA events give the span of the stream including idle gaps, not
busy time; use ``nsys`` or ``torch.profiler`` for that.

malloc: the script applies :func:`medseg.runtime.allocator.tune_allocator` at start-up as the CLI
does (both pipelines share the process, so the ratios compare the code, not the allocator);
``MEDSEG_MALLOC=default`` keeps glibc's defaults. ``benchmarks/cpu_profile.py`` shows where the
system time goes with each setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
from cpu_profile import Usage, ratio_text, usage  # benchmarks/cpu_profile.py
from monai.data import MetaTensor
from monai.losses import DiceFocalLoss
from report import add_markdown_option, table, write_markdown
from rss import rss_mb  # benchmarks/rss.py (the scripts run as python benchmarks/NAME.py)
from torch.utils.flop_counter import FlopCounterMode

from medseg.config.schema import LossConfig, ModelConfig, TrainConfig
from medseg.nn.losses.registry import build_loss
from medseg.nn.registry import build_model
from medseg.runtime.allocator import tune_allocator
from medseg.training.guards import NonFiniteGuard
from medseg.training.precision import precision_for
from medseg.training.step import StepContext, lr_schedule, run_epoch

BATCH = 2
PIPELINES = ("medseg", "plain", "torchnorm")
CHANNELS, STRIDES, RES_UNITS = (16, 32, 64, 128, 256), (2, 2, 2, 2), 2
LR, WEIGHT_DECAY = 3e-3, 1e-4


class NoBar:
    """Stands in for tqdm: run_epoch calls update and set_postfix_str."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


def make_batches(n: int, size: int, seed: int = 0) -> list[dict]:
    """``n`` batches of BATCH patches: noise plus a few spheres (the label), as MetaTensors."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    batches = []
    for _ in range(n):
        label = torch.zeros(BATCH, 1, size, size, size)
        for b in range(BATCH):
            for _ in range(3):
                centre = torch.randint(size // 8, size - size // 8, (3,), generator=g).float().view(3, 1, 1, 1)
                radius = size / 12 * (0.6 + 0.6 * torch.rand((), generator=g))
                label[b, 0][((grid - centre) ** 2).sum(0) <= radius**2] = 1.0
        image = torch.randn(BATCH, 1, size, size, size, generator=g) + label
        batches.append({"image": MetaTensor(image), "label": MetaTensor(label)})
    return batches


def build(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelConfig(channels=CHANNELS, strides=STRIDES, num_res_units=RES_UNITS), in_channels=1, out_channels=1
    )


class Pipeline:
    """One model + optimizer + scheduler and the function that runs one pass over the batches."""

    def __init__(
        self,
        name: str,
        state: dict,
        device: torch.device,
        total_steps: int,
        channels_last: str = "auto",
        amp: str = "auto",
    ) -> None:
        self.name, self.device = name, device
        self.model = build().to(device)
        self.model.load_state_dict(state)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_schedule("poly", total_steps))
        if name != "plain":  # medseg's step as train runs it: its loss, guard and precision policy
            self.loss_fn = build_loss(LossConfig(), mode="sigmoid")
            self.guard = NonFiniteGuard(5)
            layout = channels_last if channels_last == "auto" else channels_last == "true"
            self.precision = precision_for(TrainConfig(channels_last=layout, amp=amp), device)
            if name == "medseg":
                self.model = self.precision.apply(self.model)
            elif self.precision.channels_last:  # torchnorm: the layout without medseg's norms
                self.model = self.model.to(memory_format=torch.channels_last_3d)
        else:
            self.loss_fn = DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25, batch=True, smooth_nr=0.0, smooth_dr=1e-5)

    def run(self, batches: list[dict]) -> float:
        """One pass; returns the mean loss."""
        if self.name != "plain":
            ctx = StepContext(
                self.model, self.loss_fn, self.optimizer, self.scheduler, self.device, self.precision, guard=self.guard
            )
            return run_epoch(ctx, batches, NoBar(), ("bench", float("nan")))
        return plain_epoch(self.model, batches, self.loss_fn, self.optimizer, self.scheduler, self.device)


def plain_epoch(model, batches, loss_fn, optimizer, scheduler, device) -> float:
    """The plain PyTorch/MONAI training loop."""
    model.train()
    losses = []
    for batch in batches:
        x, y = batch["image"].as_tensor().to(device), batch["label"].as_tensor().to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(pipe: Pipeline, batches: list[dict]) -> tuple[float, float, float, Usage]:
    """(wall seconds, process CPU seconds, mean loss, CPU user/system seconds and minor faults) of one pass."""
    sync(pipe.device)
    start, start_cpu, start_use = time.perf_counter(), time.process_time(), usage()
    loss = pipe.run(batches)
    sync(pipe.device)
    return time.perf_counter() - start, time.process_time() - start_cpu, loss, usage() - start_use


def flops_per_patch(state: dict, size: int, device: torch.device) -> float:
    """FLOPs of forward + backward of one patch (FlopCounterMode; convolutions and matmuls)."""
    model = build().to(device)
    model.load_state_dict(state)
    model.train()
    x = torch.randn(1, 1, size, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x)
        out.float().mean().backward()
    return float(counter.get_total_flops())


def memory_child(name: str, size: int, steps: int, channels_last: str, amp: str) -> None:
    """Hidden mode: one pipeline in this fresh process (CPU); prints its peak RSS as JSON."""
    batches = make_batches(steps, size)
    state = build().state_dict()
    pipe = Pipeline(name, state, torch.device("cpu"), steps + 1, channels_last, amp)
    setup_mb = rss_mb()
    pipe.run(batches)  # one pass: the optimizer state is created at its first step
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_mb": peak_mb, "setup_mb": setup_mb}))


def cpu_peak_rss(name: str, args) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_memory",
        name,
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--channels-last",
        args.channels_last,
        "--amp",
        args.amp,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"memory run of {name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def print_cpu_usage(use: dict[str, list[Usage]], steps: int) -> None:
    """Per pipeline: medians over the passes of CPU user and system seconds and minor page faults per
    step (``getrusage(RUSAGE_SELF)``: every thread of the process), then the ratios medseg / plain."""
    med = {
        name: Usage(
            statistics.median(u.user for u in runs) / steps,
            statistics.median(u.sys for u in runs) / steps,
            round(statistics.median(u.faults for u in runs) / steps),
        )
        for name, runs in use.items()
    }
    print(f"\nper step, median of {len(use['medseg'])} passes (getrusage RUSAGE_SELF deltas, all threads)")
    print(f"{'pipeline':8s} {'user s':>8s} {'sys s':>8s} {'sys/user':>8s} {'minor faults':>13s}")
    for name, u in med.items():
        print(f"{name:8s} {u.user:8.3f} {u.sys:8.3f} {100 * u.sys / max(u.user, 1e-9):7.1f}% {u.faults:13d}")
    p = med["plain"]
    for name, m in med.items():
        if name != "plain":
            print(
                f"ratio {name} / plain: user {ratio_text(m.user, p.user)}, sys {ratio_text(m.sys, p.sys)}, user + "
                f"sys {ratio_text(m.user + m.sys, p.user + p.sys)}, minor faults {ratio_text(m.faults, p.faults)}"
            )


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=None, help="patch edge in voxels (default 96 on CPU, 128 on CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed pass (default 4 on CPU, 20 on CUDA)")
    parser.add_argument("--runs", type=int, default=5, help="timed passes per pipeline (after 1 warm-up pass)")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)"
    )
    parser.add_argument(
        "--channels-last",
        choices=("auto", "true", "false"),
        default="auto",
        help="medseg's train.channels_last (auto: as medseg train, channels_last_3d on CPU); plain stays as it is",
    )
    parser.add_argument(
        "--amp",
        choices=("auto", "bf16", "off"),
        default="auto",
        help="medseg's train.amp (auto: as medseg train, bf16 on GPUs and on CPUs with native bf16); plain: "
        "float32 on CPU",
    )
    parser.add_argument(
        "--torch-norms",
        action="store_true",
        help="a third pipeline: medseg's step with PyTorch's InstanceNorm3d (what medseg.nn.norms removes)",
    )
    add_markdown_option(parser)
    parser.add_argument("--_memory", choices=PIPELINES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    applied = tune_allocator()  # as the CLI does at start-up; MEDSEG_MALLOC=default keeps glibc's settings
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.size = args.size or (128 if cuda else 96)
    args.steps = args.steps or (20 if cuda else 4)
    if args.size % 16:
        raise SystemExit(f"--size {args.size}: must be a multiple of 16 (the product of the strides)")
    if args._memory:
        memory_child(args._memory, args.size, args.steps, args.channels_last, args.amp)
        return

    batches = make_batches(args.steps, args.size)
    state = build().state_dict()
    total = (args.runs + 1) * args.steps + 1
    pipes = {
        name: Pipeline(name, copy.deepcopy(state), device, total, args.channels_last, args.amp)
        for name in PIPELINES[: 3 if args.torch_norms else 2]
    }
    gpu = f", {torch.cuda.get_device_name(device)}, bf16 autocast" if cuda else ""
    print(
        f"UNet {'-'.join(map(str, CHANNELS))}, {RES_UNITS} res units, batch {BATCH} x {args.size}^3, "
        f"{args.steps} steps per pass, {args.runs} timed passes, device {device}{gpu}, "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, malloc "
        f"{applied or 'glibc defaults'}, medseg channels_last_3d {pipes['medseg'].precision.channels_last}, "
        f"medseg autocast {pipes['medseg'].precision.dtype or 'off (float32)'}"
    )

    gflop = flops_per_patch(state, args.size, device) / 1e9
    print(f"forward + backward of one {args.size}^3 patch: {gflop:.1f} GFLOP (FlopCounterMode, convolutions)")

    times: dict[str, list[float]] = {name: [] for name in pipes}
    cpu: dict[str, list[float]] = {name: [] for name in pipes}
    use: dict[str, list[Usage]] = {name: [] for name in pipes}
    peak_alloc: dict[str, float] = dict.fromkeys(pipes, 0.0)
    for i in range(args.runs + 1):  # pass 0 warms up and is not counted; the order alternates
        line = []
        for name in list(pipes) if i % 2 else list(pipes)[::-1]:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sec, cpu_s, loss, used = timed(pipes[name], batches)
            if cuda and i:
                peak_alloc[name] = max(peak_alloc[name], torch.cuda.max_memory_allocated(device) / 2**20)
            line.append(f"{name} {sec:6.2f} s (cpu {cpu_s:6.2f} s, loss {loss:.4f})")
            if i:
                times[name].append(sec)
                cpu[name].append(cpu_s)
                use[name].append(used)
        print(f"  pass {i}{' (warm-up)' if not i else ''}: " + " | ".join(line), flush=True)

    if cuda:
        memory = {name: f"{peak_alloc[name]:8.0f} MB allocated" for name in pipes}
        mem_ratio = {name: peak_alloc[name] / peak_alloc["plain"] for name in pipes}
    else:
        rss = {name: cpu_peak_rss(name, args) for name in pipes}
        memory = {
            name: f"{r['peak_mb']:6.0f} MB RSS (+{r['peak_mb'] - r['setup_mb']:5.0f} over setup)"
            for name, r in rss.items()
        }
        mem_ratio = {name: rss[name]["peak_mb"] / rss["plain"]["peak_mb"] for name in pipes}

    med = {name: statistics.median(v) for name, v in times.items()}
    patches = args.steps * BATCH
    print(
        f"\nmedian of {args.runs} passes of {args.steps} steps ({patches} patches), load average now "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"{'pipeline':8s} {'patches/s':>10s} {'ms/step':>9s} {'min-max ms/step':>16s} {'TFLOP/s':>8s}  peak memory")
    for name, sec in med.items():
        lo, hi = (min(times[name]) / args.steps * 1000, max(times[name]) / args.steps * 1000)
        print(
            f"{name:8s} {patches / sec:10.2f} {sec / args.steps * 1000:9.1f} {lo:7.0f}-{hi:<8.0f} "
            f"{gflop * patches / sec / 1000:8.3f}  {memory[name]}"
        )
    for name in med:
        if name == "plain":
            continue
        ratio = med[name] / med["plain"]
        target = " (CPU target <= 1.05: " + ("ok)" if ratio <= 1.05 else "above target)") if not cuda else ""
        cpu_ratio = statistics.median(cpu[name]) / statistics.median(cpu["plain"])
        print(
            f"ratio {name} / plain: time per step {ratio:.3f}{target}, process cpu {cpu_ratio:.3f}, "
            f"peak memory {mem_ratio[name]:.2f}"
        )
    print_cpu_usage(use, args.steps)
    rows = [
        (
            name,
            f"{sec / args.steps * 1000:.1f}",
            f"{patches / sec:.2f}",
            f"{sec / med['plain']:.3f}",
            f"{gflop * patches / sec / 1000:.3f}",
            memory[name].strip(),
        )
        for name, sec in med.items()
    ]
    write_markdown(
        args.markdown,
        "Training step",
        table(("pipeline", "ms per step", "patches/s", "ratio", "TFLOP/s", "peak memory"), rows),
        [
            f"UNet {'-'.join(map(str, CHANNELS))}, {RES_UNITS} res units, batch {BATCH} x {args.size}^3, device "
            f"{device}, medseg channels_last_3d {pipes['medseg'].precision.channels_last}, "
            f"medians of {args.runs} passes of {args.steps} steps; {gflop:.1f} GFLOP per patch forward + backward."
        ],
    )
    if cuda:
        for name, sec in med.items():
            achieved = gflop * patches / sec / 1000
            print(
                f"{name:8s} {achieved:7.1f} TFLOP/s = {100 * achieved / args.peak_tflops:5.1f} % of the "
                f"{args.peak_tflops:.0f} TFLOP/s bf16 peak"
            )


if __name__ == "__main__":
    main()
