"""Validation during training: whole preprocessed volumes, sliding window, lesion-wise metrics.

Metrics are computed on the model's grid (target spacing, RAS); ``medseg evaluate`` computes the
same metrics on the scans' own grids after ``predict``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medseg.inference import sliding_window_probs
from medseg.metrics import LesionCounts, dice, gt_lesion_hits, match_lesions, remove_small

SMALL_MM3 = 100.0  # val_lesion_recall_small: GT lesions below this volume


def validate(model: torch.nn.Module, dataset, cfg, spacing: Sequence[float], device: torch.device) -> dict[str, float]:
    """Dice (mean over scans), pooled lesion recall/precision/F1/FP-per-scan and the recall of GT
    lesions under 100 mm^3 (``val_lesion_recall_small``, 1 when there are none), prefixed ``val_``.

    Args:
        dataset: items ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z)}`` (preprocessed).
        cfg: the :class:`medseg.config.ExperimentConfig`.
    """
    model.eval()
    roi = cfg.inference.roi_size or cfg.sampling.patch_size
    min_voxels = cfg.inference.min_lesion_mm3 / float(np.prod(spacing))
    counts, dices, small_found = LesionCounts(scans=0), [], []
    voxel_mm3 = float(np.prod(spacing))
    for item in dataset:
        prob = sliding_window_probs(model, item["image"][None], cfg.inference, roi, device)[0, 0].numpy()
        pred = remove_small(prob >= cfg.inference.threshold, min_voxels, cfg.eval.connectivity)
        ref = np.asarray(item["label"][0]) > 0.5
        dices.append(dice(pred, ref))
        counts = counts + match_lesions(pred, ref, cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
        sizes, found = gt_lesion_hits(pred, ref, cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
        small_found += list(found[sizes * voxel_mm3 < SMALL_MM3])
    model.train()
    summary = counts.summary()
    return {"val_dice": float(np.mean(dices)), "val_lesion_recall": summary["lesion_recall"],
            "val_lesion_precision": summary["lesion_precision"], "val_lesion_f1": summary["lesion_f1"],
            "val_fp_per_scan": summary["fp_per_scan"],
            "val_lesion_recall_small": float(np.mean(small_found)) if small_found else 1.0}
