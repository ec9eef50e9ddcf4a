import numpy as np

from medseg.viz.overlays import overlays
from medseg.viz.plots import training_curve


def test_overlays_and_curve(tmp_path):
    image = np.random.default_rng(0).random((20, 20, 12)).astype(np.float32)
    ref = np.zeros((20, 20, 12), bool)
    pred = np.zeros_like(ref)
    ref[2:5, 2:5, 3:6] = True  # missed
    ref[10:12, 10:12, 8] = True  # found
    pred[10:12, 10:12, 8] = True
    pred[15:18, 2:4, 1:3] = True  # false positive
    paths = overlays("case", image, pred, ref, tmp_path)
    assert [p.name for p in paths] == ["case_missed.png", "case_false_positive.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert overlays("clean", image, ref, ref, tmp_path / "none") == []
    training_curve(
        [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5, "val_dice": 0.4}], tmp_path / "c.png"
    )
    assert (tmp_path / "c.png").stat().st_size > 1000
