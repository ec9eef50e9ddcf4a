"""Held-out evaluation shared by the benchmarks: predict each case with a checkpoint (or several,
probabilities averaged), score it lesion-wise, and print Markdown tables.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.config.schema import ExperimentConfig
from medseg.data.case import Case
from medseg.data.sources.discover import discover
from medseg.evaluation.matching import LesionCounts, gt_lesion_hits, match_lesions
from medseg.evaluation.metrics import dice
from medseg.evaluation.tables import size_bin_names
from medseg.inference.model import load_model
from medseg.inference.predictor import predict_volume
from medseg.io.geometry import voxel_volume
from medseg.io.volumes import read_lesion_mask

BINS = size_bin_names()  # <10, 10-100, 100-1000, >=1000 mm^3
COLUMNS = ["dice", "lesion_recall", *(f"recall_{name}" for name, _, _ in BINS), "lesion_precision", "lesion_f1", "fp_per_scan"]


def heldout_cases(cfg: ExperimentConfig) -> list[Case]:
    """The cases of the config's dataset named in ``data.exclude_cases`` (the held-out split)."""
    ds = discover(cfg.data.dataset, cfg.data.layout, "training", cfg.data.channels, cfg.data.label)
    wanted = set(cfg.data.exclude_cases or ())
    return [c for c in ds.require_clean() if c.case_id in wanted]


def score(masks: Sequence[np.ndarray], cases: Sequence[Case], lesion_labels=None) -> dict[str, float]:
    """Dice, lesion counts and recall by size of masks already on the cases' grids (overlap rule, 26-connected)."""
    counts, dices, sizes, found = LesionCounts(scans=0), [], [], []
    for mask, case in zip(masks, cases):
        ref, affine = read_lesion_mask(case.label, lesion_labels)
        dices.append(dice(mask, ref))
        counts = counts + match_lesions(mask, ref)
        s, f = gt_lesion_hits(mask, ref)
        sizes += list(s * voxel_volume(affine))
        found += list(f)
    sizes, hit = np.array(sizes), np.array(found, bool)
    row = {"dice": float(np.mean(dices)), **counts.summary(), "gt_lesions": counts.n_ref, "cases": len(cases)}
    for name, lo, hi in BINS:
        sel = (sizes >= lo) & (sizes < hi)
        row[f"recall_{name}"] = float(hit[sel].mean()) if sel.any() else float("nan")
        row[f"n_{name}"] = int(sel.sum())
    return row


def evaluate_checkpoints(checkpoints: Sequence[Path], cases: Sequence[Case], lesion_labels=None) -> dict[str, float]:
    """:func:`score` of the predictions of a checkpoint (several: their ensemble), with the median
    prediction seconds per case."""
    lm = load_model(checkpoints[0] if len(checkpoints) == 1 else list(checkpoints), "cpu")
    masks, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        masks.append(predict_volume(lm, case.images).mask)
        seconds.append(time.perf_counter() - start)
    return score(masks, cases, lesion_labels) | {"predict_s_per_case": float(np.median(seconds))}


def markdown(rows: dict[str, dict[str, float]], columns: Sequence[str] = COLUMNS, extra: Sequence[str] = ()) -> str:
    """One Markdown table: a row per name, the given columns (NaN shown as -)."""
    cols = [*columns, *extra]
    lines = ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in rows.items():
        cells = [("-" if not np.isfinite(row.get(c, float("nan"))) else f"{row[c]:.3f}") for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
