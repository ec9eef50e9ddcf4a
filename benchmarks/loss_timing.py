"""Forward + backward time of medseg's losses against MONAI's DiceFocalLoss, same tensors, one process.

    .venv/bin/python benchmarks/loss_timing.py [--size 128] [--repeats 7]

Prints the median seconds of each loss and its ratio to MONAI's DiceFocalLoss(sigmoid=True).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.losses import DiceFocalLoss
from report import add_markdown_option, table, write_markdown

from medseg.config.schema import LossConfig
from medseg.nn.losses.registry import build_loss


def time_loss(loss, logits: torch.Tensor, target: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        x = logits.detach().clone().requires_grad_()
        start = time.perf_counter()
        loss(x, target).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # first call warms up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    add_markdown_option(parser)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, args.size, args.size, args.size)
    logits = torch.randn(shape, generator=g)
    target = (torch.rand(shape, generator=g) > 0.95).float()
    ref = DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25)
    losses = {
        name: build_loss(LossConfig(name=name, batch_dice=False, smooth_nr=1e-5, smooth_dr=1e-5))
        for name in ("focal_dice", "dice", "focal", "bce_dice")
    }
    # interleave the runs so machine noise hits all of them alike
    results: dict[str, list[float]] = {name: [] for name in ["monai_DiceFocalLoss", *losses]}
    for _ in range(3):
        results["monai_DiceFocalLoss"].append(time_loss(ref, logits, target, args.repeats))
        for name, loss in losses.items():
            results[name].append(time_loss(loss, logits, target, args.repeats))
    base = statistics.median(results["monai_DiceFocalLoss"])
    print(f"forward+backward on {tuple(shape)}, median of {3 * args.repeats} runs, {torch.get_num_threads()} threads")
    rows = []
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:22s} {med * 1000:8.1f} ms   ratio to MONAI DiceFocalLoss {med / base:5.2f}")
        rows.append((name, f"{med * 1000:.1f}", f"{med / base:.2f}"))
    write_markdown(
        args.markdown,
        "Loss speed",
        table(("loss", "ms", "ratio to MONAI DiceFocalLoss"), rows),
        [
            f"Forward + backward on {tuple(shape)}, median of {3 * args.repeats} runs, {torch.get_num_threads()} "
            "threads."
        ],
    )


if __name__ == "__main__":
    main()
