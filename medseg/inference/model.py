"""A trained network ready for prediction, with the settings its checkpoint carries.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from medseg.config.schema import InferenceConfig
from medseg.nn.checkpoint import Checkpoint, load_checkpoint
from medseg.nn.registry import build_model
from medseg.runtime.device import pick_device
from medseg.tracking.registry import fetch_model


@dataclass
class LoadedModel:
    """A network ready for prediction with the settings its checkpoint carries."""

    model: torch.nn.Module
    spacing: tuple[float, float, float]
    normalize: str
    roi: tuple[int, int, int]
    icfg: InferenceConfig
    threshold: float
    min_lesion_mm3: float
    connectivity: int
    device: torch.device
    in_channels: int = 1
    channels: tuple[str, ...] = ()
    ct_stats: Optional[tuple[tuple[float, ...], ...]] = None
    background: str = "zero"
    classes: tuple[str, ...] = ("lesion",)


def load_model(checkpoint: Path | str, device: str = "auto", tracking_uri: str | None = None) -> LoadedModel:
    """Build the network of a checkpoint and load its weights (``weights_only=True``).

    Args:
        checkpoint: a .pt file, or an MLflow URI ``runs:/<id>/model`` / ``models:/<name>/<version>``.

    Raises:
        MedsegError: no such file or model, or not a complete medseg checkpoint.
    """
    if str(checkpoint).startswith(("runs:/", "models:/")):
        with tempfile.TemporaryDirectory(prefix="medseg-model-") as tmp:
            ckpt = load_checkpoint(fetch_model(str(checkpoint), tracking_uri, Path(tmp)))
    else:
        ckpt = load_checkpoint(checkpoint)
    return from_checkpoint(ckpt, device)


def from_checkpoint(ckpt: Checkpoint, device: str = "auto") -> LoadedModel:
    """The network of ``ckpt`` on ``device`` in eval mode, with its preprocessing and operating point."""
    cfg, pre, op = ckpt.config, ckpt.preprocess, ckpt.operating_point
    model = build_model(cfg.model, in_channels=pre.in_channels, out_channels=len(pre.classes))
    model.load_state_dict(ckpt.state_dict)
    dev = pick_device(device)
    model.to(dev).eval()
    return LoadedModel(model, pre.spacing, pre.normalize, tuple(cfg.inference.roi_size or cfg.sampling.patch_size),
                       cfg.inference, op.threshold, op.min_lesion_mm3, cfg.eval.connectivity, dev, pre.in_channels,
                       pre.channels, pre.ct_stats, pre.background, pre.classes)
