"""Where the CPU time, the system time and the minor page faults of CPU training come from, per
stage of a training step and per transform of the loader, with each allocator setting.

    .venv/bin/python benchmarks/cpu_profile.py [--config medseg/configs/demo.yaml] [--set KEY=VALUE ...]
        [--data DIR] [--cases 8] [--warmup 3] [--steps 4] [--draws 16]
        [--variant NAME=VAR=VALUE[,VAR=VALUE...] ...]

Each variant runs in a fresh process (the malloc settings and ``OMP_*`` variables cannot be
undone inside one), with ``MEDSEG_MALLOC=default`` (glibc's defaults) and ``MEDSEG_MALLOC=tuned``
(:func:`medseg.runtime.allocator.tune_allocator`, applied as the CLI applies it at start-up)
unless ``--variant`` names others, e.g. ``--variant passive=MEDSEG_MALLOC=tuned,OMP_WAIT_POLICY=passive``.
Every process builds what ``medseg train`` builds from the config: ``prepare`` (plan, checks),
``run_split``, ``load_datasets`` (the cache, not measured) and ``Trainer.setup`` (loader, network,
loss, AdamW, the LambdaLR schedule), on the CPU and without tracking; ``--config`` defaults to the demo
config on ``--cases`` synthetic cases (``medseg.data.synthetic.write_dataset``, 96x96x64 at
1.5x1.5x2 mm, written once to ``--data`` or a temporary folder). For ``configs/brats_wt_flair.yaml``
set ``MEDSEG_REAL_DATA``.

Measured with ``resource.getrusage(RUSAGE_SELF)`` deltas (CPU user and system seconds of all
threads of the process, minor page faults):

1. Loader, per transform: ``--draws`` volumes taken from the cache and passed through the random
   transforms one at a time as ``CacheDataset`` does (the cache copy when ``copy_cache`` is on,
   then ``Compose`` from the first random transform, items mapped), then the collation of
   ``train.batch_size`` volumes; mean per volume (a transform that fires with probability 0.2
   has a median of 0).
2. Training step, per stage, as ``medseg.training.step.train_step`` runs it: draw (``next`` on the
   training loader: cache, augmentation, collation), forward (zero_grad, device copy, the
   network), loss (and reading its value), backward, optimizer (``optimizer.step``,
   ``scheduler.step``). ``--warmup`` steps first (the heap grows to its working size in the first
   2-3 steps), then the mean of ``--steps`` steps. Also: the CPU seconds of each thread over the
   measured steps (``/proc/self/task``), which shows whether more threads compete than there are
   cores, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from monai.data.utils import list_data_collate
from monai.transforms import RandomizableTrait, Transform, apply_transform
from monai.utils import set_determinism
from report import add_markdown_option, table, write_markdown
from rss import rss_mb

from medseg.config.load import load_config
from medseg.data.split import run_split
from medseg.data.synthetic import write_dataset
from medseg.runtime.allocator import tune_allocator
from medseg.runtime.device import plain_tensor
from medseg.tracking.tracker import NullTracker
from medseg.training.prepare import load_datasets, prepare
from medseg.training.state import RunContext
from medseg.training.step import StepContext
from medseg.training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "medseg" / "configs" / "demo.yaml"
DEFAULT_VARIANTS = ("default=MEDSEG_MALLOC=default", "tuned=MEDSEG_MALLOC=tuned")
STAGES = ("draw", "forward", "loss", "backward", "optimizer")


@dataclass(frozen=True)
class Usage:
    """CPU user and system seconds, minor page faults and wall seconds (a reading, or the
    difference of two)."""

    user: float = 0.0
    sys: float = 0.0
    faults: int = 0
    wall: float = 0.0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user - other.user, self.sys - other.sys, self.faults - other.faults, self.wall - other.wall)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.user + other.user, self.sys + other.sys, self.faults + other.faults, self.wall + other.wall)

    def scaled(self, factor: float) -> Usage:
        return Usage(self.user * factor, self.sys * factor, round(self.faults * factor), self.wall * factor)


def usage(who: int = resource.RUSAGE_SELF) -> Usage:
    """The process's (``RUSAGE_SELF``, all threads) or the calling thread's (``RUSAGE_THREAD``) usage
    so far, with ``time.perf_counter`` as the wall clock."""
    r = resource.getrusage(who)
    return Usage(r.ru_utime, r.ru_stime, r.ru_minflt, time.perf_counter())


def ratio_text(a: float, b: float) -> str:
    """``a / b`` to 3 decimals, or ``n/a`` when ``b`` is 0 (no system time or no faults to compare with)."""
    return f"{a / b:.3f}" if b else "n/a"


class Recorder:
    """Sums of :class:`Usage` per named stage; ``with rec.stage(name):`` adds the block's usage."""

    def __init__(self) -> None:
        self.sums: dict[str, Usage] = {}
        self.count = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = usage()
        yield
        self.sums[name] = self.sums.get(name, Usage()) + (usage() - start)

    def means(self) -> dict[str, dict]:
        """Mean per counted item (step or volume) of every stage, as plain dicts."""
        return {name: asdict(u.scaled(1 / max(self.count, 1))) for name, u in self.sums.items()}


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of each thread of this process, ``main`` or ``name/tid``
    -> seconds (``/proc/self/task/*/stat``; empty without /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        label = "main" if int(task.name) == os.getpid() else f"{name}/{task.name}"
        out[label] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def build(args: argparse.Namespace) -> tuple:
    """What ``medseg train`` builds from the config, on the CPU: ``prepare``, ``run_split``,
    ``load_datasets`` and ``Trainer.setup`` (run folder in a temporary directory, no tracking);
    returns (config, training dataset, training loader, step context)."""
    cfg = load_config(args.config, [*args.overrides, "train.device=cpu", "tracking.enabled=false"])
    prep = prepare(cfg)
    train_cases, val_cases = run_split(prep.cases, prep.cfg)
    set_determinism(prep.cfg.train.seed)
    datasets = load_datasets(prep.cfg, train_cases, val_cases, prep.plan)
    run = RunContext(Path(tempfile.mkdtemp(prefix="medseg-cpu-profile-run-")), NullTracker(), progress=False)
    trainer = Trainer(prep, datasets, torch.device("cpu"), run)
    trainer.setup()
    return prep.cfg, datasets[0], trainer.loader, trainer.ctx


def profile_transforms(train_ds, batch_size: int, draws: int) -> Recorder:
    """Part 1: each random transform of ``train_ds`` (a CacheDataset) on ``draws`` cached volumes,
    in the order and with the item mapping ``CacheDataset`` uses, then the collation of the
    volumes in groups of ``batch_size``."""
    compose = train_ds.transform
    first = compose.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    steps = compose.transforms[first:]
    rec, drawn = Recorder(), []
    for i in range(draws):
        # the cached, preprocessed volume (CacheDataset has no public accessor that skips the random transforms)
        data = train_ds._cache[i % len(train_ds._cache)]
        if train_ds.copy_cache:
            with rec.stage("cache copy (deepcopy)"):
                data = deepcopy(data)
        for k, t in enumerate(steps):
            with rec.stage(f"{k + 1:2d} {type(t).__name__}"):
                data = apply_transform(t, data, map_items=compose.map_items)
        drawn.append(data)
        if len(drawn) == batch_size:
            with rec.stage("collate (list_data_collate)"):
                list_data_collate(drawn)
            drawn = []
    rec.count = draws
    return rec


def staged_step(ctx: StepContext, batch: dict, rec: Recorder) -> float:
    """One ``train_step`` (no guard) split into its stages; returns the loss value."""
    with rec.stage("forward"):
        x = plain_tensor(batch["image"]).to(ctx.device)
        y = plain_tensor(batch["label"]).to(ctx.device)
        ctx.optimizer.zero_grad(set_to_none=True)
        dtype = ctx.precision.dtype
        with torch.autocast(ctx.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = ctx.model(x)
    with rec.stage("loss"):
        extra = (plain_tensor(batch["instances"]),) if getattr(ctx.loss_fn, "needs_instances", False) else ()
        loss = ctx.loss_fn(logits, y, *extra)
        value = float(loss.detach())
    with rec.stage("backward"):
        loss.backward()
    with rec.stage("optimizer"):
        if ctx.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
        ctx.optimizer.step()
        ctx.scheduler.step()
    return value


def profile_steps(ctx: StepContext, loader, warmup: int, steps: int) -> tuple[Recorder, dict[str, float]]:
    """Part 2: ``warmup`` steps, then ``steps`` measured ones; (stage sums, CPU s per thread over them)."""
    ctx.model.train()
    batches = _endless(loader)
    for _ in range(warmup):
        staged_step(ctx, next(batches), Recorder())
    rec, before = Recorder(), thread_cpu()
    for _ in range(steps):
        with rec.stage("draw"):
            batch = next(batches)
        staged_step(ctx, batch, rec)
    after = thread_cpu()
    rec.count = steps
    return rec, {name: after[name] - before.get(name, 0.0) for name in after}


def _endless(loader) -> Iterator[dict]:
    while True:
        yield from loader


def child(args: argparse.Namespace) -> None:
    """Hidden mode: one variant in this fresh process; prints its measurements as one JSON line."""
    applied = tune_allocator()  # as medseg's CLI does at start-up ($MEDSEG_MALLOC chooses)
    cfg, train_ds, loader, ctx = build(args)
    setup_mb = rss_mb()
    transforms = profile_transforms(train_ds, cfg.train.batch_size, args.draws)
    steps, threads = profile_steps(ctx, loader, args.warmup, args.steps)
    batch = next(iter(loader))
    result = {
        "applied": applied,
        "transforms": transforms.means(),
        "steps": steps.means(),
        "threads": threads,
        "setup_mb": setup_mb,
        "rss_mb": rss_mb(),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shape": list(batch["image"].shape),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "workers": cfg.data.num_workers,
        "thread_loader": cfg.data.thread_loader,
        "preset": cfg.augment.preset,
    }
    print(json.dumps(result))


def run_variant(spec: str, args: argparse.Namespace) -> dict:
    """Run the child for ``NAME=VAR=VALUE[,VAR=VALUE]`` with those variables set; its JSON."""
    name, _, assignments = spec.partition("=")
    env = dict(os.environ)
    env.update(dict(a.split("=", 1) for a in assignments.split(",") if a))
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", "--config", str(args.config)]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--draws", str(args.draws)]
    cmd += [f"--set={o}" for o in args.overrides]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{res.stderr[-3000:]}")
    print(f"variant {name} ({assignments}) done in {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def print_table(title: str, names: list[str], results: dict[str, dict], part: str) -> list[tuple]:
    """One row per stage and a total: user s, sys s and minor faults of every variant; the rows as text cells."""
    print(f"\n{title}")
    head = f"{'stage':32s}" + "".join(f" | {n[:9]:>9s} user s   sys s    faults" for n in results)
    print(head)
    rows = []
    for stage in [*names, "total"]:
        cells = []
        for r in results.values():
            means = r[part]
            u = (
                Usage(**means[stage])
                if stage != "total"
                else sum((Usage(**means[s]) for s in names if s in means), Usage())
            )
            cells += [f"{u.user:.3f}", f"{u.sys:.3f}", f"{u.faults:d}"]
        rows.append((stage, *cells))
        print(f"{stage:32s}" + "".join(f" | {a:>16s} {b:>7s} {c:>9s}" for a, b, c in zip(*[iter(cells)] * 3)))
    return rows


def print_summary(results: dict[str, dict], steps: int) -> list[tuple]:
    """Per variant: a step's totals, system time as a share of user time, memory, busy threads."""
    print(f"\nper training step (mean of {steps} steps), memory and the threads that used the CPU during them")
    print(
        f"{'variant':10s} {'user s':>8s} {'sys s':>7s} {'sys/user':>8s} {'faults':>9s} {'wall s':>7s} "
        f"{'peak RSS MB':>11s}  threads"
    )
    rows, base = [], None
    for name, r in results.items():
        step = sum((Usage(**r["steps"][s]) for s in STAGES), Usage())
        base = base or step
        total = sum(r["threads"].values()) or 1.0
        busy = sorted(((s, t) for t, s in r["threads"].items() if s / total >= 0.02), reverse=True)
        threads = ", ".join(f"{t} {s / steps:.2f} s" for s, t in busy)
        share = step.sys / max(step.user, 1e-9)
        print(
            f"{name:10s} {step.user:8.2f} {step.sys:7.2f} {100 * share:7.1f}% {step.faults:9d} {step.wall:7.2f} "
            f"{r['peak_mb']:11.0f}  {threads}"
        )
        rows.append(
            (
                name,
                f"{step.user:.2f}",
                f"{step.sys:.2f}",
                f"{100 * share:.1f} %",
                step.faults,
                f"{step.wall:.2f}",
                f"{r['peak_mb']:.0f}",
            )
        )
    for name, r in list(results.items())[1:]:
        step = sum((Usage(**r["steps"][s]) for s in STAGES), Usage())
        print(
            f"ratio {name} / {next(iter(results))}: user {ratio_text(step.user, base.user)}, sys "
            f"{ratio_text(step.sys, base.sys)}, faults {ratio_text(step.faults, base.faults)}, user + sys "
            f"{ratio_text(step.user + step.sys, base.user + base.sys)}, wall {ratio_text(step.wall, base.wall)}"
        )
    return rows


def synthetic_data(args: argparse.Namespace) -> None:
    """The demo config without ``--data``: write ``--cases`` synthetic cases to a temporary folder."""
    if args.data is None and Path(args.config).resolve() == CONFIG:
        args.data = Path(tempfile.mkdtemp(prefix="medseg-cpu-profile-")) / "data"
    if args.data is not None:
        if not (args.data / "dataset.json").is_file():
            write_dataset(args.data, args.cases, seed=0, test_cases=0, shape=(96, 96, 64), spacing=(1.5, 1.5, 2.0))
        args.overrides = [f"data.dataset={args.data}", *args.overrides]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (synthetic cases written there)")
    parser.add_argument("--cases", type=int, default=8, help="synthetic cases for the demo config")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before the measured ones")
    parser.add_argument("--steps", type=int, default=4, help="measured training steps")
    parser.add_argument("--draws", type=int, default=16, help="volumes through the loader's transforms")
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME=VAR=VALUE[,VAR=VALUE]: environment of one run"
    )
    add_markdown_option(parser)
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def print_header(args: argparse.Namespace, results: dict[str, dict]) -> None:
    """The config, the batch, the loader and thread settings, and what each variant applied."""
    first = next(iter(results.values()))
    print(
        f"\nconfig {args.config} {' '.join(args.overrides)}\nbatch {first['shape']}, augment.preset "
        f"{first['preset']}, data.num_workers {first['workers']}, thread_loader {first['thread_loader']}, torch "
        f"threads {first['torch_threads']} (interop {first['interop_threads']}), CPU cores "
        f"{len(os.sched_getaffinity(0))}, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    for name, r in results.items():
        print(f"variant {name}: malloc settings applied {r['applied'] or 'none (glibc defaults)'}")


def main() -> None:
    warnings.filterwarnings("ignore")
    args = parse_args()
    if args._child:
        child(args)
        return
    synthetic_data(args)
    variants = args.variant or list(DEFAULT_VARIANTS)
    results = {spec.partition("=")[0]: run_variant(spec, args) for spec in variants}
    first = next(iter(results.values()))
    print_header(args, results)
    print_table(
        f"loader, per transform (mean per volume of {args.draws} draws)",
        list(first["transforms"]),
        results,
        "transforms",
    )
    rows = print_table(
        f"training step, per stage (mean of {args.steps} steps after {args.warmup} warm-up steps)",
        list(STAGES),
        results,
        "steps",
    )
    summary = print_summary(results, args.steps)
    write_markdown(
        args.markdown,
        "CPU time, system time and page faults per training step",
        table(
            ("variant", "user s/step", "sys s/step", "sys/user", "faults/step", "wall s/step", "peak RSS MB"), summary
        )
        + "\n\n"
        + table(("stage", *[f"{n} {c}" for n in results for c in ("user s", "sys s", "faults")]), rows),
        [f"batch {first['shape']}, mean of {args.steps} steps after {args.warmup} warm-up steps."],
    )


if __name__ == "__main__":
    main()
