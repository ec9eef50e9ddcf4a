"""Validation during training: whole preprocessed volumes, sliding window, lesion-wise metrics.

Metrics are computed on the model's grid (target spacing, RAS); ``medseg evaluate`` computes the
same metrics on the scans' own grids after ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from medseg.config.schema import lesion_classes
from medseg.evaluation.matching import LesionCounts, gt_lesion_hits
from medseg.evaluation.tables import EvalOptions, case_tables
from medseg.lesions import remove_small
from medseg.nn.window import sliding_window_probs

SMALL_MM3 = 100.0  # val_lesion_recall_small: GT lesions below this volume


@dataclass
class Validation:
    """Metrics (``val_*``), per-case and per-lesion rows, and the worst cases for pictures:
    ``worst`` holds (case id, image (X, Y, Z), prediction, reference) by ascending Dice."""

    metrics: dict[str, float]
    cases: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    worst: list[tuple] = field(default_factory=list)


def _class_metrics(counts: LesionCounts, dices: list[float], small_found: list[bool]) -> dict[str, float]:
    summary = counts.summary()
    return {"dice": float(np.mean(dices)), "lesion_recall": summary["lesion_recall"],
            "lesion_precision": summary["lesion_precision"], "lesion_f1": summary["lesion_f1"],
            "fp_per_scan": summary["fp_per_scan"],
            "lesion_recall_small": float(np.mean(small_found)) if small_found else 1.0}


def validate(model: torch.nn.Module, dataset, cfg, spacing: Sequence[float], device: torch.device,
             keep_worst: int = 2) -> Validation:
    """Dice (mean over scans), pooled lesion recall/precision/F1/FP-per-scan and the recall of GT
    lesions under 100 mm^3 (``val_lesion_recall_small``, 1 when there are none), prefixed ``val_``.
    With several lesion classes each also comes per class (``val_<class>_dice``, ...) and the
    ``val_*`` figures are their means over the classes.

    Args:
        dataset: items ``{"image": (C_in, X, Y, Z), "label": (C, X, Y, Z), "case_id"}`` (preprocessed).
        cfg: the :class:`medseg.config.ExperimentConfig`.
    """
    names = [name for name, _ in lesion_classes(cfg.data)]
    model.eval()
    roi = cfg.inference.roi_size or cfg.sampling.patch_size
    voxel_mm3 = float(np.prod(spacing))
    affine = np.diag([*spacing, 1.0])
    opts = EvalOptions(cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
    result, scored = Validation({}), []
    counts = {n: LesionCounts(scans=0) for n in names}
    dices: dict[str, list[float]] = {n: [] for n in names}
    small: dict[str, list[bool]] = {n: [] for n in names}
    for i, item in enumerate(dataset):
        probs = sliding_window_probs(model, item["image"][None], cfg.inference, roi, device)[0].numpy()
        name = str(item.get("case_id", i))
        for c, cls in enumerate(names):
            pred = remove_small(probs[c] >= cfg.inference.threshold, cfg.inference.min_lesion_mm3 / voxel_mm3, cfg.eval.connectivity)
            ref = np.asarray(item["label"][c]) > 0.5
            row, lesions, case_counts = case_tables(pred, ref, affine, name, opts, with_hd95=False)
            if len(names) > 1:
                row = {"class": cls, **row}
                lesions = [{"class": cls, **lesion} for lesion in lesions]
            result.cases.append(row)
            result.lesions += lesions
            counts[cls] = counts[cls] + case_counts
            dices[cls].append(row["dice"])
            sizes, found = gt_lesion_hits(pred, ref, cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
            small[cls] += list(found[sizes * voxel_mm3 < SMALL_MM3])
            if c == 0:
                scored.append((row["dice"], name, np.asarray(item["image"][0]), pred, ref))
    model.train()
    scored.sort(key=lambda t: t[0])
    result.worst = [(name, img, pred, ref) for _, name, img, pred, ref in scored[:keep_worst]]
    per_class = {cls: _class_metrics(counts[cls], dices[cls], small[cls]) for cls in names}
    result.metrics = {f"val_{key}": float(np.mean([per_class[cls][key] for cls in names])) for key in per_class[names[0]]}
    if len(names) > 1:
        result.metrics.update({f"val_{cls}_{key}": value for cls in names for key, value in per_class[cls].items()})
    return result
