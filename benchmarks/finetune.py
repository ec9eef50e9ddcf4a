"""Fine-tuning's value on the real data: the 4-channel BraTS config started from a FLAIR model
against the same config from scratch, at the same training budget, scored on the held-out cases.

    MEDSEG_REAL_DATA=../shared/data/real-lesions .venv/bin/python benchmarks/finetune.py --out /tmp/ft \\
        [--minutes 10 | --epochs 40] [--source-minutes 30 | --source-epochs 100] [--source runs/.../best.pt] \\
        [--freeze-epochs 10] [--markdown FILE]

Rows (every model trained on configs/*.yaml's split, fixed before any training: BraTS2021_00019,
_00024 and _00031 held out, BraTS2021_00014 validates, six cases train; same seed, so the same
batches):
  source       configs/brats_wt_flair.yaml (FLAIR only) for --source-minutes (default --minutes), or
               the checkpoint given with --source
  scratch      configs/brats_wt.yaml (FLAIR, T1, T1ce, T2) from a random initialisation, --minutes
  fine-tuned   configs/brats_wt.yaml with train.init_from = the source model, --minutes: FLAIR's
               first-layer kernels copied by name, T1/T1ce/T2 starting at zero
  fine-tuned, frozen encoder  (with --freeze-epochs N) the same, encoder fixed for the first N epochs

``--epochs`` trains every 4-channel row that many epochs instead of a time budget (the same work
per row on a machine shared with other jobs). Rows are scored as ``medseg evaluate`` scores them
(overlap matching, 26-connected lesions) and under the BraTS 2023 glioma protocol, at each config's
operating point. Rows already in OUT/finetune.json are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from heldout import BRATS_COLUMNS, evaluate_checkpoints, heldout_cases
from report import add_markdown_option, table, write_markdown

from medseg.config.load import load_config
from medseg.config.schema import all_lesion_values
from medseg.nn.checkpoint import load_checkpoint
from medseg.training.run import train

ROOT = Path(__file__).resolve().parents[1]
SOURCE_CONFIG = ROOT / "configs/brats_wt_flair.yaml"
TARGET_CONFIG = ROOT / "configs/brats_wt.yaml"
SHOWN = ["dice", "lesion_recall", "lesion_precision", "fp_per_scan", *BRATS_COLUMNS]


def budget(minutes: float | None, epochs: int | None) -> list[str]:
    """Overrides for a time budget or a fixed number of epochs."""
    if epochs is not None:
        return [f"train.epochs={epochs}", "train.max_minutes=null"]
    return [f"train.max_minutes={minutes}"]


def run_row(config: Path, out: Path, overrides: list[str]) -> dict:
    """Train ``config`` with ``overrides`` into ``out`` and score its best.pt on the held-out cases."""
    cfg = load_config(
        config,
        [
            f"train.output_dir={out}",
            f"tracking.uri=sqlite:///{out.parent / 'mlflow.db'}",
            "tracking.experiment=finetune-benchmark",
            *overrides,
        ],
    )
    start = time.perf_counter()
    result = train(cfg, progress=False)
    minutes = (time.perf_counter() - start) / 60
    return score(result.best_path, config) | {"train_min": minutes, "checkpoint": str(result.best_path)}


def score(checkpoint: Path, config: Path) -> dict:
    """Held-out figures of a checkpoint, its epoch and the epochs its run trained (its last.pt's)."""
    cfg = load_config(config)
    last = checkpoint.parent / "last.pt"
    epochs = load_checkpoint(last).epoch if last.is_file() else float("nan")
    row = evaluate_checkpoints([checkpoint], heldout_cases(cfg), all_lesion_values(cfg.data), brats=True)
    return row | {"best_epoch": load_checkpoint(checkpoint).epoch, "epochs": epochs}


def rows_to_run(args: argparse.Namespace, source: Path | None) -> dict[str, tuple[Path, list[str]]]:
    """Row name -> (config, overrides) of the 4-channel rows."""
    init = [f"train.init_from={source}"] if source is not None else []
    rows = {
        "4 channels from scratch": (TARGET_CONFIG, budget(args.minutes, args.epochs)),
        "4 channels fine-tuned from FLAIR": (TARGET_CONFIG, [*budget(args.minutes, args.epochs), *init]),
    }
    if args.freeze_epochs:
        rows["4 channels fine-tuned, encoder frozen"] = (
            TARGET_CONFIG,
            [*budget(args.minutes, args.epochs), *init, f"train.freeze_encoder_epochs={args.freeze_epochs}"],
        )
    return rows


def source_row(args: argparse.Namespace, results: dict) -> Path:
    """The FLAIR model: --source, the one already in OUT, or trained now; its row in ``results``."""
    name = "FLAIR source"
    if args.source is not None:
        results.setdefault(name, score(args.source, SOURCE_CONFIG) | {"train_min": float("nan")})
        return args.source.resolve()
    if name not in results:
        minutes = args.source_minutes or args.minutes
        results[name] = run_row(SOURCE_CONFIG, args.out / "source", budget(minutes, args.source_epochs))
    return Path(results[name]["checkpoint"])


def render(results: dict) -> str:
    header = ["run", *SHOWN, "best epoch", "epochs", "train min"]
    rows = [
        [name, *(f"{r.get(c, float('nan')):.3f}" for c in SHOWN), r["best_epoch"], r["epochs"], f"{r['train_min']:.1f}"]
        for name, r in results.items()
    ]
    return table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0, help="budget of each 4-channel row")
    parser.add_argument("--epochs", type=int, default=None, help="train each 4-channel row this many epochs instead")
    parser.add_argument("--source-minutes", type=float, default=None, help="the FLAIR model's budget (--minutes)")
    parser.add_argument("--source-epochs", type=int, default=None, help="train the FLAIR model this many epochs")
    parser.add_argument("--source", type=Path, default=None, help="a FLAIR checkpoint to start from (no training)")
    parser.add_argument("--freeze-epochs", type=int, default=0, help="also a row with the encoder frozen N epochs")
    add_markdown_option(parser)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "finetune.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    source = source_row(args, results)
    store.write_text(json.dumps(results, indent=2))
    for name, (config, overrides) in rows_to_run(args, source).items():
        if name not in results:
            results[name] = run_row(config, args.out / name.replace(" ", "_").replace(",", ""), overrides)
            store.write_text(json.dumps(results, indent=2))
    text = render(results)
    print(text)
    notes = [
        f"Held-out: {', '.join(load_config(TARGET_CONFIG).data.exclude_cases)}; "
        + (f"{args.epochs} epochs per 4-channel row" if args.epochs else f"{args.minutes:g} min per 4-channel row")
        + "; train min = wall-clock of the whole run (data loading included)."
    ]
    write_markdown(args.markdown, "Fine-tuning from a FLAIR model (BraTS whole tumour)", text, notes)


if __name__ == "__main__":
    main()
