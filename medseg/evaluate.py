"""``medseg evaluate``: per-case, per-lesion and summary tables between two folders of masks.

Predictions and references are paired by file name and compared voxel by voxel on their own
(identical) grids; a pair on different grids is reported, not silently resampled.
Outputs: per-case CSV (Dice, HD95 mm, volumes, lesion TP/FP/FN, recall, precision, F1),
``<out>_lesions.csv`` (every GT and predicted lesion, its volume and whether it matched) and
``<out>_summary.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.io import IMAGE_SUFFIXES, read_lesion_mask, strip_suffix
from medseg.metrics import LesionCounts, dice, lesion_pairs

SIZE_BINS_MM3 = (10.0, 100.0, 1000.0)  # recall bins: <10, 10-100, 100-1000, >1000 mm^3


@dataclass(frozen=True)
class EvalOptions:
    """Matching rule and its parameters (named in every report)."""

    matching: str = "overlap"
    match_threshold: float | None = None
    connectivity: int = 26
    dilate: int = 0
    min_voxels: int = 0
    min_mm3: float = 0.0  # alternative to min_voxels, converted per scan with its voxel volume
    lesion_labels: tuple[int, ...] | None = None  # reference label values that are lesion; None = every non-zero value
    size_bins_mm3: tuple[float, ...] = SIZE_BINS_MM3


def _pairs_from_cases(pred_dir: Path, cases, suffix: str = "") -> tuple[list[tuple[Path, Path]], list[str]]:
    """Reference labels of a dataset's cases, predictions named ``<case_id><suffix>.*``."""
    preds = {strip_suffix(p): p for p in pred_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES)} if pred_dir.is_dir() else {}
    pairs, errors = [], []
    for case in cases:
        if case.label is None:
            continue
        if case.case_id + suffix in preds:
            pairs.append((preds[case.case_id + suffix], case.label))
        else:
            errors.append(f"{pred_dir / (case.case_id + suffix)}: no prediction for case {case.case_id}; run medseg predict --dataset on it")
    return pairs, errors


def _pairs(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise MedsegError(f"{d}: not a folder; pass the folder of predicted masks and the folder of reference labels")
    preds = {strip_suffix(p): p for p in pred_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES)}
    refs = sorted(p for p in ref_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES))
    if not refs:
        raise MedsegError(f"{ref_dir}: no reference masks (.nii/.nii.gz) found")
    pairs, errors = [], []
    for ref in refs:
        pred = preds.get(strip_suffix(ref))
        if pred is None:
            errors.append(f"{ref}: no prediction named {strip_suffix(ref)}.* in {pred_dir}; run 'medseg predict' on its scan")
        else:
            pairs.append((pred, ref))
    return pairs, errors


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray) -> float:
    """95th-percentile Hausdorff distance in mm (MONAI); 0 when both are empty, NaN when one is."""
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("nan")
    import torch
    from monai.metrics import compute_hausdorff_distance

    p = torch.as_tensor(pred[None, None].astype(np.float32))
    r = torch.as_tensor(ref[None, None].astype(np.float32))
    return float(compute_hausdorff_distance(p, r, percentile=95, spacing=spacing.tolist())[0, 0])


def case_tables(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, name: str, opts: EvalOptions,
                with_hd95: bool = True) -> tuple[dict, list[dict], LesionCounts]:
    """Per-case row, per-lesion rows and lesion counts of one (prediction, reference) pair."""
    voxel = float(abs(np.linalg.det(affine[:3, :3])))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    min_voxels = max(opts.min_voxels, int(np.ceil(opts.min_mm3 / voxel - 1e-9)))
    matched, r_size, p_size = lesion_pairs(pred, ref, opts.matching, opts.match_threshold, opts.connectivity,
                                           opts.dilate, min_voxels)
    counts = LesionCounts(len(r_size), len(p_size), int(matched.any(1).sum()), int(matched.any(0).sum()))
    row = {"case": name, "dice": dice(pred, ref), "hd95_mm": hd95(pred, ref, spacing) if with_hd95 else float("nan"),
           "pred_volume_mm3": float(pred.sum()) * voxel, "ref_volume_mm3": float(ref.sum()) * voxel,
           "volume_diff_mm3": float(pred.sum() - ref.sum()) * voxel, "gt_lesions": counts.n_ref,
           "pred_lesions": counts.n_pred, "tp": counts.found, "fn": counts.fn, "fp": counts.fp, **counts.summary()}
    lesions = [{"case": name, "kind": "gt", "id": i + 1, "volume_mm3": float(s) * voxel, "matched": bool(matched[i].any()),
                "matches": " ".join(str(j + 1) for j in np.nonzero(matched[i])[0])} for i, s in enumerate(r_size)]
    lesions += [{"case": name, "kind": "pred", "id": j + 1, "volume_mm3": float(s) * voxel, "matched": bool(matched[:, j].any()),
                 "matches": " ".join(str(i + 1) for i in np.nonzero(matched[:, j])[0])} for j, s in enumerate(p_size)]
    return row, lesions, counts


def _summary(rows: list[dict], lesions: list[dict], total: LesionCounts, opts: EvalOptions) -> dict[str, Any]:
    gt = [l for l in lesions if l["kind"] == "gt"]
    edges = (0.0, *opts.size_bins_mm3, float("inf"))
    by_size = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [l["matched"] for l in gt if lo <= l["volume_mm3"] < hi]
        by_size[f"{lo:g}-{hi:g}"] = {"lesions": len(sel), "recall": float(np.mean(sel)) if sel else None}
    empty = [r for r in rows if r["gt_lesions"] == 0]
    hd = [r["hd95_mm"] for r in rows if np.isfinite(r["hd95_mm"])]
    return {"cases": len(rows), "rule": asdict(opts), "matching": opts.matching,
            "dice": float(np.mean([r["dice"] for r in rows])) if rows else float("nan"),
            "hd95_mm_median": float(np.median(hd)) if hd else None, **total.summary(),
            "gt_lesions": total.n_ref, "pred_lesions": total.n_pred, "tp": total.found, "fn": total.fn, "fp": total.fp,
            "recall_by_size_mm3": by_size,
            "case_specificity": float(np.mean([r["pred_lesions"] == 0 for r in empty])) if empty else None,
            "cases_without_lesions": len(empty)}


def evaluate_dirs(pred_dir: Path | str, ref_dir: Path | str, out_csv: Path | str | None = None,
                  opts: EvalOptions = EvalOptions(), cases=None, suffix: str = "") -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Compare every reference mask with the prediction of the same name (or, with ``cases``,
    every case's label with the prediction ``<case_id>.*`` in ``pred_dir``).

    Returns:
        (summary, per-case rows, error lines for cases that could not be compared). With
        ``out_csv`` also writes ``<out>.csv``, ``<out>_lesions.csv`` and ``<out>_summary.json``.
    """
    pairs, errors = _pairs_from_cases(Path(pred_dir), cases, suffix) if cases is not None else _pairs(Path(pred_dir), Path(ref_dir))
    rows, lesions, total, froc_scans = [], [], LesionCounts(scans=0), []
    for pred_path, ref_path in pairs:
        try:
            pred, p_aff = read_lesion_mask(pred_path)
            ref, r_aff = read_lesion_mask(ref_path, opts.lesion_labels)
            if pred.shape != ref.shape or not np.allclose(p_aff, r_aff, atol=1e-3):
                raise MedsegError(f"{pred_path}: grid {pred.shape} differs from reference {ref_path.name} {ref.shape}; predict on the reference's scan")
        except MedsegError as err:
            errors.append(str(err))
            continue
        name = strip_suffix(pred_path) if cases is not None else strip_suffix(ref_path)
        row, case_lesions, counts = case_tables(pred, ref, r_aff, name, opts)
        rows.append(row)
        lesions += case_lesions
        total = total + counts
        froc_scans.append(_prob_scan(pred_path, ref, r_aff))
    summary = _summary(rows, lesions, total, opts)
    froc_result = _froc(froc_scans, opts, out_csv)
    if froc_result:
        summary["froc"] = {"recall_at_fp_per_scan": froc_result["recall_at"], "cpm": froc_result["cpm"]}
    if out_csv is not None and rows:
        out = Path(out_csv)
        write_csv(rows, out)
        if lesions:
            write_csv(lesions, out.with_name(out.stem + "_lesions.csv"))
        out.with_name(out.stem + "_summary.json").write_text(json.dumps(summary, indent=2))
    return summary, rows, errors


def _prob_scan(pred_path: Path, ref: np.ndarray, affine: np.ndarray):
    """The probability map ``<case>_prob.*`` written by ``predict --save-prob``, if present."""
    from medseg.tune import Scan

    name = pred_path.name
    suffix = next(s for s in IMAGE_SUFFIXES if name.endswith(s))
    prob_path = pred_path.with_name(name[: -len(suffix)] + "_prob" + suffix)
    if not prob_path.exists():
        return None
    import nibabel as nib

    prob = np.asarray(nib.load(str(prob_path)).get_fdata(dtype=np.float32))
    return Scan(prob, ref, float(abs(np.linalg.det(affine[:3, :3])))) if prob.shape == ref.shape else None


def _froc(scans: list, opts: EvalOptions, out_csv: Path | str | None) -> dict | None:
    """FROC over the scans when every one has a probability map (see :mod:`medseg.tune`)."""
    if not scans or any(s is None for s in scans):
        return None
    from medseg.tune import froc, plot_froc

    result = froc(scans, connectivity=opts.connectivity)
    if out_csv is not None:
        out = Path(out_csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_froc(result, out.with_name(out.stem + "_froc.png"))
    return result


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write dict rows (same keys) as CSV, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
