"""Curves: the training curve and the FROC.

Drawn on :class:`matplotlib.figure.Figure` objects, not pyplot: no global backend is switched and
no figure is left open, in scripts and notebooks alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medseg.io.write import atomic_write


def save_figure(fig: Figure, path: Path, dpi: float = 100) -> None:
    """Write ``fig`` as an image (format from ``path``'s suffix) atomically: a picture interrupted
    half-way is never left under its name."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def training_curve(history: list[dict[str, float]], path: Path) -> None:
    """Loss per epoch and the validation metrics, one PNG."""
    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
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
    save_figure(fig, path, dpi=90)


def plot_froc(result: dict, path: Path) -> None:
    """Write the FROC curve as a PNG (log FP axis)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    fps = np.maximum(np.array(result["fp_per_scan"]), 1e-3)
    ax.step(fps, result["recall"], where="post")
    ax.scatter(list(result["recall_at"]), list(result["recall_at"].values()), s=12)
    ax.set_xscale("log")
    ax.set_xlim(0.1, 10)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive lesions per scan")
    ax.set_ylabel("lesion recall")
    ax.set_title(f"FROC (CPM {result['cpm']:.3f})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
