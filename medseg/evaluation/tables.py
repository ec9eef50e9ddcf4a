"""Per-case, per-lesion and summary tables of (prediction, reference) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from medseg.config.schema import EvalConfig
from medseg.evaluation.brats import HD95_PENALTY_MM, PROTOCOLS, brats_case
from medseg.evaluation.matching import LesionCounts, lesion_pairs
from medseg.evaluation.metrics import dice, hd95
from medseg.io.geometry import voxel_volume

SIZE_BINS_MM3 = (10.0, 100.0, 1000.0)  # recall bins: <10, 10-100, 100-1000, >=1000 mm^3


def size_bin_names(edges: Sequence[float] = SIZE_BINS_MM3) -> list[tuple[str, float, float]]:
    """(metric suffix, low, high) per lesion-volume bin: ``lt10mm3``, ``10to100mm3``, ...,
    ``ge1000mm3`` (the names of ``val_lesion_recall_<bin>`` and ``heldback_lesion_recall_<bin>``)."""
    bounds = (0.0, *edges, float("inf"))
    names = [
        f"lt{edges[0]:g}mm3",
        *(f"{lo:g}to{hi:g}mm3" for lo, hi in zip(edges[:-1], edges[1:])),
        f"ge{edges[-1]:g}mm3",
    ]
    return [(name, lo, hi) for name, lo, hi in zip(names, bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class EvalOptions:
    """How ``medseg evaluate`` compares masks: the matching rule of the experiment config
    (``rule``, the ``eval`` section: matching, threshold, connectivity, one-to-one) plus what only
    an evaluation chooses (named in every report)."""

    rule: EvalConfig = EvalConfig()
    dilate: int = 0  # each GT lesion grown by N voxels before the overlap test
    min_voxels: int = 0
    min_mm3: float = 0.0  # alternative to min_voxels, converted per scan with its voxel volume
    lesion_labels: tuple[int, ...] | None = None  # reference label values that are lesion; None = every non-zero value
    size_bins_mm3: tuple[float, ...] = SIZE_BINS_MM3
    empty_dice: float = 1.0  # Dice when prediction and reference are both empty: 1.0, or NaN (case left out, counted)
    hd95_one_empty: float = float(
        "nan"
    )  # HD95 when exactly one mask is empty: NaN (left out, counted) or a penalty in mm
    protocol: str = "medseg"  # or a BraTS 2023 lesion-wise protocol (medseg.evaluation.brats.PROTOCOLS)

    def describe(self) -> dict[str, Any]:
        """Every setting as JSON values (NaN as null)."""
        extras = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rule"}
        return {
            k: None if isinstance(v, float) and np.isnan(v) else v
            for k, v in {**self.rule.model_dump(), **extras}.items()
        }


def case_tables(
    pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, name: str, opts: EvalOptions, with_hd95: bool = True
) -> tuple[dict, list[dict], LesionCounts]:
    """Per-case row, per-lesion rows and lesion counts of one (prediction, reference) pair."""
    if opts.protocol in PROTOCOLS:
        return brats_tables(pred, ref, affine, name, opts.protocol)
    voxel = voxel_volume(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    min_voxels = max(opts.min_voxels, int(np.ceil(opts.min_mm3 / voxel - 1e-9)))
    rule = opts.rule
    matched, r_size, p_size = lesion_pairs(
        pred, ref, rule.matching, rule.match_threshold, rule.connectivity, opts.dilate, min_voxels, rule.one_to_one
    )
    counts = LesionCounts(len(r_size), len(p_size), int(matched.any(1).sum()), int(matched.any(0).sum()))
    hd = hd95(pred, ref, spacing, opts.hd95_one_empty) if with_hd95 else float("nan")
    row = {
        "case": name,
        "dice": dice(pred, ref, opts.empty_dice),
        "hd95_mm": hd,
        "pred_volume_mm3": float(pred.sum()) * voxel,
        "ref_volume_mm3": float(ref.sum()) * voxel,
        "volume_diff_mm3": float(pred.sum() - ref.sum()) * voxel,
        "gt_lesions": counts.n_ref,
        "pred_lesions": counts.n_pred,
        "tp": counts.found,
        "fn": counts.fn,
        "fp": counts.fp,
        **counts.summary(),
    }
    lesions = [
        {
            "case": name,
            "kind": "gt",
            "id": i + 1,
            "volume_mm3": float(s) * voxel,
            "matched": bool(matched[i].any()),
            "matches": " ".join(str(j + 1) for j in np.nonzero(matched[i])[0]),
        }
        for i, s in enumerate(r_size)
    ]
    lesions += [
        {
            "case": name,
            "kind": "pred",
            "id": j + 1,
            "volume_mm3": float(s) * voxel,
            "matched": bool(matched[:, j].any()),
            "matches": " ".join(str(i + 1) for i in np.nonzero(matched[:, j])[0]),
        }
        for j, s in enumerate(p_size)
    ]
    return row, lesions, counts


def brats_tables(
    pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, name: str, protocol: str
) -> tuple[dict, list[dict], LesionCounts]:
    """:func:`case_tables` under a BraTS 2023 protocol: the row adds ``lesionwise_dice`` and
    ``lesionwise_hd95_mm`` (``dice`` and ``hd95_mm`` are the challenge's "legacy" whole-scan
    figures, HD95 374 mm when one mask is empty); GT lesions at or below the protocol's volume are
    listed as ``gt_unscored``."""
    spec, voxel = PROTOCOLS[protocol], voxel_volume(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row, scores, n_pred, tp_pred = brats_case(pred, ref, spacing, spec)
    counts = LesionCounts(row["gt_lesions"], n_pred, row["tp"], len(tp_pred))
    row = {
        "case": name,
        "dice": dice(pred, ref),
        "hd95_mm": hd95(pred, ref, spacing, HD95_PENALTY_MM),
        **row,
        "pred_volume_mm3": float(pred.sum()) * voxel,
        "ref_volume_mm3": float(ref.sum()) * voxel,
        **counts.summary(),
    }
    lesions = [
        {
            "case": name,
            "kind": "gt" if s.volume_mm3 > spec.min_mm3 else "gt_unscored",
            "id": i + 1,
            "volume_mm3": s.volume_mm3,
            "matched": bool(s.hits),
            "matches": " ".join(map(str, s.hits)),
            "dice": s.dice,
            "hd95_mm": s.hd95_mm,
        }
        for i, s in enumerate(scores)
    ]
    lesions += [{"case": name, "kind": "pred", "id": j, "matched": j in tp_pred} for j in range(1, n_pred + 1)]
    return row, lesions, counts


def summarize(rows: list[dict], lesions: list[dict], total: LesionCounts, opts: EvalOptions) -> dict[str, Any]:
    gt = [lesion for lesion in lesions if lesion["kind"] == "gt"]
    edges = (0.0, *opts.size_bins_mm3, float("inf"))
    by_size = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [lesion["matched"] for lesion in gt if lo <= lesion["volume_mm3"] < hi]
        by_size[f"{lo:g}-{hi:g}"] = {"lesions": len(sel), "recall": float(np.mean(sel)) if sel else None}
    empty = [r for r in rows if r["gt_lesions"] == 0]
    hd = [r["hd95_mm"] for r in rows if np.isfinite(r["hd95_mm"])]
    dices = [r["dice"] for r in rows if np.isfinite(r["dice"])]
    protocol = {}
    if opts.protocol in PROTOCOLS:
        protocol = {
            "lesionwise_dice": float(np.mean([r["lesionwise_dice"] for r in rows])) if rows else float("nan"),
            "lesionwise_hd95_mm": float(np.mean([r["lesionwise_hd95_mm"] for r in rows])) if rows else float("nan"),
            "protocol_settings": {
                "dilation_voxels": PROTOCOLS[opts.protocol].dilation,
                "structure": "18-connected",
                "gt_min_mm3": PROTOCOLS[opts.protocol].min_mm3,
                "hd95_penalty_mm": HD95_PENALTY_MM,
            },
        }
    return {
        "cases": len(rows),
        "protocol": PROTOCOLS[opts.protocol].name if opts.protocol in PROTOCOLS else opts.protocol,
        **protocol,
        "rule": opts.describe(),
        "matching": opts.rule.matching,
        "dice": float(np.mean(dices)) if dices else float("nan"),
        "dice_cases_excluded": len(rows) - len(dices),
        "hd95_mm_median": float(np.median(hd)) if hd else None,
        "hd95_cases_excluded": len(rows) - len(hd),
        **total.summary(),
        "gt_lesions": total.n_ref,
        "pred_lesions": total.n_pred,
        "tp": total.found,
        "fn": total.fn,
        "fp": total.fp,
        "recall_by_size_mm3": by_size,
        "case_specificity": float(np.mean([r["pred_lesions"] == 0 for r in empty])) if empty else None,
        "cases_without_lesions": len(empty),
    }
