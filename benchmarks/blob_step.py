"""Training-step time of focal + Dice + blob against focal + Dice, same network and batches, one process.

    .venv/bin/python benchmarks/blob_step.py [--size 64] [--lesions 12] [--steps 4] [--runs 5]

Work: the demo's MONAI UNet (16-32-64-128), batch 4 patches of ``--size``^3 with ``--lesions``
spheres each (an instance map as the loaders cache it), AdamW; each pass is ``--steps`` full steps
(forward, loss, backward, update) through ``medseg.training.step.run_epoch``. Passes of the two
losses are interleaved, one warm-up each; prints median ms/step and the ratio blob / plain (issue
target <= 1.3).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from report import add_markdown_option, table, write_markdown

from medseg.config.schema import LossConfig, ModelConfig
from medseg.nn.losses.registry import build_loss
from medseg.nn.registry import build_model
from medseg.training.step import StepContext, lr_schedule, run_epoch


class Bar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str = "") -> None: ...


def batches(size: int, lesions: int, steps: int) -> list[dict[str, torch.Tensor]]:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"))
    out = []
    for _ in range(steps):
        inst = np.zeros((4, 1, size, size, size), np.int32)
        for b in range(4):
            for k in range(1, lesions + 1):
                c, r = rng.integers(4, size - 4, 3), rng.uniform(1.5, 5)
                inst[b, 0][((grid - c[:, None, None, None]) ** 2).sum(0) <= r * r] = k
        out.append(
            {
                "image": torch.randn(4, 1, size, size, size),
                "label": torch.as_tensor(inst > 0).float(),
                "instances": torch.as_tensor(inst),
            }
        )
    return out


def context(loss_name: str, state: dict) -> StepContext:
    net = build_model(ModelConfig())
    net.load_state_dict(state)
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule("poly", 10_000))
    return StepContext(net, build_loss(LossConfig(name=loss_name, batch_dice=False)), opt, sched, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lesions", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    add_markdown_option(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    state = build_model(ModelConfig()).state_dict()
    data = batches(args.size, args.lesions, args.steps)
    ctxs = {name: context(name, state) for name in ("focal_dice", "focal_dice_blob")}
    times: dict[str, list[float]] = {name: [] for name in ctxs}
    for run in range(args.runs + 1):
        for name in list(ctxs) if run % 2 else list(ctxs)[::-1]:
            start = time.perf_counter()
            run_epoch(ctxs[name], data, Bar(), ("bench", 0.0))
            if run:  # the first pass warms up
                times[name].append((time.perf_counter() - start) / args.steps)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"batch 4 x {args.size}^3, {args.lesions} lesions per patch, {torch.get_num_threads()} threads, median of "
        f"{args.runs} passes"
    )
    for name, value in med.items():
        print(f"{name:16s} {value * 1000:8.1f} ms/step")
    print(f"ratio focal_dice_blob / focal_dice: {med['focal_dice_blob'] / med['focal_dice']:.3f}")
    rows = [(name, f"{value * 1000:.1f}", f"{value / med['focal_dice']:.3f}") for name, value in med.items()]
    write_markdown(
        args.markdown,
        "Blob loss step time",
        table(("loss", "ms per step", "ratio"), rows),
        [
            f"Batch 4 x {args.size}^3, {args.lesions} lesions per patch, {torch.get_num_threads()} threads, "
            f"median of {args.runs} passes."
        ],
    )


if __name__ == "__main__":
    main()
