"""Operating point and FROC from validation probability maps.

``medseg tune CHECKPOINT`` predicts the run's validation cases (the split is recomputed from the
checkpoint's config), sweeps the probability threshold and the minimum lesion volume (lesions
matched by the run's ``eval:`` rules; volumes up to twice the config's own minimum), picks the
point for the target (max lesion F1; the fewest FP per scan with recall >= R; or the highest
recall with at most K FP per scan), writes it into the checkpoint (atomically) and logs the curve
and the FROC to the run's MLflow record.

Order: everything is computed first, then every member's checkpoint is written (all or none),
then MLflow is told. A store that is down costs a ``warning:`` line, not the tuning. The store
address a checkpoint carries is data, not a setting: it is written to only when the user names
the same store (``--tracking-uri`` or ``$MLFLOW_TRACKING_URI``); otherwise nothing is logged and
one ``warning:`` line says so (a crafted checkpoint cannot make tune create a store anywhere).

``--protocol brats2023`` (or another of :data:`medseg.evaluation.brats.PROTOCOLS`) counts as the
BraTS 2023 challenge does instead (GT lesions merged by dilation, small GT unscored, every
predicted component a lesion) and picks the point of the best mean lesion-wise Dice, the
challenge's ranking figure (or, with R, the fewest false tumours per scan at tumour recall >= R;
with K, the highest tumour recall at <= K false tumours per scan).

``medseg tune FOLDER`` (the folds of ``medseg train --folds``) pools the out-of-fold validation
predictions of every fold, each predicted by its own fold's model, and writes the chosen point
into every fold's checkpoint (the ensemble uses it). Runs in the folder that validate on the same
cases (the same config trained with several seeds) predict them together, as the ensemble they
form, so the point is the ensemble's.

``medseg tune CHECKPOINT --dataset D [--mask MASKS]`` chooses the point on D's labelled cases
instead (e.g. one site's validation scans; every member predicts them together), with each scan's
region mask applied as ``medseg predict --mask`` applies it (lesions mostly outside dropped); such
a point is logged as a child run only, tagged with its cases (:func:`medseg.calibration.logged.tuned_on`).

FROC: one candidate per probability peak, matched as picai_eval does (see
:mod:`medseg.evaluation.froc`). Reported: recall at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per scan and their
mean (the LUNA16 competition performance metric, CPM).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.calibration.logged import log_tuning, tuned_on
from medseg.config.schema import EvalConfig
from medseg.data.case import Case
from medseg.data.sources.discover import from_config
from medseg.data.split import run_split
from medseg.errors import MedsegError
from medseg.evaluation.brats import PROTOCOLS, brats_case
from medseg.evaluation.froc import Scan, froc
from medseg.evaluation.matching import LesionCounts, match_lesions
from medseg.inference.model import ensemble_members, from_checkpoint, from_checkpoints
from medseg.inference.predictor import predict_volume
from medseg.inference.region import RegionMasks
from medseg.io.geometry import voxel_volume
from medseg.io.volumes import read_lesion_mask
from medseg.io.write import write_csv
from medseg.lesions import above, keep_inside, remove_small
from medseg.nn.checkpoint import (
    Checkpoint,
    OperatingPoint,
    load_checkpoint,
    save_checkpoints,
)
from medseg.viz.plots import plot_froc

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Reference lesions per matched predicted lesion above which a point merges lesions into blobs: by the
# overlap rule one blob over many lesions finds them all with no false positive (recall 1, Dice near
# 0), so such points are never chosen while another point is left.
MERGE_LIMIT = 2.0


MIN_VOLUMES_MM3 = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def min_volume_grid(config_min_mm3: float) -> tuple[float, ...]:
    """The minimum lesion volumes swept: :data:`MIN_VOLUMES_MM3` plus half, once and twice the
    config's own ``inference.min_lesion_mm3`` (a whole-tumour config's 1000 mm3 stays on offer
    instead of being undone by a grid that stops at 100)."""
    extra = {config_min_mm3 * f for f in (0.5, 1.0, 2.0)} if config_min_mm3 > 0 else set()
    return tuple(sorted(set(MIN_VOLUMES_MM3) | extra))


def sweep(
    scans: Sequence[Scan],
    thresholds: Sequence[float] = THRESHOLDS,
    min_volumes: Sequence[float] = MIN_VOLUMES_MM3,
    rules: EvalConfig = EvalConfig(),
    fill: bool = False,
) -> list[dict[str, float]]:
    """Pooled lesion recall/precision/F1/FP-per-scan for every (threshold, min volume) pair,
    lesions matched as ``rules`` (the run's ``eval:`` section) says, and ``merged``: reference
    lesions found per matched predicted lesion (see :data:`MERGE_LIMIT`); ``fill``: the run's
    ``inference.fill_holes``."""
    c = rules.connectivity
    rows = []
    for t in thresholds:
        masks = [keep_inside(above(s.prob, t, c, fill), s.region, c) for s in scans]
        for v in min_volumes:
            total = LesionCounts(scans=0)
            for s, m in zip(scans, masks):
                total = total + match_lesions(
                    remove_small(m, v / s.voxel_mm3, c),
                    s.ref,
                    rules.matching,
                    rules.match_threshold,
                    connectivity=c,
                    one_to_one=rules.one_to_one,
                )
            merged = total.found / total.tp_pred if total.tp_pred else 0.0
            rows.append({"threshold": t, "min_lesion_mm3": v, **total.summary(), "merged": merged})
    return rows


def sweep_brats(
    scans: Sequence[Scan], thresholds: Sequence[float], min_volumes: Sequence[float], protocol: str, fill: bool = False
) -> list[dict[str, float]]:
    """For every (threshold, min volume) pair, the BraTS protocol's figures: mean lesion-wise Dice
    over the scans, tumour recall (found / scored GT lesions, pooled), precision (predicted
    lesions touching a GT lesion / predicted lesions), their F1 and false tumours per scan;
    ``fill``: the run's ``inference.fill_holes``."""
    spec, rows = PROTOCOLS[protocol], []
    for t in thresholds:
        masks = [keep_inside(above(s.prob, t, 26, fill), s.region, 26) for s in scans]
        for v in min_volumes:
            cases = [
                brats_case(remove_small(m, v / s.voxel_mm3, 26), s.ref, s.axis_spacing(), spec, with_hd95=False)
                for s, m in zip(scans, masks)
            ]
            tp, fn = sum(c[0]["tp"] for c in cases), sum(c[0]["fn"] for c in cases)
            hit, pred = sum(len(c[3]) for c in cases), sum(c[2] for c in cases)
            recall, precision = tp / (tp + fn) if tp + fn else 1.0, hit / pred if pred else 1.0
            rows.append(
                {
                    "threshold": t,
                    "min_lesion_mm3": v,
                    "lesionwise_dice": sum(c[0]["lesionwise_dice"] for c in cases) / len(cases),
                    "lesion_recall": recall,
                    "lesion_precision": precision,
                    "lesion_f1": 2 * recall * precision / (recall + precision) if recall + precision else 0.0,
                    "fp_per_scan": sum(c[0]["fp"] for c in cases) / len(cases),
                    "tp": tp,
                    "fn": fn,
                }
            )
    return rows


def choose(
    curve: list[dict[str, float]], min_recall: float | None = None, max_fp_per_scan: float | None = None
) -> dict[str, float]:
    """Max lesion F1 (a BraTS curve: max lesion-wise Dice; ties: higher recall), or with
    ``min_recall`` the fewest FP per scan among points reaching it (ties: higher recall; none
    reaching it: the highest recall), or with ``max_fp_per_scan`` (:func:`choose_within_fp_budget`)
    the highest recall among points within that budget. Points that merge lesions into blobs
    (``merged`` above :data:`MERGE_LIMIT`) are left out while any other point remains.

    Raises:
        MedsegError: both ``min_recall`` and ``max_fp_per_scan``.
    """
    check_targets(min_recall, max_fp_per_scan)
    curve = [r for r in curve if r.get("merged", 1.0) <= MERGE_LIMIT] or curve
    if max_fp_per_scan is not None:
        return choose_within_fp_budget(curve, max_fp_per_scan)
    if min_recall is None:
        key = "lesionwise_dice" if "lesionwise_dice" in curve[0] else "lesion_f1"
        return max(curve, key=lambda r: (r[key], r["lesion_recall"], -r["fp_per_scan"], -r["threshold"]))
    ok = [r for r in curve if r["lesion_recall"] >= min_recall]
    if not ok:
        return max(curve, key=lambda r: (r["lesion_recall"], -r["fp_per_scan"]))
    return min(ok, key=lambda r: (r["fp_per_scan"], -r["lesion_recall"]))


def check_targets(min_recall: float | None, max_fp_per_scan: float | None) -> None:
    """At most one target.

    Raises:
        MedsegError: both ``min_recall`` and ``max_fp_per_scan``.
    """
    if min_recall is not None and max_fp_per_scan is not None:
        raise MedsegError(
            f"--min-recall {min_recall:g} and --max-fp-per-scan {max_fp_per_scan:g}: two targets for one operating "
            "point; give one of them"
        )


def choose_within_fp_budget(curve: list[dict[str, float]], max_fp_per_scan: float) -> dict[str, float]:
    """The point with the highest lesion recall among those with FP per scan <= ``max_fp_per_scan``
    (ties: higher lesion F1, then fewer FP per scan, then the higher threshold); when no point is
    within the budget, the one with the fewest FP per scan (ties: higher recall, higher F1)."""
    ok = [r for r in curve if r["fp_per_scan"] <= max_fp_per_scan]
    if not ok:
        return min(curve, key=lambda r: (r["fp_per_scan"], -r["lesion_recall"], -r["lesion_f1"]))
    return max(ok, key=lambda r: (r["lesion_recall"], r["lesion_f1"], -r["fp_per_scan"], r["threshold"]))


def tuning_target(protocol: str | None, min_recall: float | None, max_fp_per_scan: float | None) -> str:
    """The target recorded in the checkpoint's operating point and the MLflow run name: ``max_f1``,
    ``max_lesionwise_dice``, ``recall>=R`` or ``max_fp_per_scan<=K``, then ``:PROTOCOL`` for a
    BraTS protocol."""
    if max_fp_per_scan is not None:
        target = f"max_fp_per_scan<={max_fp_per_scan:g}"
    elif min_recall is not None:
        target = f"recall>={min_recall}"
    else:
        target = "max_lesionwise_dice" if protocol else "max_f1"
    return f"{target}:{protocol}" if protocol else target


def warn_over_budget(chosen: dict[str, float], max_fp_per_scan: float | None) -> None:
    """One ``warning:`` line when the point chosen for ``max_fp_per_scan`` is over that budget
    (no point of the curve meets it: the one with the fewest FP per scan was taken)."""
    if max_fp_per_scan is not None and chosen["fp_per_scan"] > max_fp_per_scan:
        print(
            f"warning: no operating point has at most {max_fp_per_scan:g} FP per scan on the validation cases; took "
            f"the one with the fewest ({chosen['fp_per_scan']:.2f} FP per scan at threshold {chosen['threshold']:g}, "
            f"min lesion {chosen['min_lesion_mm3']:g} mm3, lesion recall {chosen['lesion_recall']:.3f})",
            file=sys.stderr,
        )


def validation_cases(ckpt: Checkpoint) -> list[Case]:
    """The validation cases of the checkpoint's run (the split recomputed from its config)."""
    cfg = ckpt.config
    cases = from_config(cfg.data).require_clean()
    return run_split(cases, cfg)[1]


def validation_scans(
    ckpts: Sequence[Checkpoint],
    device: str = "auto",
    cases: Sequence[Case] | None = None,
    region: RegionMasks | None = None,
) -> list[Scan]:
    """Every member's validation cases on their own grids, each predicted by the members that
    validate on exactly the same cases, together (their mean probability): the folds of
    ``--folds`` each predict their own fold (out of fold), runs that differ only in seed predict
    their shared validation as the ensemble they form. ``cases`` (``tune --dataset``): these
    labelled cases instead, predicted by every member together (the ensemble ``medseg predict``
    runs); ``region`` (``tune --mask``): each scan's region mask, by case id.

    Raises:
        MedsegError: a case of ``cases`` without a label, or a missing or misplaced region mask.
    """
    by_cases: dict[tuple[str, ...], tuple[list[Case], list[Checkpoint]]] = {}
    if cases is not None:
        by_cases[()] = (labelled(cases), list(ckpts))
    else:
        for ckpt in ckpts:
            own = validation_cases(ckpt)
            by_cases.setdefault(tuple(c.case_id for c in own), (own, []))[1].append(ckpt)
    every = [c for group, _ in by_cases.values() for c in group]
    regions = {c.case_id: region.read(c.case_id, Path(c.images[0])) for c in every} if region is not None else {}
    scans = []  # the masks were all read first: a missing one stops tune before anything is predicted
    for group, members in by_cases.values():
        lm = from_checkpoint(members[0], device) if len(members) == 1 else from_checkpoints(members, device)
        for case in group:
            inside = regions.get(case.case_id)
            pred = predict_volume(lm, case.images)
            ref, _ = read_lesion_mask(case.label, members[0].config.data.lesion_labels)
            spacing = tuple(np.linalg.norm(pred.affine[:3, :3], axis=0))
            scans.append(Scan(pred.prob, ref, voxel_volume(pred.affine), spacing, inside))
    return scans


def labelled(cases: Sequence[Case]) -> list[Case]:
    """``cases`` as a list, each with a reference label (tuning scores against it).

    Raises:
        MedsegError: naming the first case without a label.
    """
    for case in cases:
        if case.label is None:
            raise MedsegError(
                f"{case.images[0]}: case {case.case_id} has no label; tune --dataset needs the reference masks of "
                "its cases (a dataset with labels, or a case list with a label per case)"
            )
    return list(cases)


def run_tune(
    checkpoint: Path,
    min_recall: float | None = None,
    device: str = "auto",
    protocol: str | None = None,
    tracking_uri: str | None = None,
    max_fp_per_scan: float | None = None,
    cases: Sequence[Case] | None = None,
    region: RegionMasks | None = None,
) -> dict:
    """Tune and store the operating point of ``checkpoint`` (see module docstring); a folder of
    runs (the folds of ``medseg train --folds``) is tuned on the pooled validation predictions of
    every fold, each by its own model (out of fold), and the point is written into every fold.
    ``cases``, ``region``: labelled cases to tune on instead of the validation cases, and region
    masks (:func:`validation_scans`; ``tune --dataset``, ``--mask``).
    ``protocol``: a BraTS 2023 protocol name (:func:`sweep_brats`), None = the run's ``eval:`` rules.
    ``tracking_uri``: the MLflow store the user names (``--tracking-uri``); see
    :func:`medseg.calibration.logged.log_tuning`.
    ``min_recall``, ``max_fp_per_scan``: the target (at most one; see :func:`choose`).

    Raises:
        MedsegError: both targets given (before anything is predicted), or a bad checkpoint or dataset.

    Returns:
        {"chosen": row, "froc": froc result, "curve_csv": path, "froc_png": path, "checkpoints": paths,
        "logged": MLflow run ids that got the tuning}.
    """
    check_targets(min_recall, max_fp_per_scan)  # before anything is predicted
    paths = [Path(p) for p in ensemble_members(checkpoint)]
    ckpts = [load_checkpoint(p) for p in paths]
    scans = validation_scans(ckpts, device, cases, region)
    cfg = ckpts[0].config
    volumes = min_volume_grid(cfg.inference.min_lesion_mm3)
    fill = cfg.inference.fill_holes
    curve = (
        sweep_brats(scans, THRESHOLDS, volumes, protocol, fill)
        if protocol
        else sweep(scans, min_volumes=volumes, rules=cfg.eval, fill=fill)
    )
    chosen = choose(curve, min_recall, max_fp_per_scan)
    warn_over_budget(chosen, max_fp_per_scan)
    result = froc(scans, connectivity=cfg.eval.connectivity)
    out = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    curve_csv, froc_png = out / "operating_curve.csv", out / "froc.png"
    write_csv(curve, curve_csv)
    plot_froc(result, froc_png)
    point = OperatingPoint(
        chosen["threshold"], chosen["min_lesion_mm3"], tuning_target(protocol, min_recall, max_fp_per_scan)
    )
    tuned = [(ckpt.with_operating_point(point), path) for path, ckpt in zip(paths, ckpts)]
    save_checkpoints(tuned)  # every member before any logging: a store that fails cannot leave the folds disagreeing
    on = tuned_on(cases, region) if cases is not None or region is not None else None
    logged = log_tuning(tuned, chosen, result, (curve_csv, froc_png), tracking_uri, on)
    return {
        "chosen": chosen,
        "froc": result,
        "curve_csv": curve_csv,
        "froc_png": froc_png,
        "checkpoints": paths,
        "logged": logged,
    }
