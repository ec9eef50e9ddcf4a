"""Operating point and FROC from validation probability maps.

``medseg tune CHECKPOINT`` predicts the run's validation cases (the split is recomputed from the
checkpoint's config), sweeps the probability threshold and the minimum lesion volume, picks the
point for the target (max lesion F1, or the fewest FP per scan with recall >= R), writes it into
the checkpoint (atomically) and logs the curve and the FROC to the run's MLflow record.

FROC: lesion candidates are the components of ``prob >= floor``; a candidate's confidence is its
maximum probability; as the confidence threshold moves, lesion recall is plotted against FP per
scan (overlap rule). Reported: recall at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per scan and their mean (the
LUNA16 competition performance metric, CPM).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from medseg.metrics import LesionCounts, label_lesions, match_lesions, remove_small

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_VOLUMES_MM3 = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass
class Scan:
    """Probabilities (X, Y, Z), reference mask (X, Y, Z) and voxel volume (mm^3) of one scan."""

    prob: np.ndarray
    ref: np.ndarray
    voxel_mm3: float


def sweep(scans: Sequence[Scan], thresholds: Sequence[float] = THRESHOLDS, min_volumes: Sequence[float] = MIN_VOLUMES_MM3,
          connectivity: int = 26) -> list[dict[str, float]]:
    """Pooled lesion recall/precision/F1/FP-per-scan for every (threshold, min volume) pair."""
    rows = []
    for t in thresholds:
        masks = [s.prob >= t for s in scans]
        for v in min_volumes:
            total = LesionCounts(scans=0)
            for s, m in zip(scans, masks):
                total = total + match_lesions(remove_small(m, v / s.voxel_mm3, connectivity), s.ref, connectivity=connectivity)
            rows.append({"threshold": t, "min_lesion_mm3": v, **total.summary()})
    return rows


def choose(curve: list[dict[str, float]], min_recall: float | None = None) -> dict[str, float]:
    """Max lesion F1 (ties: higher recall), or with ``min_recall`` the fewest FP per scan among
    points reaching it (ties: higher recall; none reaching it: the highest recall)."""
    if min_recall is None:
        return max(curve, key=lambda r: (r["lesion_f1"], r["lesion_recall"], -r["threshold"]))
    ok = [r for r in curve if r["lesion_recall"] >= min_recall]
    if not ok:
        return max(curve, key=lambda r: (r["lesion_recall"], -r["fp_per_scan"]))
    return min(ok, key=lambda r: (r["fp_per_scan"], -r["lesion_recall"]))


def froc(scans: Sequence[Scan], floor: float = 0.05, connectivity: int = 26) -> dict:
    """FROC points and recall at the standard FP rates (see module docstring)."""
    confidences, is_tp, gt_best = [], [], []
    for s in scans:
        labels, n = label_lesions(s.prob >= floor, connectivity)
        ref_lab, n_ref = label_lesions(s.ref, connectivity)
        conf = np.asarray(ndimage.maximum(s.prob, labels, np.arange(1, n + 1))) if n else np.zeros(0)
        best = np.zeros(n_ref)  # highest confidence of a candidate touching each GT lesion
        for c in range(1, n + 1):
            hits = np.unique(ref_lab[(labels == c) & (ref_lab > 0)])
            confidences.append(conf[c - 1])
            is_tp.append(hits.size > 0)
            for h in hits:
                best[h - 1] = max(best[h - 1], conf[c - 1])
        gt_best += list(best)
    confidences, is_tp, gt_best = np.array(confidences), np.array(is_tp, bool), np.array(gt_best)
    levels = np.unique(np.concatenate([confidences, [1.01]]))[::-1]
    fps = np.array([np.sum(~is_tp & (confidences >= t)) / len(scans) for t in levels])
    recall = np.array([np.mean(gt_best >= t) if gt_best.size else 1.0 for t in levels])
    at = {r: float(recall[fps <= r].max()) if (fps <= r).any() else 0.0 for r in FP_RATES}
    return {"fp_per_scan": fps.tolist(), "recall": recall.tolist(), "recall_at": at, "cpm": float(np.mean(list(at.values())))}


def plot_froc(result: dict, path: Path) -> None:
    """Write the FROC curve as a PNG (log FP axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    fps = np.maximum(np.array(result["fp_per_scan"]), 1e-3)
    ax.step(fps, result["recall"], where="post")
    ax.scatter(list(result["recall_at"]), list(result["recall_at"].values()), s=12)
    ax.set_xscale("log")
    ax.set_xlim(0.1, 10)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive lesions per scan")
    ax.set_ylabel("lesion recall")
    ax.set_title(f"FROC (CPM {result['cpm']:.3f})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_curve(curve: list[dict[str, float]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)


def validation_scans(ckpt: dict, lm) -> list[Scan]:
    """Predict the validation cases of the checkpoint's run on their own grids."""
    from medseg.config import ExperimentConfig
    from medseg.data import split_cases
    from medseg.inference import predict_volume
    from medseg.io import read_lesion_mask
    from medseg.sources import from_config

    cfg = ExperimentConfig.model_validate(ckpt["config"])
    cases = from_config(cfg.data).require_clean()
    _, val_cases = split_cases(cases, cfg.data.val_fraction, cfg.train.seed, cfg.data.val_cases)
    scans = []
    for case in val_cases:
        pred = predict_volume(lm, case.images)
        ref, _ = read_lesion_mask(case.label, cfg.data.lesion_labels)
        scans.append(Scan(pred.prob, ref, float(abs(np.linalg.det(pred.affine[:3, :3])))))
    return scans


def run_tune(checkpoint: Path, min_recall: float | None = None, device: str = "auto") -> dict:
    """Tune and store the operating point of ``checkpoint`` (see module docstring).

    Returns:
        {"chosen": row, "froc": froc result, "curve_csv": path, "froc_png": path}.
    """
    from medseg.checkpoint import load_checkpoint, save_checkpoint
    from medseg.inference import load_model

    ckpt = load_checkpoint(checkpoint)
    lm = load_model(checkpoint, device)
    scans = validation_scans(ckpt, lm)
    curve = sweep(scans, connectivity=lm.connectivity)
    chosen = choose(curve, min_recall)
    result = froc(scans, connectivity=lm.connectivity)
    out = Path(checkpoint).parent
    curve_csv, froc_png = out / "operating_curve.csv", out / "froc.png"
    write_curve(curve, curve_csv)
    plot_froc(result, froc_png)
    ckpt["operating_point"] = {"threshold": chosen["threshold"], "min_lesion_mm3": chosen["min_lesion_mm3"],
                               "target": "max_f1" if min_recall is None else f"recall>={min_recall}"}
    save_checkpoint({k: v for k, v in ckpt.items() if k != "format"}, Path(checkpoint))
    _log(ckpt, Path(checkpoint), chosen, result, (curve_csv, froc_png))
    return {"chosen": chosen, "froc": result, "curve_csv": curve_csv, "froc_png": froc_png}


def _log(ckpt: dict, checkpoint: Path, chosen: dict, result: dict, files: Sequence[Path]) -> None:
    """Record the tuned point in the checkpoint's MLflow run, when it has one."""
    run_id, uri = ckpt.get("mlflow_run_id"), ckpt.get("tracking_uri")
    if not run_id or not uri:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    metrics = {"tuned_threshold": chosen["threshold"], "tuned_min_lesion_mm3": chosen["min_lesion_mm3"],
               "tuned_lesion_f1": chosen["lesion_f1"], "tuned_lesion_recall": chosen["lesion_recall"],
               "tuned_fp_per_scan": chosen["fp_per_scan"], "froc_cpm": result["cpm"],
               **{f"froc_recall_at_{r:g}fp": v for r, v in result["recall_at"].items()}}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for path in files:
        client.log_artifact(run_id, str(path), "tuning")
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medseg-tuned-") as tmp:  # the pyfunc model's checkpoint is model/artifacts/best.pt
        shutil.copy(checkpoint, Path(tmp) / "best.pt")
        client.log_artifact(run_id, str(Path(tmp) / "best.pt"), "model/artifacts")
