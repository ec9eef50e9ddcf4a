"""``medseg evaluate``: per-case Dice and lesion-wise counts between two folders of masks.

Predictions and references are paired by file name and compared voxel by voxel on their own
(identical) grids; a pair on different grids is reported, not silently resampled.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.io import IMAGE_SUFFIXES, strip_suffix
from medseg.metrics import LesionCounts, dice, match_lesions


def _read_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj) > 0, np.asarray(img.affine)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise MedsegError(f"{path}: cannot read mask ({type(exc).__name__}); re-create it") from None


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


def evaluate_dirs(pred_dir: Path | str, ref_dir: Path | str, out_csv: Path | str | None = None, rule: str = "overlap",
                  threshold: float | None = None, connectivity: int = 26) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Compare every reference mask with the prediction of the same name.

    Returns:
        (summary: dice (mean over cases), pooled lesion recall/precision/f1/fp_per_scan, counts,
        matching rule; per-case rows; error lines for cases that could not be compared).
    """
    pairs, errors = _pairs(Path(pred_dir), Path(ref_dir))
    rows, total = [], LesionCounts(scans=0)
    for pred_path, ref_path in pairs:
        try:
            pred, p_aff = _read_mask(pred_path)
            ref, r_aff = _read_mask(ref_path)
            if pred.shape != ref.shape or not np.allclose(p_aff, r_aff, atol=1e-3):
                raise MedsegError(f"{pred_path}: grid {pred.shape} differs from reference {ref_path.name} {ref.shape}; predict on the reference's scan")
        except MedsegError as err:
            errors.append(str(err))
            continue
        counts = match_lesions(pred, ref, rule, threshold, connectivity)
        total = total + counts
        rows.append({"case": strip_suffix(ref_path), "dice": dice(pred, ref), "gt_lesions": counts.n_ref,
                     "pred_lesions": counts.n_pred, "tp": counts.found, "fn": counts.fn, "fp": counts.fp,
                     **{k: v for k, v in LesionCounts(counts.n_ref, counts.n_pred, counts.found, counts.tp_pred).summary().items()}})
    summary = {"cases": len(rows), "matching": rule, "dice": float(np.mean([r["dice"] for r in rows])) if rows else float("nan"),
               **total.summary(), "gt_lesions": total.n_ref, "pred_lesions": total.n_pred, "tp": total.found,
               "fn": total.fn, "fp": total.fp}
    if out_csv is not None and rows:
        _write_csv(rows, Path(out_csv))
    return summary, rows, errors


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
