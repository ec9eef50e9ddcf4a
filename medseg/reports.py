"""Pictures for the MLflow run: the training curve and overlays of the worst validation cases
(an axial slice through the largest missed lesion and one through the largest false positive,
ground truth in green, prediction in red)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.metrics import label_lesions


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curve(history: list[dict[str, float]], path: Path) -> None:
    """Loss per epoch and the validation metrics, one PNG."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([h["epoch"] for h in history], [h["train_loss"] for h in history])
    a.set_xlabel("epoch")
    a.set_ylabel("train_loss")
    for key in ("val_dice", "val_lesion_recall", "val_lesion_precision", "val_lesion_recall_small"):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if pts:
            b.plot(*zip(*pts), marker="o", label=key)
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _largest_unmatched(mask: np.ndarray, other: np.ndarray) -> int | None:
    """Axial (z) index through the largest component of ``mask`` that ``other`` does not touch."""
    labels, n = label_lesions(mask)
    best, z = 0, None
    for i in range(1, n + 1):
        comp = labels == i
        size = int(comp.sum())
        if size > best and not (comp & other).any():
            best, z = size, int(np.round(np.nonzero(comp)[2].mean()))
    return z


def overlays(case_id: str, image: np.ndarray, pred: np.ndarray, ref: np.ndarray, out_dir: Path) -> list[Path]:
    """PNGs through the largest missed lesion and the largest false positive of one case
    (volumes (X, Y, Z) on the model grid); nothing when there is neither."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, z in (("missed", _largest_unmatched(ref, pred)), ("false_positive", _largest_unmatched(pred, ref))):
        if z is None:
            continue
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
        for mask, colour in ((ref, "lime"), (pred, "red")):
            if mask[:, :, z].any():
                ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors=colour, linewidths=1)
        ax.set_title(f"{case_id}: largest {kind.replace('_', ' ')} (z={z})", fontsize=9)
        ax.axis("off")
        path = out_dir / f"{case_id}_{kind}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
