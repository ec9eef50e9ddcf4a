"""Loss ablation: the same network, data, seed and budget for each loss; evaluated on held-back cases.

    .venv/bin/python benchmarks/loss_ablation.py --out /tmp/ablation [--losses dice focal bce_dice focal_dice]
        [--cases 40 --test-cases 16 --seed 0] [--set train.epochs=40 ...]

Trains with configs/demo.yaml (each run logged to MLflow in OUT/runs/mlflow.db as a child of one
`loss-ablation` parent run, which gets the table's figures as metrics), predicts the
held-back synthetic cases on their own grids, and prints a Markdown table: Dice, lesion recall
overall, for small lesions (< 100 mm^3) and for 100-1000 mm^3, precision and FP per scan.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
from mlflow.tracking import MlflowClient
import numpy as np

from medseg.config.load import load_config
from medseg.demo import DEMO_CONFIG
from medseg.inference.model import load_model
from medseg.inference.predictor import predict_volume
from medseg.data.sources.discover import find_cases
from medseg.evaluation.matching import LesionCounts, gt_lesion_hits, match_lesions
from medseg.evaluation.metrics import dice
from medseg.data.synthetic import write_dataset
from medseg.tracking.tracker import parent_run, resolve_uri
from medseg.training.run import train

BINS = {"small (<100 mm3)": (0, 100), "medium (100-1000 mm3)": (100, 1000), "large (>1000 mm3)": (1000, np.inf)}


def evaluate_run(best: Path, data: Path) -> dict[str, float]:
    """Held-back metrics of one checkpoint (matching rule: overlap, 26-connectivity)."""
    lm = load_model(best, "cpu")
    counts, dices, sizes, found = LesionCounts(scans=0), [], [], []
    for case in find_cases(data, "test_labeled"):
        pred = predict_volume(lm, case.image)
        ref_img = nib.load(str(case.label))
        ref = np.asanyarray(ref_img.dataobj) > 0
        voxel = abs(np.linalg.det(ref_img.affine[:3, :3]))
        dices.append(dice(pred.mask, ref))
        counts = counts + match_lesions(pred.mask, ref)
        s, f = gt_lesion_hits(pred.mask, ref)
        sizes += list(s * voxel)
        found += list(f)
    sizes, found = np.array(sizes), np.array(found, bool)
    row = {"dice": float(np.mean(dices)), **counts.summary(), "gt_lesions": counts.n_ref}
    for name, (lo, hi) in BINS.items():
        sel = (sizes >= lo) & (sizes < hi)
        row[f"recall {name}"] = float(found[sel].mean()) if sel.any() else float("nan")
        row[f"n {name}"] = int(sel.sum())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--losses", nargs="+", default=["dice", "focal", "bce_dice", "focal_dice"])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--test-cases", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    data = args.out / "data"
    if not (data / "dataset.json").exists():
        write_dataset(data, args.cases, seed=args.seed, test_cases=args.test_cases)
    rows = {}
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    uri = resolve_uri(None, args.out / "runs")
    parent = parent_run(uri, "loss-ablation", f"loss-ablation-s{args.seed}", args.out / "runs")  # one parent, a child run per loss
    for name in args.losses:
        cfg = load_config(DEMO_CONFIG, [f"data.dataset={data}", f"train.output_dir={args.out / 'runs'}",
                                        f"loss.name={name}", "tracking.experiment=loss-ablation",
                                        f"tracking.parent_run_id={parent}", *args.overrides])
        result = train(cfg, progress=False)
        rows[name] = evaluate_run(result.best_path, data) | {"run_id": result.run_id}
        print(name, json.dumps(rows[name]), flush=True)
    cols = ["dice", "lesion_recall", *(f"recall {b}" for b in BINS), "lesion_precision", "fp_per_scan"]
    print("\n| loss | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    client = MlflowClient(uri)
    for name, row in rows.items():
        for col in cols:
            client.log_metric(parent, f"{name}.{col.replace(' ', '_').replace('(', '').replace(')', '').replace('<', 'lt').replace('>', 'gt')}", float(row[col]))
    client.set_terminated(parent)
    first = next(iter(rows.values()))
    print("\nheld-back lesions per bin: " + ", ".join(f"{b}: {first[f'n {b}']}" for b in BINS)
          + f"; total {first['gt_lesions']}; matching rule: overlap")


if __name__ == "__main__":
    main()
