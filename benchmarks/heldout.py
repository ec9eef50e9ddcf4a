"""Held-out evaluation shared by the benchmarks: predict each case with a checkpoint (or several,
probabilities averaged), score it lesion-wise with ``medseg.evaluation.tables`` (the code behind
``medseg evaluate``), and print Markdown tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.config.schema import ExperimentConfig
from medseg.data.case import Case
from medseg.data.sources.discover import discover
from medseg.evaluation.matching import LesionCounts
from medseg.evaluation.tables import EvalOptions, case_tables, size_bin_names, summarize
from medseg.inference.model import load_model
from medseg.inference.predictor import predict_volume
from medseg.io.volumes import read_lesion_mask

BINS = size_bin_names()  # <10, 10-100, 100-1000, >=1000 mm^3
COLUMNS = [
    "dice",
    "lesion_recall",
    *(f"recall_{name}" for name, _, _ in BINS),
    "lesion_precision",
    "lesion_f1",
    "fp_per_scan",
]
BRATS_COLUMNS = ["brats_lesionwise_dice", "brats_tumour_recall", "brats_fp_per_scan"]


def heldout_cases(cfg: ExperimentConfig) -> list[Case]:
    """The cases of the config's dataset named in ``data.exclude_cases`` (the held-out split)."""
    ds = discover(cfg.data.dataset, cfg.data.layout, "training", cfg.data.channels, cfg.data.label)
    wanted = set(cfg.data.exclude_cases or ())
    return [c for c in ds.require_clean() if c.case_id in wanted]


def _summary(
    masks: Sequence[np.ndarray], refs: Sequence[tuple[np.ndarray, np.ndarray]], cases: Sequence[Case], opts: EvalOptions
) -> dict:
    rows, lesions, total = [], [], LesionCounts(scans=0)
    for mask, (ref, affine), case in zip(masks, refs, cases):
        row, les, counts = case_tables(mask, ref, affine, case.case_id, opts, with_hd95=False)
        rows.append(row)
        lesions += les
        total = total + counts
    return summarize(rows, lesions, total, opts) | {"per_case": rows}


def score(
    masks: Sequence[np.ndarray], cases: Sequence[Case], lesion_labels=None, brats: bool = False
) -> dict[str, float]:
    """Dice, lesion counts and recall by size of masks already on the cases' grids: the overlap
    rule, every 26-connected GT component a lesion (satellite specks included); with ``brats`` also
    the BraTS 2023 glioma protocol's lesion-wise Dice, tumour recall and FP per scan (GT merged by
    dilation, GT lesions of 50 mm^3 or less unscored), as ``medseg evaluate --protocol brats2023``."""
    refs = [read_lesion_mask(case.label, lesion_labels) for case in cases]
    s = _summary(masks, refs, cases, EvalOptions())
    row = {
        k: s[k]
        for k in ("dice", "lesion_recall", "lesion_precision", "lesion_f1", "fp_per_scan", "gt_lesions", "cases")
    }
    for (name, _, _), b in zip(BINS, s["recall_by_size_mm3"].values()):
        row[f"recall_{name}"] = float("nan") if b["recall"] is None else b["recall"]
        row[f"n_{name}"] = b["lesions"]
    row["per_case_dice"] = {r["case"]: r["dice"] for r in s["per_case"]}
    if brats:
        p = _summary(masks, refs, cases, EvalOptions(protocol="brats2023"))
        row |= {
            "brats_lesionwise_dice": p["lesionwise_dice"],
            "brats_tumour_recall": p["lesion_recall"],
            "brats_fp_per_scan": p["fp_per_scan"],
            "brats_tumours": p["gt_lesions"],
        }
    return row


def evaluate_checkpoints(
    checkpoints: Sequence[Path],
    cases: Sequence[Case],
    lesion_labels=None,
    brats: bool = False,
    tta: bool | None = None,
    fill_holes: bool | None = None,
    region_of: Callable[[Case], np.ndarray] | None = None,
) -> dict[str, float]:
    """:func:`score` of the predictions of a checkpoint (several: their ensemble), with the median
    prediction seconds per case; ``tta``, ``fill_holes`` True/False override the checkpoint's
    mirror TTA and hole filling; ``region_of`` gives a case's region mask (X, Y, Z bool, e.g. its
    brain mask), outside which lesions are removed, as ``medseg predict --mask``."""
    lm = load_model(checkpoints[0] if len(checkpoints) == 1 else list(checkpoints), "cpu")
    masks, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        region = region_of(case) if region_of else None
        masks.append(predict_volume(lm, case.images, tta=tta, fill_holes=fill_holes, region=region).mask)
        seconds.append(time.perf_counter() - start)
    return score(masks, cases, lesion_labels, brats) | {"predict_s_per_case": float(np.median(seconds))}


def markdown(rows: dict[str, dict[str, float]], columns: Sequence[str] = COLUMNS, extra: Sequence[str] = ()) -> str:
    """One Markdown table: a row per name, the given columns (NaN or absent shown as -)."""
    cols = [*columns, *extra]
    lines = ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in rows.items():
        cells = [("-" if not np.isfinite(row.get(c, float("nan"))) else f"{row[c]:.3f}") for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
