import csv
import shutil

import numpy as np
import pytest

from medseg.calibration.tune import MIN_VOLUMES_MM3 as MIN_VOLUMES
from medseg.calibration.tune import choose, min_volume_grid, sweep, sweep_brats
from medseg.config.schema import EvalConfig
from medseg.errors import MedsegError
from medseg.evaluation.froc import Scan, froc
from medseg.viz.plots import plot_froc
from tests.robustness.conftest import good_dataset, robust_root, tiny_checkpoint  # noqa: F401 (fixtures)


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


# ------------------------------------------------------------------------------- --max-fp-per-scan


def budget_scans(seed: int = 3, n: int = 4) -> list[Scan]:
    """``n`` scans (24^3, 1 mm3 voxels): true lesions and false blobs of 2-5 voxels a side, each at
    its own probability (0.15-0.95), so recall and FP per scan fall step by step as the threshold
    and the minimum volume rise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prob = np.zeros((24, 24, 24), np.float32)
        ref = np.zeros((24, 24, 24), bool)
        for i, (x, y) in enumerate((x, y) for x in (1, 8, 15) for y in (1, 8, 15)):
            side = int(rng.integers(2, 6))
            box = (slice(x, x + side), slice(y, y + side), slice(2 + (i % 3) * 7, 2 + (i % 3) * 7 + side))
            prob[box] = rng.uniform(0.15, 0.95)
            ref[box] = rng.random() < 0.5
        out.append(Scan(prob, ref, 1.0))
    return out


@pytest.fixture
def tuned_checkpoint(tmp_path, tiny_checkpoint, monkeypatch):
    """A copy of the tiny checkpoint (written as medseg 0.1 did, no ``target``) whose validation
    scans are :func:`budget_scans` (no network run: ``validation_scans`` is replaced)."""
    from medseg.calibration import tune

    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_checkpoint, ckpt)
    scans = budget_scans()
    monkeypatch.setattr(tune, "validation_scans", lambda *args, **kwargs: scans)
    return ckpt


def curve_rows(path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.mark.parametrize("budget", [0.25, 0.5, 1.0, 2.0])
def test_fp_budget_takes_the_max_recall_point_within_it(tuned_checkpoint, budget, capsys):
    """The chosen point meets the budget and is, by brute force over the written curve, the one
    with the highest recall among the points that meet it (ties: the higher F1); the checkpoint
    records the target and loads."""
    from medseg.calibration.tune import run_tune
    from medseg.nn.checkpoint import load_checkpoint

    res = run_tune(tuned_checkpoint, device="cpu", max_fp_per_scan=budget)
    curve = curve_rows(res["curve_csv"])
    within = [r for r in curve if r["fp_per_scan"] <= budget]
    assert within and len(within) < len(curve)  # the budget is a real constraint on this curve
    best_recall = max(r["lesion_recall"] for r in within)
    best_f1 = max(r["lesion_f1"] for r in within if r["lesion_recall"] == best_recall)
    chosen = res["chosen"]
    assert chosen["fp_per_scan"] <= budget
    assert chosen["lesion_recall"] == pytest.approx(best_recall) and chosen["lesion_f1"] == pytest.approx(best_f1)
    assert max(r["lesion_recall"] for r in curve) > best_recall or budget >= 1.0  # the budget costs recall here
    point = load_checkpoint(tuned_checkpoint).operating_point
    assert point.target == f"max_fp_per_scan<={budget:g}"
    assert (point.threshold, point.min_lesion_mm3) == (chosen["threshold"], chosen["min_lesion_mm3"])
    assert "warning" not in capsys.readouterr().err


def test_a_point_that_merges_lesions_into_one_blob_is_never_chosen():
    """Three lesions joined by a low-probability bridge: at threshold 0.2 one blob covers them all,
    which the overlap rule scores as recall 1 with no false positive. Every target skips it."""
    prob, ref = np.zeros((40, 12, 12)), np.zeros((40, 12, 12), bool)
    for x in (4, 18, 32):
        ref[x : x + 4, 4:8, 4:8] = True
    prob[2:38, 5:7, 5:7] = 0.25  # the bridge
    prob[ref] = 0.9
    prob[32:36, 4:8, 4:8] = 0.45  # the third lesion is found at 0.2 only
    prob[20:23, 1:3, 1:3] = 0.9  # a false positive at every threshold
    curve = sweep([Scan(prob, ref, 1.0)], (0.2, 0.5), (0.0,))
    blob, separate = curve
    assert (blob["merged"], blob["lesion_recall"], blob["fp_per_scan"]) == (3.0, 1.0, 1.0)
    assert separate["merged"] == 1.0 and separate["lesion_recall"] == pytest.approx(2 / 3)  # blob "wins" on paper
    for target in ({}, {"max_fp_per_scan": 3.0}, {"min_recall": 0.9}):
        assert choose(curve, **target)["threshold"] == 0.5


def test_fp_budget_differs_from_the_other_targets():
    curve = sweep(budget_scans(), min_volumes=MIN_VOLUMES)
    by_budget = choose(curve, max_fp_per_scan=0.5)
    assert by_budget["fp_per_scan"] <= 0.5
    assert choose(curve)["fp_per_scan"] > 0.5 or choose(curve) == by_budget
    with pytest.raises(MedsegError, match="two targets"):
        choose(curve, min_recall=0.5, max_fp_per_scan=1.0)


def test_unreachable_fp_budget_takes_the_fewest_fp_with_one_warning(tuned_checkpoint, monkeypatch, capsys):
    """A confident 6x6x6 false blob (216 mm3, above every minimum volume swept) in every scan: no
    point reaches 0 FP per scan; one warning line, and the point with the fewest FP is taken."""
    from medseg.calibration import tune

    scans = budget_scans()
    for s in scans:
        s.prob[15:, 15:, 15:], s.ref[15:, 15:, 15:] = 0.0, False  # the corner cleared of lesions
        s.prob[17:23, 17:23, 17:23] = 0.97
    monkeypatch.setattr(tune, "validation_scans", lambda *args, **kwargs: scans)
    res = tune.run_tune(tuned_checkpoint, device="cpu", max_fp_per_scan=0.0)
    curve = curve_rows(res["curve_csv"])
    fewest = min(r["fp_per_scan"] for r in curve)
    assert fewest >= 1.0 and res["chosen"]["fp_per_scan"] == pytest.approx(fewest)
    assert res["chosen"]["lesion_recall"] == pytest.approx(
        max(r["lesion_recall"] for r in curve if r["fp_per_scan"] == fewest)
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no operating point has at most 0 FP per scan" in warnings[0]


def test_min_recall_and_fp_budget_are_one_clear_error(tuned_checkpoint):
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from medseg.nn.checkpoint import load_checkpoint

    before = tuned_checkpoint.read_bytes()
    res = CliRunner().invoke(
        app,
        ["tune", str(tuned_checkpoint), "--min-recall", "0.9", "--max-fp-per-scan", "1", "--device", "cpu"],
        prog_name="medseg",
    )
    assert res.exit_code == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--min-recall" in errors[0] and "--max-fp-per-scan" in errors[0], res.stderr
    assert "give one of them" in errors[0] and "Traceback" not in res.stderr
    assert tuned_checkpoint.read_bytes() == before and load_checkpoint(tuned_checkpoint).operating_point.target is None


# ------------------------------------------------------------------------------- --dataset, --mask


def test_a_region_drops_the_lesions_mostly_outside_it_as_predict_does():
    """The sweep and the FROC count what ``medseg predict --mask`` keeps: the false blob outside the
    region is gone, a lesion with half of its voxels inside stays (binarize's rule)."""
    from medseg.lesions import binarize

    base = scans()[0]
    region = np.ones(base.prob.shape, bool)
    region[15:, :, :] = False  # the false blob at x 16-17 lies outside
    region[2:4, 2:6, 2:6] = False  # half of the strong lesion (x 2-5) outside: still kept
    inside = Scan(base.prob, base.ref, 1.0, region=region)
    row = sweep([inside], (0.5,), (0.0,))[0]
    assert (row["lesion_recall"], row["fp_per_scan"]) == (0.5, 0.0)
    assert sweep([base], (0.5,), (0.0,))[0]["fp_per_scan"] == 1.0
    assert binarize(base.prob, 0.5, 0, region=region).sum() == 4 * 4 * 4  # predict keeps the same lesions
    assert max(froc([inside])["fp_per_scan"]) == 0.0  # FROC candidates: the 0.6 blob is gone
    assert max(froc([base])["fp_per_scan"]) == 1.0


@pytest.mark.parametrize("masks_given", ["all", "none", "one missing"])
def test_tune_on_a_dataset_with_region_masks(tmp_path, tiny_checkpoint, good_dataset, monkeypatch, masks_given):
    """``tune --dataset D --mask M``: the point is chosen on D's cases (not the run's validation),
    each with its own region mask found by case id; a confident false blob outside the masks
    leaves the 0-FP budget reachable with them and out of reach without them. A case without its
    mask stops tune with one error line before anything is predicted, the checkpoint untouched."""
    import nibabel as nib
    from typer.testing import CliRunner

    from medseg.calibration import tune
    from medseg.cli.app import app
    from medseg.inference.predictor import Prediction

    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_checkpoint, ckpt)
    before, seen = ckpt.read_bytes(), []

    def fake_predict(lm, images):
        label = nib.load(str(images[0]).replace("imagesTr", "labelsTr").replace("_0000", ""))
        prob = np.asarray(label.dataobj, np.float32) * 0.9
        prob[18:24, 18:24, 10:16] = 0.95  # 216 voxels, 972 mm3: above every minimum volume swept
        seen.append(str(images[0]))
        return Prediction(prob, (prob >= 0.5).astype(np.uint8), label.affine)

    monkeypatch.setattr(tune, "predict_volume", fake_predict)
    masks = tmp_path / "brain"
    masks.mkdir()
    scans = sorted((good_dataset / "imagesTr").glob("*.nii.gz"))
    for img in scans[1:] if masks_given == "one missing" else scans:
        ref = nib.load(str(img))
        region = np.ones(ref.shape[:3], np.uint8)
        region[16:, 16:, 8:] = 0
        nib.save(nib.Nifti1Image(region, ref.affine), str(masks / img.name))
    args = ["tune", str(ckpt), "--dataset", str(good_dataset), "--split", "training", "--max-fp-per-scan", "0"]
    mask_args = [] if masks_given == "none" else ["--mask", str(masks)]
    res = CliRunner().invoke(app, [*args, *mask_args], prog_name="medseg")
    if masks_given == "one missing":
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.exit_code != 0 and len(errors) == 1 and "no region mask named c0" in errors[0], res.output
        assert seen == [] and ckpt.read_bytes() == before and "Traceback" not in res.output
        return
    assert res.exit_code == 0, res.output
    assert len(seen) == len(scans) == 4  # every case of D, once
    chosen = next(line for line in res.stdout.splitlines() if line.startswith("operating point"))
    with_mask = masks_given == "all"
    assert ("FP/scan 0.00" in chosen) == with_mask and "lesion recall 1.000" in chosen, chosen
    assert ("no operating point has at most 0 FP" in res.stderr) != with_mask


def test_tune_on_cases_without_labels_is_one_clear_error(tmp_path):
    from medseg.calibration.tune import labelled
    from medseg.data.case import Case

    with pytest.raises(MedsegError, match="case p1 has no label; tune --dataset needs the reference masks"):
        labelled([Case("p1", (tmp_path / "p1.nii.gz",), None)])


def test_dataset_flags_without_dataset_are_one_clear_error(tuned_checkpoint):
    from typer.testing import CliRunner

    from medseg.cli.app import app

    before = tuned_checkpoint.read_bytes()
    res = CliRunner().invoke(app, ["tune", str(tuned_checkpoint), "--split", "training"], prog_name="medseg")
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "--split: describe the cases of --dataset" in errors[0]
    assert tuned_checkpoint.read_bytes() == before
