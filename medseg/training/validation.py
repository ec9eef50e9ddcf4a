"""Validation during training: whole preprocessed volumes, sliding window, lesion-wise metrics.

Metrics are computed on the model's grid (target spacing, RAS); ``medseg evaluate`` computes the
same metrics on the scans' own grids after ``predict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from medseg.config.plan import Plan
from medseg.config.schema import ExperimentConfig
from medseg.evaluation.matching import LesionCounts
from medseg.evaluation.tables import EvalOptions, case_tables, size_bin_names
from medseg.lesions import binarize
from medseg.nn.window import sliding_window_probs

SMALL_MM3 = 100.0  # val_lesion_recall_small: GT lesions below this volume


@dataclass
class Validation:
    """Metrics (``val_*``), per-case and per-lesion rows, and the worst cases for pictures:
    ``worst`` holds (case id, image (X, Y, Z), prediction, reference, probability of the first
    class (X, Y, Z) float16) by ascending Dice."""

    metrics: dict[str, float]
    cases: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    worst: list[tuple] = field(default_factory=list)
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)  # mm, of the model grid the volumes are on


def class_metrics(rows: list[dict], lesions: list[dict], counts: LesionCounts) -> dict[str, float]:
    """One class's validation figures from its per-case rows and per-lesion rows (NaN: no lesion
    in that size bin, or no case with both masks non-empty for HD95)."""
    summary = counts.summary()
    gt = [(lesion["volume_mm3"], lesion["matched"]) for lesion in lesions if lesion["kind"] == "gt"]
    small = [found for volume, found in gt if volume < SMALL_MM3]
    hd = [r["hd95_mm"] for r in rows if np.isfinite(r["hd95_mm"])]
    out = {
        "dice": float(np.mean([r["dice"] for r in rows])),
        "lesion_recall": summary["lesion_recall"],
        "lesion_precision": summary["lesion_precision"],
        "lesion_f1": summary["lesion_f1"],
        "fp_per_scan": summary["fp_per_scan"],
        "lesion_recall_small": float(np.mean(small)) if small else 1.0,
        "hd95_mm_median": float(np.median(hd)) if hd else float("nan"),
    }
    for name, lo, hi in size_bin_names():
        hits = [found for volume, found in gt if lo <= volume < hi]
        out[f"lesion_recall_{name}"] = float(np.mean(hits)) if hits else float("nan")
    return out


def _merge_classes(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """``val_<key>``: the mean over classes (NaN-aware; keys NaN for every class are dropped), and
    with several classes also ``val_<class>_<key>``."""
    names = list(per_class)
    metrics = {}
    for key in per_class[names[0]]:
        values = [per_class[cls][key] for cls in names if np.isfinite(per_class[cls][key])]
        if values:
            metrics[f"val_{key}"] = float(np.mean(values))
    if len(names) > 1:
        metrics.update({f"val_{cls}_{key}": v for cls in names for key, v in per_class[cls].items() if np.isfinite(v)})
    return metrics


def validate(
    model: torch.nn.Module,
    dataset: Iterable[dict],
    cfg: ExperimentConfig,
    plan: Plan,
    device: torch.device,
    keep_worst: int = 2,
) -> Validation:
    """Dice (mean over scans), pooled lesion recall/precision/F1/FP-per-scan, recall by GT lesion
    volume (``val_lesion_recall_lt10mm3`` ... ``_ge1000mm3``; ``val_lesion_recall_small`` below
    100 mm^3, 1 when there are none) and the median HD95, prefixed ``val_``. With several lesion
    classes each also comes per class (``val_<class>_dice``, ...) and the ``val_*`` figures are
    their means over the classes.

    Args:
        dataset: items ``{"image": (C_in, X, Y, Z), "label": (C, X, Y, Z), "case_id"}`` (preprocessed).
    """
    names, spacing = list(plan.preprocess.classes), plan.preprocess.spacing
    model.eval()
    voxel_mm3 = float(np.prod(spacing))
    affine = np.diag([*spacing, 1.0])
    opts = EvalOptions(cfg.eval)
    result, scored = Validation({}, spacing=tuple(float(s) for s in spacing)), []
    counts = {n: LesionCounts(scans=0) for n in names}
    rows: dict[str, list[dict]] = {n: [] for n in names}
    gt: dict[str, list[dict]] = {n: [] for n in names}
    for i, item in enumerate(dataset):
        probs = sliding_window_probs(model, item["image"][None], cfg.inference, plan.roi_size, device)[0].numpy()
        name = str(item.get("case_id", i))
        for c, cls in enumerate(names):
            pred = binarize(
                probs[c],
                cfg.inference.threshold,
                cfg.inference.min_lesion_mm3 / voxel_mm3,
                cfg.eval.connectivity,
                cfg.inference.fill_holes,
            )
            ref = np.asarray(item["label"][c]) > 0.5
            row, lesions, case_counts = case_tables(pred, ref, affine, name, opts)
            rows[cls].append(row)
            gt[cls] += lesions
            counts[cls] = counts[cls] + case_counts
            result.cases.append({"class": cls, **row} if len(names) > 1 else row)
            result.lesions += [{"class": cls, **lesion} for lesion in lesions] if len(names) > 1 else lesions
            if c == 0:
                prob = probs[0].astype(np.float16)  # half the memory; the site shows 2 decimals
                scored.append((row["dice"], name, np.asarray(item["image"][0]), pred, ref, prob))
    model.train()
    scored.sort(key=lambda t: t[0])
    result.worst = [entry[1:] for entry in scored[:keep_worst]]
    result.metrics = _merge_classes({cls: class_metrics(rows[cls], gt[cls], counts[cls]) for cls in names})
    return result
