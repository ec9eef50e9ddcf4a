"""Losses by name (``loss.name``), with the per-lesion blob term when ``loss.blob_weight`` > 0."""

from __future__ import annotations

from torch import nn

from medseg.config.schema import LossConfig
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


def blob_weight(cfg: LossConfig) -> float:
    """Weight of the per-lesion term (0 = none): ``loss.blob_weight``, or 1 for ``focal_dice_blob``
    when it is not set. The plan's ``blob_weight`` (:func:`medseg.planning.resolve.assemble`) is
    the one call: the loss, the loaders (lesion id maps) and the step read it there."""
    if cfg.name == "focal_dice_blob" and not cfg.blob_weight:
        return 1.0
    return cfg.blob_weight


def _terms(cfg: LossConfig) -> tuple[float, float | None, float, float]:
    gamma, alpha, w_focal, w_dice = _TERMS[cfg.name]
    return (
        cfg.gamma if gamma is None else gamma,
        None if alpha == "none" else cfg.alpha if alpha is None else alpha,
        cfg.w_focal if w_focal is None else w_focal,
        cfg.w_dice if w_dice is None else w_dice,
    )


def build_loss(cfg: LossConfig, mode: Mode = "sigmoid", blob: float | None = None) -> nn.Module:
    """The loss named by ``cfg.name`` (a :class:`medseg.config.LossConfig`), plus the blob term
    (:mod:`medseg.nn.losses.blob`) with weight ``blob`` (the plan's ``blob_weight``; None = the
    rule :func:`blob_weight`, for a loss built outside a run) when it is > 0.

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
    weight = blob_weight(cfg) if blob is None else blob
    if weight > 0:
        if mode != "sigmoid":
            raise MedsegError(
                "loss.blob_weight: the blob term needs sigmoid outputs (one channel per lesion class); set it to 0"
            )
        return BlobFocalDiceLoss(weight, gamma, alpha, w_focal, w_dice, **dice)
    if not w_dice:
        return FocalLoss(gamma, alpha, mode)
    return FocalDiceLoss(mode, gamma, alpha, w_focal, w_dice, **dice)


def build_training_loss(cfg: LossConfig, blob: float, deep_supervision: bool = False) -> nn.Module:
    """The sigmoid loss the trainer optimises: :func:`build_loss` with the plan's blob weight,
    wrapped by :class:`~medseg.nn.losses.deep.DeepSupervised` when the network has deep-supervision
    heads."""
    loss = build_loss(cfg, mode="sigmoid", blob=blob)
    return DeepSupervised(loss) if deep_supervision else loss
