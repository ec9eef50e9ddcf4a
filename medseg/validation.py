"""Validation during training: whole preprocessed volumes, sliding window, lesion-wise metrics.

Metrics are computed on the model's grid (target spacing, RAS); ``medseg evaluate`` computes the
same metrics on the scans' own grids after ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from medseg.evaluate import EvalOptions, case_tables
from medseg.inference import sliding_window_probs
from medseg.metrics import LesionCounts, gt_lesion_hits, remove_small

SMALL_MM3 = 100.0  # val_lesion_recall_small: GT lesions below this volume


@dataclass
class Validation:
    """Metrics (``val_*``), per-case and per-lesion rows, and the worst cases for pictures:
    ``worst`` holds (case id, image (X, Y, Z), prediction, reference) by ascending Dice."""

    metrics: dict[str, float]
    cases: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    worst: list[tuple] = field(default_factory=list)


def validate(model: torch.nn.Module, dataset, cfg, spacing: Sequence[float], device: torch.device,
             keep_worst: int = 2) -> Validation:
    """Dice (mean over scans), pooled lesion recall/precision/F1/FP-per-scan and the recall of GT
    lesions under 100 mm^3 (``val_lesion_recall_small``, 1 when there are none), prefixed ``val_``.

    Args:
        dataset: items ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z), "case_id"}`` (preprocessed).
        cfg: the :class:`medseg.config.ExperimentConfig`.
    """
    model.eval()
    roi = cfg.inference.roi_size or cfg.sampling.patch_size
    voxel_mm3 = float(np.prod(spacing))
    affine = np.diag([*spacing, 1.0])
    opts = EvalOptions(cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
    result, counts, small_found, scored = Validation({}), LesionCounts(scans=0), [], []
    for i, item in enumerate(dataset):
        image = item["image"][None]
        prob = sliding_window_probs(model, image, cfg.inference, roi, device)[0, 0].numpy()
        pred = remove_small(prob >= cfg.inference.threshold, cfg.inference.min_lesion_mm3 / voxel_mm3, cfg.eval.connectivity)
        ref = np.asarray(item["label"][0]) > 0.5
        name = str(item.get("case_id", i))
        row, lesions, case_counts = case_tables(pred, ref, affine, name, opts, with_hd95=False)
        result.cases.append(row)
        result.lesions += lesions
        counts = counts + case_counts
        sizes, found = gt_lesion_hits(pred, ref, cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
        small_found += list(found[sizes * voxel_mm3 < SMALL_MM3])
        scored.append((row["dice"], name, np.asarray(item["image"][0]), pred, ref))
    model.train()
    scored.sort(key=lambda t: t[0])
    result.worst = [(name, img, pred, ref) for _, name, img, pred, ref in scored[:keep_worst]]
    summary = counts.summary()
    result.metrics = {"val_dice": float(np.mean([r["dice"] for r in result.cases])),
                      "val_lesion_recall": summary["lesion_recall"], "val_lesion_precision": summary["lesion_precision"],
                      "val_lesion_f1": summary["lesion_f1"], "val_fp_per_scan": summary["fp_per_scan"],
                      "val_lesion_recall_small": float(np.mean(small_found)) if small_found else 1.0}
    return result
