import numpy as np
import pytest

from medseg.calibration.tune import choose, min_volume_grid, sweep, sweep_brats
from medseg.config.schema import EvalConfig
from medseg.evaluation.froc import Scan, froc
from medseg.viz.plots import plot_froc


def scans():
    """Two scans: a strong lesion, a weak one (max prob 0.35) and a false blob (max prob 0.6)."""
    ref = np.zeros((20, 20, 20), bool)
    prob = np.zeros((20, 20, 20), np.float32)
    ref[2:6, 2:6, 2:6] = True
    prob[2:6, 2:6, 2:6] = 0.9
    ref[12:14, 12:14, 12:14] = True
    prob[12:14, 12:14, 12:14] = 0.35
    prob[16:18, 2:4, 2:4] = 0.6
    return [Scan(prob, ref, 1.0), Scan(np.zeros_like(prob), np.zeros_like(ref), 1.0)]


def test_sweep_and_choose():
    curve = sweep(scans(), thresholds=(0.3, 0.5, 0.7), min_volumes=(0.0,))
    by_t = {r["threshold"]: r for r in curve}
    assert by_t[0.3]["lesion_recall"] == 1.0 and by_t[0.3]["fp_per_scan"] == 0.5
    assert by_t[0.5]["lesion_recall"] == 0.5 and by_t[0.7]["fp_per_scan"] == 0.0
    assert choose(curve)["threshold"] == 0.3  # F1 0.8 beats 0.5 and 0.667
    assert choose(curve, min_recall=0.5)["threshold"] == 0.7  # fewest FP with recall >= 0.5


def test_sweep_follows_the_runs_matching_rules_and_min_volume():
    prob = np.zeros((20, 20, 20), np.float32)
    ref = np.zeros((20, 20, 20), bool)
    ref[2:10, 2:6, 2:6] = True
    prob[2:5, 2:6, 2:6] = 0.9  # covers 3/8 of the lesion: found by overlap, not at IoU >= 0.5
    scan = [Scan(prob, ref, 1.0)]
    assert sweep(scan, (0.5,), (0.0,))[0]["lesion_recall"] == 1.0
    assert sweep(scan, (0.5,), (0.0,), EvalConfig(matching="iou"))[0]["lesion_recall"] == 0.0
    assert min_volume_grid(0.0) == (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    assert {500.0, 1000.0, 2000.0} <= set(min_volume_grid(1000.0))  # a whole-tumour config's own minimum stays on offer


def test_froc_by_hand(tmp_path):
    base = scans()
    ref = base[0].ref.copy()
    ref[8:10, 16:18, 16:18] = True  # a third lesion nobody predicts
    result = froc([Scan(base[0].prob, ref, 1.0), base[1]])
    # candidates (one per peak): 0.9 (TP), 0.6 (FP), 0.35 (TP); the missed lesion enters with
    # confidence 0 and, as in picai_eval, the lowest threshold is extended to infinite FP
    assert result["recall_at"][0.125] == pytest.approx(1 / 3)  # only the 0.9 lesion without any FP
    assert result["recall_at"][0.5] == pytest.approx(2 / 3)  # one FP over two scans = 0.5 per scan
    assert result["cpm"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3 * 5) / 7)
    plot_froc(result, tmp_path / "froc.png")
    assert (tmp_path / "froc.png").stat().st_size > 1000


def test_brats_sweep_counts_tumours_as_the_challenge_and_picks_the_best_lesionwise_dice():
    """A tumour with a satellite 2 voxels away (one lesion under BraTS 2023's 3-voxel merge), a
    50-voxel GT speck far away (<= 50 mm3: not scored) and a 120-voxel false blob at p 0.6. At
    threshold 0.5 and no minimum volume: 1 tumour found, 1 false tumour, lesion-wise Dice = Dice / 2;
    a 200 mm3 minimum removes the blob (Dice / 1), so it is chosen; the overlap rule's sweep would
    count the speck as a missed lesion and the satellite as a lesion of its own."""
    ref = np.zeros((40, 40, 40), bool)
    prob = np.zeros((40, 40, 40), np.float32)
    ref[5:15, 5:15, 5:15] = True  # 1000 voxels
    ref[17:19, 5:7, 5:7] = True  # satellite, 2 voxels from the tumour
    ref[30:35, 30:32, 30:35] = True  # 50 voxels = 50 mm3: unscored
    prob[5:15, 5:15, 6:15] = 0.9  # 900 of the tumour's voxels
    prob[30:36, 2:6, 30:35] = 0.6  # 120-voxel false blob
    curve = sweep_brats([Scan(prob, ref, 1.0)], (0.5, 0.7), (0.0, 200.0), "brats2023")
    at = {(r["threshold"], r["min_lesion_mm3"]): r for r in curve}
    d = 2 * 900 / (900 + 1008)
    assert at[0.5, 0.0]["tp"] == 1 and at[0.5, 0.0]["fn"] == 0 and at[0.5, 0.0]["fp_per_scan"] == 1.0
    assert at[0.5, 0.0]["lesionwise_dice"] == pytest.approx(d / 2) and at[0.5, 0.0]["lesion_precision"] == 0.5
    assert at[0.5, 200.0]["lesionwise_dice"] == pytest.approx(d) and at[0.7, 0.0]["fp_per_scan"] == 0.0
    chosen = choose(curve)
    assert chosen["lesionwise_dice"] == pytest.approx(d) and chosen["fp_per_scan"] == 0.0
    overlap = sweep([Scan(prob, ref, 1.0)], (0.5,), (200.0,))[0]
    assert overlap["lesion_recall"] == pytest.approx(1 / 3)  # satellite and speck: two misses of their own


def test_the_sweeps_fill_holes_as_the_run_predicts():
    """A tumour predicted as a hollow shell around its true solid extent: with ``fill`` (the run's
    ``inference.fill_holes``) both sweeps score the filled mask (Dice 1), without it the shell."""
    ref = np.zeros((24, 24, 24), bool)
    ref[4:16, 4:16, 4:16] = True  # 1728 voxels
    prob = ref.astype(np.float32) * 0.9
    prob[5:15, 5:15, 5:15] = 0.1  # the predicted cavity: 1000 voxels
    shell_dice = 2 * 728 / (728 + 1728)
    plain, filled = (sweep_brats([Scan(prob, ref, 1.0)], (0.5,), (0.0,), "brats2023", fill=f)[0] for f in (False, True))
    assert plain["lesionwise_dice"] == pytest.approx(shell_dice) and filled["lesionwise_dice"] == pytest.approx(1.0)
    small = sweep([Scan(prob, ref, 1.0)], (0.5,), (1000.0,))[0]  # the 728-voxel shell is under 1000 mm3
    assert small["lesion_recall"] == 0.0
    assert sweep([Scan(prob, ref, 1.0)], (0.5,), (1000.0,), fill=True)[0]["lesion_recall"] == 1.0
