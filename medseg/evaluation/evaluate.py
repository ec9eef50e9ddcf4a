"""``medseg evaluate``: per-case, per-lesion and summary tables between two folders of masks.

Predictions and references are paired by file name and compared voxel by voxel on their own
(identical) grids; a pair on different grids is reported, not silently resampled.
Outputs, four files in the output folder (:data:`OUTPUT_FILES`): ``cases.csv`` (per case: Dice,
HD95 mm, volumes, lesion TP/FP/FN, recall, precision, F1), ``lesions.csv`` (every GT and predicted
lesion, its volume and whether it matched), ``summary.json`` and, when every mask has its
probability map, ``froc.png``. With reviewer marks (``--marks``) ``lesions.csv`` gains a ``review``
column and ``summary.json`` a ``review`` section (:mod:`medseg.evaluation.reviewed`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import MedsegError
from medseg.evaluation.froc import Scan, froc
from medseg.evaluation.matching import LesionCounts
from medseg.evaluation.reviewed import ReviewDecisions, apply_decisions, review_summary
from medseg.evaluation.tables import EvalOptions, case_tables, summarize
from medseg.io.geometry import voxel_volume
from medseg.io.outputs import OutputPlan
from medseg.io.paths import IMAGE_SUFFIXES, strip_suffix
from medseg.io.volumes import read_array, read_lesion_mask
from medseg.io.write import write_csv, write_text
from medseg.viz.plots import plot_froc

if TYPE_CHECKING:  # for the hints only
    from medseg.data.case import Case

OUTPUT_FILES = {"cases": "cases.csv", "lesions": "lesions.csv", "summary": "summary.json", "froc": "froc.png"}


def _pairs_from_cases(
    pred_dir: Path, cases: Sequence[Case], suffix: str = ""
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Reference labels of a dataset's cases, predictions named ``<case_id><suffix>.*``."""
    preds = (
        {strip_suffix(p): p for p in pred_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES)} if pred_dir.is_dir() else {}
    )
    pairs, errors = [], []
    for case in cases:
        if case.label is None:
            continue
        if case.case_id + suffix in preds:
            pairs.append((preds[case.case_id + suffix], case.label))
        else:
            errors.append(
                f"{pred_dir / (case.case_id + suffix)}: no prediction for case {case.case_id}; run medseg predict "
                "--dataset on it"
            )
    return pairs, errors


def _pairs(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(prediction, reference) pairs by file name of two folders, or the one pair of two mask files."""
    if pred_dir.is_file() and ref_dir.is_file():
        return [(pred_dir, ref_dir)], []
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise MedsegError(
                f"{d}: not a folder; pass the folder of predicted masks and the folder of reference labels"
            )
    preds = {strip_suffix(p): p for p in pred_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES)}
    refs = sorted(p for p in ref_dir.iterdir() if p.name.endswith(IMAGE_SUFFIXES))
    if not refs:
        raise MedsegError(f"{ref_dir}: no reference masks (.nii/.nii.gz) found")
    pairs, errors = [], []
    for ref in refs:
        pred = preds.get(strip_suffix(ref))
        if pred is None:
            errors.append(
                f"{ref}: no prediction named {strip_suffix(ref)}.* in {pred_dir}; run 'medseg predict' on its scan"
            )
        else:
            pairs.append((pred, ref))
    return pairs, errors


def evaluate_dirs(
    pred_dir: Path | str,
    ref_dir: Path | str,
    out: Path | str | None = None,
    opts: EvalOptions = EvalOptions(),
    cases: Sequence[Case] | None = None,
    suffix: str = "",
    group: str = "",
    decisions: ReviewDecisions | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Compare every reference mask with the prediction of the same name (or, with ``cases``,
    every case's label with the prediction ``<case_id><suffix>.*`` in ``pred_dir``; or, given
    two mask files, that one pair). With reviewer ``decisions`` the lesion rows get a ``review``
    column and the summary a ``review`` section (:mod:`medseg.evaluation.reviewed`).

    Returns:
        (summary, per-case rows, error lines for cases that could not be compared). With the
        output folder ``out`` also writes ``cases.csv``, ``lesions.csv``, ``summary.json`` and
        ``froc.png`` into it (into ``out/<group>`` with a ``group``; see :func:`output_paths`).
    """
    pairs, errors = (
        _pairs_from_cases(Path(pred_dir), cases, suffix) if cases is not None else _pairs(Path(pred_dir), Path(ref_dir))
    )
    outputs = (
        output_paths(out, [p for pair in pairs for p in (*pair, prob_path(pair[0]))], group)
        if out is not None
        else None
    )
    rows, lesions, total, froc_scans = [], [], LesionCounts(scans=0), []
    reviewed: tuple[list[str], set] = ([], set())  # masks with decisions applied, the decisions met
    for pred_path, ref_path in pairs:
        try:
            pred, ref, r_aff = _read_pair(pred_path, ref_path, opts.lesion_labels)
        except MedsegError as err:
            errors.append(str(err))
            continue
        name = strip_suffix(pred_path) if cases is not None else strip_suffix(ref_path)
        row, case_lesions, counts = case_tables(pred, ref, r_aff, name, opts)
        if decisions is not None:  # marks name the mask (the review site's scan name)
            reviewed[0].append(strip_suffix(pred_path))
            conn = opts.rule.connectivity
            reviewed[1].update(apply_decisions(case_lesions, reviewed[0][-1], (pred, ref), r_aff, conn, decisions))
        rows.append(row)
        lesions += case_lesions
        total = total + counts
        froc_scans.append(_prob_scan(pred_path, ref, r_aff))
    summary = summarize(rows, lesions, total, opts)
    if decisions is not None:
        summary["review"] = review_summary(lesions, reviewed[0], decisions, reviewed[1])
    froc_result = _froc(froc_scans, opts, outputs)
    if froc_result:
        summary["froc"] = {"recall_at_fp_per_scan": froc_result["recall_at"], "cpm": froc_result["cpm"]}
    if outputs is not None and rows:
        write_csv(rows, outputs["cases"])
        if lesions:
            write_csv(lesions, outputs["lesions"])
        write_text(json.dumps(summary, indent=2), outputs["summary"])
    return summary, rows, errors


def _read_pair(
    pred_path: Path, ref_path: Path, lesion_labels: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, reference (its ``lesion_labels``), affine) of one pair, bool (X, Y, Z).

    Raises:
        MedsegError: an unreadable file, or the two on different grids.
    """
    pred, p_aff = read_lesion_mask(pred_path)
    ref, r_aff = read_lesion_mask(ref_path, lesion_labels)
    if pred.shape != ref.shape or not np.allclose(p_aff, r_aff, atol=1e-3):
        raise MedsegError(
            f"{pred_path}: grid {pred.shape} differs from reference {ref_path.name} {ref.shape}; predict on "
            "the reference's scan"
        )
    return pred, ref, r_aff


def output_paths(out: Path | str, inputs: Sequence[Path], group: str = "") -> dict[str, Path]:
    """The four files of the output folder ``out`` (``--out``), claimed before anything is written:
    ``out/cases.csv``, ``out/lesions.csv``, ``out/summary.json`` and ``out/froc.png``
    (:data:`OUTPUT_FILES`); with a ``group`` (a lesion class) the same names in ``out/<group>/``.

    Raises:
        MedsegError: one of them would replace an input (a mask, a label, a probability map) or
            leave ``out``.
    """
    plan = OutputPlan(Path(out), inputs)
    return {
        kind: plan.claim(
            f"{group}/{name}" if group else name,
            f"evaluate's {kind} table" if kind != "froc" else "evaluate's FROC plot",
        )
        for kind, name in OUTPUT_FILES.items()
    }


def prob_path(pred_path: Path) -> Path:
    """``<case>_prob.<suffix>``: where ``predict --save-prob`` writes the probabilities of a mask."""
    suffix = next((s for s in IMAGE_SUFFIXES if pred_path.name.endswith(s)), pred_path.suffix)
    return pred_path.with_name(pred_path.name[: len(pred_path.name) - len(suffix)] + "_prob" + suffix)


def _prob_scan(pred_path: Path, ref: np.ndarray, affine: np.ndarray) -> Scan | None:
    """The probability map ``<case>_prob.*`` written by ``predict --save-prob`` (NIfTI with its
    1/255 scale applied, NRRD/MHA stored as 0-255), if present and on the reference's grid."""
    path = prob_path(pred_path)
    if not path.exists():
        return None
    prob, _ = read_array(path)
    prob = np.asarray(prob, dtype=np.float32).reshape(prob.shape[:3])
    if not str(path).endswith((".nii", ".nii.gz")):
        prob = prob / 255.0  # save_like stores uint8 without a scale outside NIfTI
    return Scan(prob, ref, voxel_volume(affine)) if prob.shape == ref.shape else None


def _froc(scans: list, opts: EvalOptions, outputs: dict[str, Path] | None) -> dict | None:
    """FROC over the scans when every one has a probability map (see :mod:`medseg.tune`)."""
    if not scans or any(s is None for s in scans):
        return None
    result = froc(scans, connectivity=opts.rule.connectivity)
    if outputs is not None:
        outputs["froc"].parent.mkdir(parents=True, exist_ok=True)
        plot_froc(result, outputs["froc"])
    return result
