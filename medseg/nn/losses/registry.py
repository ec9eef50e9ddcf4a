"""Losses by name (``loss.name``).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from medseg.config.schema import LossConfig
from medseg.errors import MedsegError
from medseg.nn.losses.compound import FocalDiceLoss
from medseg.nn.losses.focal import FocalLoss
from medseg.nn.losses.functional import Mode


def _focal_dice(cfg: LossConfig, mode: Mode) -> nn.Module:
    return FocalDiceLoss(mode, cfg.gamma, cfg.alpha, cfg.w_focal, cfg.w_dice, **_dice_kwargs(cfg))


def _dice_only(cfg: LossConfig, mode: Mode) -> nn.Module:
    return FocalDiceLoss(mode, w_focal=0.0, w_dice=1.0, **_dice_kwargs(cfg))


def _focal_only(cfg: LossConfig, mode: Mode) -> nn.Module:
    return FocalLoss(cfg.gamma, cfg.alpha, mode)


def _bce_dice(cfg: LossConfig, mode: Mode) -> nn.Module:
    # gamma = 0 and alpha = None is exactly (binary) cross-entropy.
    return FocalDiceLoss(mode, 0.0, None, cfg.w_focal, cfg.w_dice, **_dice_kwargs(cfg))


def _dice_kwargs(cfg: LossConfig) -> dict:
    return {"batch": cfg.batch_dice, "smooth_nr": cfg.smooth_nr, "smooth_dr": cfg.smooth_dr, "squared_pred": cfg.squared_pred}


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "focal_dice": _focal_dice,
    "dice": _dice_only,
    "focal": _focal_only,
    "bce_dice": _bce_dice,
    "ce_dice": _bce_dice,
}


def build_loss(cfg: LossConfig, mode: Mode = "sigmoid") -> nn.Module:
    """The loss named by ``cfg.name`` (a :class:`medseg.config.LossConfig`).

    Raises:
        MedsegError: unknown name (the message lists the available ones).
    """
    if cfg.name not in LOSSES:
        raise MedsegError(f"loss.name: unknown loss {cfg.name!r}; available: {', '.join(LOSSES)}")
    return LOSSES[cfg.name](cfg, mode)
