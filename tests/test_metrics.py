import numpy as np
import pytest
from monai.transforms import FillHoles

from medseg.evaluation.matching import LesionCounts, gt_lesion_hits, match_lesions
from medseg.evaluation.metrics import dice
from medseg.lesions import binarize, fill_holes, label_lesions, remove_small


def cube(mask, lo, size):
    mask[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True


def test_dice_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.random((12, 10, 8)) > 0.6, rng.random((12, 10, 8)) > 0.5
    expected = 2 * np.sum(a & b) / (a.sum() + b.sum())
    assert dice(a, b) == pytest.approx(expected)
    assert dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 3))) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_overlap_rule_counts_by_hand():
    ref = np.zeros((30, 30, 30), bool)
    pred = np.zeros_like(ref)
    cube(ref, (2, 2, 2), 4)  # found (pred touches one voxel)
    cube(ref, (15, 15, 15), 3)  # missed
    cube(ref, (22, 2, 2), 2)  # found
    pred[5, 5, 5] = True
    cube(pred, (21, 1, 1), 2)
    cube(pred, (10, 25, 25), 2)  # false positive
    c = match_lesions(pred, ref, "overlap")
    assert (c.n_ref, c.n_pred, c.found, c.tp_pred, c.fn, c.fp) == (3, 3, 2, 2, 1, 1)
    s = c.summary()
    assert s["lesion_recall"] == pytest.approx(2 / 3) and s["lesion_precision"] == pytest.approx(2 / 3)
    assert s["fp_per_scan"] == 1.0


def test_iou_and_dsc_rules():
    ref = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(ref)
    cube(ref, (0, 0, 0), 4)  # 64 voxels
    pred[0:4, 0:4, 0:2] = True  # 32 voxels inside: IoU 0.5, Dice 0.667
    cube(ref, (10, 10, 10), 4)
    pred[10:11, 10:14, 10:14] = True  # 16 voxels: IoU 0.25, Dice 0.4
    iou = match_lesions(pred, ref, "iou")
    assert (iou.found, iou.tp_pred) == (1, 1)
    assert match_lesions(pred, ref, "iou", 0.2).found == 2
    assert match_lesions(pred, ref, "dsc").found == 2
    assert match_lesions(pred, ref, "dsc", 0.5).found == 1


def test_connectivity_changes_lesion_count():
    m = np.zeros((5, 5, 5), bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # corner neighbours
    assert label_lesions(m, 26)[1] == 1 and label_lesions(m, 6)[1] == 2


def test_scans_without_lesions_never_nan():
    empty = np.zeros((6, 6, 6), bool)
    s = match_lesions(empty, empty).summary()
    assert s == {"lesion_recall": 1.0, "lesion_precision": 1.0, "lesion_f1": 1.0, "fp_per_scan": 0.0}
    fp = empty.copy()
    fp[1, 1, 1] = True
    total = LesionCounts(scans=0) + match_lesions(fp, empty) + match_lesions(empty, empty)
    assert total.summary()["fp_per_scan"] == 0.5 and total.summary()["lesion_precision"] == 0.0


def test_remove_small():
    m = np.zeros((10, 10, 10), bool)
    cube(m, (0, 0, 0), 3)
    m[8, 8, 8] = True
    out = remove_small(m, 2)
    assert out.sum() == 27 and not out[8, 8, 8]


def shell(shape=(12, 12, 12), lo=2, size=7) -> np.ndarray:
    """A hollow cube (X, Y, Z): a one-voxel wall around a cavity of (size - 2)^3 voxels."""
    m = np.zeros(shape, bool)
    cube(m, (lo, lo, lo), size)
    m[lo + 1 : lo + size - 1, lo + 1 : lo + size - 1, lo + 1 : lo + size - 1] = False
    return m


def test_fill_holes_fills_enclosed_cavities_only():
    closed = shell()
    filled = fill_holes(closed)
    assert filled.dtype == bool and filled.shape == closed.shape
    assert filled.sum() == 7**3 and (filled >= closed).all()  # cavity filled, wall kept
    cup = closed.copy()
    cup[4:7, 4:7, 8] = False  # a window in the top wall: the inside reaches the outside
    assert (fill_holes(cup) == cup).all()
    border = np.zeros((12, 12, 12), bool)
    border[0:3, 0:3, 0:3] = True
    border[0, 1, 1] = False  # a pit on the volume's border is open, not a hole
    assert (fill_holes(border) == border).all()


def test_fill_holes_uses_the_dual_connectivity():
    """A hole in the wall capped by one voxel that touches the wall only along edges: closed for a
    26-connected lesion (the cavity, the hole included, is filled), open for a 6-connected one
    (the cap is a lesion of its own and the cavity reaches the outside diagonally)."""
    capped = shell()
    capped[5, 5, 8] = False  # a hole in the top wall (z = 8) ...
    capped[5, 5, 9] = True  # ... capped above it
    assert fill_holes(capped, 26).sum() == 7**3 + 1
    assert fill_holes(capped, 18).sum() == 7**3 + 1
    assert (fill_holes(capped, 6) == capped).all()


@pytest.mark.parametrize("connectivity,hops", [(26, 1), (18, 1), (6, 3)])
def test_fill_holes_agrees_with_monai(connectivity, hops):
    """MONAI's FillHoles (background traced with ``hops`` orthogonal steps) as the oracle."""
    rng = np.random.default_rng(connectivity)
    for p in (0.3, 0.5, 0.7):
        m = rng.random((24, 20, 16)) > p
        ref = np.asarray(FillHoles(applied_labels=[1], connectivity=hops)(m.astype(np.uint8)[None]))[0] > 0
        assert np.array_equal(fill_holes(m, connectivity), ref)


def test_binarize_fills_before_the_minimum_volume():
    prob = shell().astype(np.float32) * 0.9
    wall = int(shell().sum())
    assert not binarize(prob, 0.5, wall + 1).any()  # the wall alone is under the minimum
    kept = binarize(prob, 0.5, wall + 1, fill=True)
    assert kept.sum() == 7**3 and kept.dtype == bool
    assert (binarize(prob, 0.95, 0) == 0).all()


def test_gt_lesion_hits_sizes_and_flags():
    ref = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(ref)
    cube(ref, (0, 0, 0), 2)
    cube(ref, (10, 10, 10), 3)
    pred[11, 11, 11] = True
    sizes, found = gt_lesion_hits(pred, ref)
    assert list(sizes) == [8, 27] and list(found) == [False, True]


def test_brats_rule_dilation_and_min_size_by_hand():
    ref = np.zeros((30, 30, 30), bool)
    pred = np.zeros_like(ref)
    cube(ref, (2, 2, 2), 4)  # 64 voxels; prediction 2 voxels away: found only with dilation 2
    cube(pred, (7, 2, 2), 2)
    cube(ref, (20, 20, 20), 1)  # 1-voxel GT lesion: ignored with min_voxels 5
    cube(pred, (25, 25, 25), 1)  # 1-voxel FP: ignored with min_voxels 5
    plain = match_lesions(pred, ref)
    assert (plain.n_ref, plain.found, plain.n_pred, plain.fp) == (2, 0, 2, 2)
    d1 = match_lesions(pred, ref, dilate=1)
    assert d1.found == 0
    brats = match_lesions(pred, ref, dilate=2, min_voxels=5)
    assert (brats.n_ref, brats.found, brats.n_pred, brats.tp_pred, brats.fp) == (1, 1, 1, 1, 0)


def test_dilation_grows_each_gt_lesion_on_its_own():
    """Issue 15's reproducer: three GT blocks within two voxels of each other, the prediction is
    exactly the first two. A grey dilation of the label map let the third lesion overwrite the
    others (found 2, 2, 1, 1 for dilate 0..3: an exactly predicted lesion counted as missed).
    Each lesion dilated on its own: the two predicted lesions are found at every dilation, and the
    third is found once its grown region reaches a prediction (dilate >= 2)."""
    from medseg.evaluation.matching import gt_lesion_hits, match_lesions

    g = np.zeros((20, 20, 20), bool)
    g[2, 4:8, 4:8] = g[4:8, 2, 4:8] = g[4:8, 4:8, 4:8] = True
    p = np.zeros_like(g)
    p[2, 4:8, 4:8] = p[4:8, 2, 4:8] = True
    for conn in (6, 18, 26):
        found = [list(gt_lesion_hits(p, g, connectivity=conn, dilate=d)[1]) for d in range(4)]
        assert found == [[True, True, False]] * 2 + [[True, True, True]] * 2, conn
        assert [match_lesions(p, g, connectivity=conn, dilate=d).found for d in range(4)] == [2, 2, 3, 3]
        assert all(match_lesions(p, g, connectivity=conn, dilate=d).fp == 0 for d in range(4))


def test_one_to_one_matching_counts_splits_and_merges_once():
    """A GT lesion split into two predictions, and one prediction covering two GT lesions:
    many-to-one credits every touching lesion; one-to-one (Hungarian on IoU) keeps one partner
    each, so the extra fragment is a false positive and the merged GT lesion a miss."""
    from medseg.evaluation.matching import match_lesions

    g = np.zeros((30, 30, 10), bool)
    p = np.zeros_like(g)
    g[2:10, 2:6, 2:6] = True  # split: predicted as two pieces
    p[2:5, 2:6, 2:6] = p[6:10, 2:6, 2:6] = True
    g[15:18, 15:18, 2:6] = g[15:18, 21:24, 2:6] = True  # merge: one prediction over both
    p[15:18, 15:24, 2:6] = True
    many = match_lesions(p, g)
    one = match_lesions(p, g, one_to_one=True)
    assert (many.n_ref, many.n_pred, many.found, many.tp_pred) == (3, 3, 3, 3)
    assert (one.n_ref, one.n_pred, one.found, one.tp_pred) == (3, 3, 2, 2)
    assert match_lesions(p, g, "iou", 0.3, one_to_one=True).found == 2
