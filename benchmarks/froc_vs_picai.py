"""medseg's FROC against picai_eval on the same probability maps and candidate maps.

    .venv/bin/python benchmarks/froc_vs_picai.py CHECKPOINT DATASET [--split test_labeled]

Predicts the dataset's cases with the checkpoint, extracts lesion candidates once (PI-CAI's dynamic
extraction, as medseg does), runs medseg.evaluation.froc and picai_eval.evaluate on them, and
prints recall at 1/8 .. 8 FP per scan and the CPM of both, plus the old rule's figures for
comparison (threshold-0.5 mask: recall and FP per scan).
"""

from __future__ import annotations

import argparse

import numpy as np
from picai_eval import evaluate as picai_evaluate
from report import add_markdown_option, table, write_markdown

from medseg.data.sources.discover import find_cases
from medseg.evaluation.froc import FP_RATES, Scan, detection_map, froc
from medseg.evaluation.matching import LesionCounts, match_lesions
from medseg.inference.model import load_model
from medseg.inference.predictor import predict_volume
from medseg.io.volumes import read_lesion_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test_labeled")
    add_markdown_option(parser)
    args = parser.parse_args()
    lm = load_model(args.checkpoint, "cpu")
    scans, counts = [], LesionCounts(scans=0)
    for case in find_cases(args.dataset, args.split):
        pred = predict_volume(lm, case.images)
        ref, _ = read_lesion_mask(case.label)
        scans.append(Scan(pred.prob, ref, 1.0))
        counts = counts + match_lesions(pred.mask, ref)
    ours = froc(scans)
    metrics = picai_evaluate(
        y_det=[detection_map(s.prob) for s in scans],
        y_true=[s.ref.astype(np.int32) for s in scans],
        num_parallel_calls=1,
    )
    print(f"{len(scans)} scans, {counts.n_ref} GT lesions")
    print("FP/scan     " + "  ".join(f"{r:>6g}" for r in FP_RATES) + "    CPM")
    print("medseg      " + "  ".join(f"{ours['recall_at'][r]:6.3f}" for r in FP_RATES) + f"  {ours['cpm']:.3f}")
    picai = [metrics.lesion_TPR_at_FPR(r) for r in FP_RATES]
    print("picai_eval  " + "  ".join(f"{v:6.3f}" for v in picai) + f"  {np.mean(picai):.3f}")
    print(f"max |difference| {max(abs(ours['recall_at'][r] - v) for r, v in zip(FP_RATES, picai)):.2g}")
    rows = [
        ("medseg", *(f"{ours['recall_at'][r]:.3f}" for r in FP_RATES), f"{ours['cpm']:.3f}"),
        ("picai_eval", *(f"{v:.3f}" for v in picai), f"{np.mean(picai):.3f}"),
    ]
    write_markdown(
        args.markdown,
        "FROC against picai_eval",
        table(("FP per scan", *(f"{r:g}" for r in FP_RATES), "CPM"), rows),
        [f"{len(scans)} scans, {counts.n_ref} GT lesions."],
    )
    s = counts.summary()
    print(
        f"the 0.5-threshold mask (overlap rule): recall {s['lesion_recall']:.3f} at {s['fp_per_scan']:.3f} FP per scan"
    )


if __name__ == "__main__":
    main()
