"""medseg's lesion counts and FROC against the field's evaluators (panoptica, picai_eval) on
built cases: splits, merges, corner contacts, near neighbours, empty masks, many small lesions."""

from __future__ import annotations

import numpy as np
import pytest
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    Metric,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)
from panoptica.utils.constants import CCABackend
from picai_eval import evaluate as picai_evaluate
from picai_eval.eval import evaluate_case
from scipy import ndimage

from medseg.evaluation.froc import FP_RATES, Scan, detection_map, froc, lesion_results
from medseg.evaluation.matching import match_lesions


def _cube(a: np.ndarray, corner, size) -> None:
    a[tuple(slice(c, c + s) for c, s in zip(corner, size))] = 1


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (pred, ref), binary uint8 (24, 24, 24)."""
    z = lambda: np.zeros((24, 24, 24), np.uint8)  # noqa: E731
    out = {}
    p, r = z(), z()  # one GT lesion split in two predictions
    _cube(r, (2, 2, 2), (8, 4, 4))
    _cube(p, (2, 2, 2), (3, 4, 4))
    _cube(p, (6, 2, 2), (4, 4, 4))
    out["split"] = (p, r)
    p, r = z(), z()  # two GT lesions merged by one prediction
    _cube(r, (2, 2, 2), (3, 4, 4))
    _cube(r, (6, 2, 2), (3, 4, 4))
    _cube(p, (2, 2, 2), (7, 4, 4))
    out["merge"] = (p, r)
    p, r = z(), z()  # lesions touching only at a corner are one 26-connected lesion
    _cube(r, (2, 2, 2), (3, 3, 3))
    _cube(r, (5, 5, 5), (3, 3, 3))
    _cube(p, (2, 2, 2), (3, 3, 3))
    out["corner"] = (p, r)
    p, r = z(), z()  # neighbours two voxels apart, one found exactly (the dilation reproducer's layout)
    _cube(r, (2, 4, 4), (1, 4, 4))
    _cube(r, (4, 2, 4), (4, 1, 4))
    _cube(r, (4, 4, 4), (4, 4, 4))
    _cube(p, (2, 4, 4), (1, 4, 4))
    _cube(p, (4, 2, 4), (4, 1, 4))
    out["neighbours"] = (p, r)
    p, r = z(), z()  # nothing predicted
    _cube(r, (10, 10, 10), (3, 3, 3))
    out["empty_pred"] = (p, r)
    p, r = z(), z()  # nothing to find, one false positive
    _cube(p, (10, 10, 10), (2, 2, 2))
    out["empty_ref"] = (p, r)
    out["both_empty"] = (z(), z())
    rng = np.random.default_rng(3)
    p, r = z(), z()  # many small lesions, predictions shifted by 0..1 voxels, some missing, some extra
    for i in range(12):
        c = rng.integers(1, 20, 3) // 3 * 3 + 1
        _cube(r, c, (2, 2, 2))
        if i % 4:
            _cube(p, c + rng.integers(0, 2, 3), (2, 2, 2))
    _cube(p, (21, 21, 1), (2, 2, 2))
    out["many_small"] = (p, r)
    return out


CASES = _cases()


def _panoptica(
    pred: np.ndarray, ref: np.ndarray, metric: Metric, threshold: float, many_to_one: bool
) -> tuple[int, int, int]:
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(cca_backend=CCABackend.cc3d),  # 26-connected
        instance_matcher=NaiveThresholdMatching(
            matching_metric=metric, matching_threshold=threshold, allow_many_to_one=many_to_one
        ),
        instance_metrics=[Metric.DSC, Metric.IOU],
        global_metrics=[Metric.DSC],
        verbose=False,
    )
    result = evaluator.evaluate(pred, ref, verbose=False)["ungrouped"]
    return int(result.tp), int(result.fp), int(result.fn)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    "rule,metric,threshold", [("iou", Metric.IOU, 0.5), ("dsc", Metric.DSC, 0.5), ("iou", Metric.IOU, 0.1)]
)
def test_one_to_one_counts_equal_panoptica(name, rule, metric, threshold):
    pred, ref = CASES[name]
    ours = match_lesions(pred, ref, rule, threshold, connectivity=26, one_to_one=True)
    assert (ours.tp_pred, ours.fp, ours.fn) == _panoptica(pred, ref, metric, threshold, many_to_one=False)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"merge"}))
def test_many_to_one_counts_equal_panoptica(name):
    """Many predictions may match one GT lesion (panoptica's allow_many_to_one)."""
    pred, ref = CASES[name]
    ours = match_lesions(pred, ref, "iou", 0.1, connectivity=26)
    # panoptica's tp counts GT lesions found; its fp, predictions that matched nothing
    assert (ours.found, ours.fp, ours.fn) == _panoptica(pred, ref, Metric.IOU, 0.1, many_to_one=True)


def test_a_merging_prediction_is_where_the_rules_differ():
    """panoptica lets one prediction match one GT lesion only; medseg's default rule (many-to-one
    both ways) counts both merged lesions as found, and --one-to-one gives panoptica's count."""
    pred, ref = CASES["merge"]
    assert _panoptica(pred, ref, Metric.IOU, 0.1, many_to_one=True) == (1, 0, 1)
    assert match_lesions(pred, ref, "iou", 0.1).fn == 0
    assert match_lesions(pred, ref, "iou", 0.1, one_to_one=True).fn == 1


def _probabilities() -> list[tuple[np.ndarray, np.ndarray]]:
    """(probability map, reference) pairs: lesions with peaks of several heights, a merged blob of
    confident false positives touching a lesion, empty scans."""
    rng = np.random.default_rng(0)
    scans = []
    for _name, (pred, ref) in sorted(CASES.items()):
        prob = pred.astype(np.float32) * rng.uniform(0.3, 0.99)
        prob[(pred > 0) & (rng.random(pred.shape) < 0.3)] *= 0.7  # uneven inside a lesion
        scans.append((prob, ref))
    prob, ref = np.zeros((24, 24, 24), np.float32), np.zeros((24, 24, 24), np.uint8)
    _cube(ref, (4, 4, 4), (4, 4, 4))
    prob[4:8, 4:8, 4:8] = 0.6
    for k, x in enumerate(range(8, 22, 2)):  # a ridge of separate peaks joined by a 0.2 floor
        prob[x, 5, 5:7] = 0.95 - 0.05 * k
        prob[x + 1, 5, 5:7] = 0.2
    scans.append((prob, ref))
    return scans


def _noisy_maps():
    """Smoothed noise: many faint blobs and peaks of every height, some above 0.05 everywhere."""
    rng = np.random.default_rng(5)
    for sigma, scale in ((1.0, 0.6), (2.0, 1.0), (0.7, 0.3)):
        field = ndimage.gaussian_filter(rng.random((20, 20, 16)), sigma)
        field = (field - field.min()) / (field.max() - field.min())
        yield (field**3 * scale).astype(np.float32)


def test_detection_maps_equal_picai_extraction():
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        from report_guided_annotation import extract_lesion_candidates
    for prob in [p for p, _ in _probabilities()] + list(_noisy_maps()):
        prob = np.where(prob >= 0.05, prob, 0).astype(np.float32)  # medseg's floor, applied to both
        theirs, _, _ = extract_lesion_candidates(
            prob, threshold="dynamic", num_lesions_to_extract=50, min_voxels_detection=0
        )
        assert np.array_equal(detection_map(prob), theirs.astype(np.float32))


def test_candidates_and_matching_equal_picai_per_case():
    for prob, ref in _probabilities():
        det = detection_map(prob)
        picai_list, *_ = evaluate_case(det, ref)
        ours = lesion_results(det, ref)
        assert sorted(ours) == sorted((int(t), float(c)) for t, c, _ in picai_list)


def test_froc_equals_picai_eval():
    scans = _probabilities()
    dets = [detection_map(prob) for prob, _ in scans]
    metrics = picai_evaluate(y_det=dets, y_true=[ref for _, ref in scans], num_parallel_calls=1)
    ours = froc([Scan(prob, ref, 1.0) for prob, ref in scans])
    for rate in FP_RATES:
        assert ours["recall_at"][rate] == pytest.approx(metrics.lesion_TPR_at_FPR(rate))
    finite = np.isfinite(metrics.lesion_FPR)
    assert np.allclose(ours["fp_per_scan"], metrics.lesion_FPR[finite])
    assert np.allclose(ours["recall"], metrics.lesion_TPR[finite])


def test_a_merged_blob_of_false_positives_gives_one_candidate_per_peak():
    prob, ref = _probabilities()[-1]
    results = lesion_results(detection_map(prob), ref)
    assert sum(1 for t, c in results if t == 0) >= 5  # the ridge's peaks are separate false positives
    assert [t for t, c in results if t == 1 and c > 0] == [1]  # the lesion, found once
