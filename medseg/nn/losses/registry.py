"""Losses by name (``loss.name``), with the per-lesion blob term when ``loss.blob_weight`` > 0."""

from __future__ import annotations

from torch import nn

from medseg.config.schema import LossConfig, blob_weight
from medseg.errors import MedsegError
from medseg.nn.losses.blob import BlobFocalDiceLoss
from medseg.nn.losses.compound import FocalDiceLoss
from medseg.nn.losses.deep import DeepSupervised
from medseg.nn.losses.focal import FocalLoss
from medseg.nn.losses.functional import Mode

# name -> (gamma, alpha, w_focal, w_dice); None = the config's value. gamma 0 and alpha None is
# exactly (binary) cross-entropy.
_TERMS: dict[str, tuple] = {
    "focal_dice": (None, None, None, None),
    "focal_dice_blob": (None, None, None, None),
    "dice": (None, None, 0.0, 1.0),
    "focal": (None, None, None, 0.0),
    "bce_dice": (0.0, "none", None, None),
    "ce_dice": (0.0, "none", None, None),
}
LOSSES = tuple(_TERMS)


def _terms(cfg: LossConfig) -> tuple[float, float | None, float, float]:
    gamma, alpha, w_focal, w_dice = _TERMS[cfg.name]
    return (
        cfg.gamma if gamma is None else gamma,
        None if alpha == "none" else cfg.alpha if alpha is None else alpha,
        cfg.w_focal if w_focal is None else w_focal,
        cfg.w_dice if w_dice is None else w_dice,
    )


def build_loss(cfg: LossConfig, mode: Mode = "sigmoid") -> nn.Module:
    """The loss named by ``cfg.name`` (a :class:`medseg.config.LossConfig`), plus the blob term
    (:mod:`medseg.nn.losses.blob`) when :func:`medseg.config.schema.blob_weight` is > 0.

    Raises:
        MedsegError: unknown name (the message lists the available ones), or a blob term asked
        for a softmax output.
    """
    if cfg.name not in _TERMS:
        raise MedsegError(f"loss.name: unknown loss {cfg.name!r}; available: {', '.join(LOSSES)}")
    gamma, alpha, w_focal, w_dice = _terms(cfg)
    dice = {
        "batch": cfg.batch_dice,
        "smooth_nr": cfg.smooth_nr,
        "smooth_dr": cfg.smooth_dr,
        "squared_pred": cfg.squared_pred,
    }
    weight = blob_weight(cfg)
    if weight > 0:
        if mode != "sigmoid":
            raise MedsegError(
                "loss.blob_weight: the blob term needs sigmoid outputs (one channel per lesion class); set it to 0"
            )
        return BlobFocalDiceLoss(weight, gamma, alpha, w_focal, w_dice, **dice)
    if not w_dice:
        return FocalLoss(gamma, alpha, mode)
    return FocalDiceLoss(mode, gamma, alpha, w_focal, w_dice, **dice)


def build_training_loss(cfg: LossConfig, deep_supervision: bool = False) -> nn.Module:
    """The sigmoid loss the trainer optimises: :func:`build_loss`, wrapped by
    :class:`~medseg.nn.losses.deep.DeepSupervised` when the network has deep-supervision heads."""
    loss = build_loss(cfg, mode="sigmoid")
    return DeepSupervised(loss) if deep_supervision else loss
