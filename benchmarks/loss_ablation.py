"""Loss ablation: the same network, data, seed and budget for each loss; evaluated on held-back cases.

    .venv/bin/python benchmarks/loss_ablation.py --out /tmp/ablation [--losses focal_dice focal_dice_blob ce_dice]
        [--config configs/ms_flair.yaml] [--cases 40 --test-cases 16 --seed 0] [--set train.max_minutes=8 ...]

Without --config: configs/demo.yaml on synthetic data (OUT/data, held-back cases = its test
split). With a real config: its dataset, held-back cases = its data.exclude_cases. Each run is
logged to MLflow in OUT/runs/mlflow.db as a child of one `loss-ablation` parent run (which gets the
table's figures as metrics); the table: Dice, lesion recall overall and by lesion volume,
precision, F1, FP per scan (matching rule: overlap, 26-connected).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from heldout import COLUMNS, evaluate_checkpoints, heldout_cases, markdown
from mlflow.tracking import MlflowClient
from report import add_markdown_option, write_markdown

from medseg.config.load import load_config
from medseg.config.schema import all_lesion_values
from medseg.data.sources.discover import find_cases
from medseg.data.synthetic import write_dataset
from medseg.demo import DEMO_CONFIG
from medseg.tracking.tracker import parent_run, resolve_uri
from medseg.training.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None, help="real-data config (held-out = data.exclude_cases)")
    parser.add_argument("--losses", nargs="+", default=["focal_dice", "focal_dice_blob", "ce_dice"])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--test-cases", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    add_markdown_option(parser)
    args = parser.parse_args()

    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    base = [f"train.output_dir={args.out / 'runs'}", "tracking.experiment=loss-ablation"]
    if args.config is None:
        data = args.out / "data"
        if not (data / "dataset.json").exists():
            write_dataset(data, args.cases, seed=args.seed, test_cases=args.test_cases)
        config, base = DEMO_CONFIG, [f"data.dataset={data}", *base]
    else:
        config = args.config
    uri = resolve_uri(None, args.out / "runs")
    parent = parent_run(uri, "loss-ablation", f"loss-ablation-{Path(config).stem}-s{args.seed}", args.out / "runs")
    rows = {}
    for name in args.losses:
        cfg = load_config(config, [*base, f"loss.name={name}", f"tracking.parent_run_id={parent}", *args.overrides])
        cases = heldout_cases(cfg) if args.config is not None else find_cases(cfg.data.dataset, "test_labeled")
        start = time.perf_counter()
        result = train(cfg, progress=False)
        minutes = (time.perf_counter() - start) / 60
        rows[name] = evaluate_checkpoints([result.best_path], cases, all_lesion_values(cfg.data)) | {
            "train_min": minutes
        }
        print(name, json.dumps(rows[name]), flush=True)
    note = f"{Path(config).name}: {len(cases)} held-back case(s), {rows[name]['gt_lesions']} lesions; " + ", ".join(
        f"{k[2:]}: {v}" for k, v in rows[name].items() if k.startswith("n_")
    )
    table = markdown(rows, extra=("train_min",))
    print(f"\n{note}\n{table}")
    write_markdown(args.markdown, f"Loss ablation, {Path(config).stem}", table, [note])
    client = MlflowClient(uri)
    for name, row in rows.items():
        for col in COLUMNS:
            if row[col] == row[col]:  # not NaN
                client.log_metric(parent, f"{name}.{col}", float(row[col]))
    client.set_terminated(parent)


if __name__ == "__main__":
    main()
