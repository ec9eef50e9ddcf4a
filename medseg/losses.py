"""Focal, Dice and focal + Dice losses for lesion segmentation.

Definitions (Lin et al. 2017; ../DESIGN §3):

* Focal: ``FL = -a_t (1 - p_t)^g log(p_t)`` with ``p_t = p`` on positives and ``1 - p`` on
  negatives, ``a_t = a`` on positives and ``1 - a`` on negatives. ``g = 0, a = None`` is binary
  cross-entropy exactly. Softmax mode: ``p_t`` is the softmax probability of the true class and
  ``a_t`` the weight of that class (a scalar ``a`` weights every non-background class by ``a`` and
  background by ``1 - a``). Computed from logits with log-sigmoid / log-softmax.
* Soft Dice: ``1 - (2 sum(p y) + s_n) / (sum(p) + sum(y) + s_d)`` per channel, summed over the
  batch first when ``batch=True`` ("batch Dice", nnU-Net's default), else per sample and averaged.
  With ``s_n = 0`` a target without foreground gives loss 1 and gradient
  ``-2y/(..)`` = 0 w.r.t. the foreground terms: the patch teaches nothing through Dice (the focal
  term handles it) and produces no spurious gradient; with batch Dice such a patch only counts
  through the other samples of its batch.
* Compound: ``w_f * focal + w_d * dice`` with both terms on the same activation (sigmoid: one
  channel per lesion class; softmax: mutually exclusive classes incl. background).

Why focal is written here and not taken from MONAI: MONAI's ``DiceFocalLoss`` applies its
``sigmoid/softmax`` switch to the Dice term only (its focal term is always sigmoid, MONAI issue
8242), and ``FocalLoss(use_softmax=True, include_background=False)`` drops ``alpha`` (issue 8117).
The Dice term is MONAI's ``DiceLoss``, which is correct for both activations.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from medseg.errors import MedsegError

Mode = Literal["sigmoid", "softmax"]
Alpha = float | Sequence[float] | None


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = 0.25) -> torch.Tensor:
    """Element-wise sigmoid focal loss.

    Args:
        logits: (B, C, ...) raw scores, one independent channel per class.
        target: (B, C, ...) in {0, 1}.

    Returns:
        (B, C, ...) loss per element.
    """
    logits = logits.float()
    target = target.float()
    # BCE from logits, stable: x - x*y - log(sigmoid(x)); then log(1 - p_t) = log(sigmoid(-x * (2y - 1)))
    # for binary y (the form MONAI uses: fewer passes over the volume than p_t itself)
    loss = logits - logits * target - F.logsigmoid(logits)
    if gamma:
        loss = torch.exp(gamma * F.logsigmoid(-logits * (target * 2 - 1))) * loss
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss


def softmax_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: Alpha = None) -> torch.Tensor:
    """Element-wise softmax focal loss.

    Args:
        logits: (B, C, ...) raw scores, classes mutually exclusive (channel 0 = background).
        target: (B, C, ...) one-hot or (B, 1, ...) class indices.
        alpha: None, a scalar (non-background classes ``a``, background ``1 - a``) or one weight per class.

    Returns:
        (B, 1, ...) loss per voxel.
    """
    logits = logits.float()
    n = logits.shape[1]
    if target.shape[1] == 1 and n > 1:
        target = F.one_hot(target[:, 0].long(), n).movedim(-1, 1)
    target = target.float()
    log_pt = (F.log_softmax(logits, dim=1) * target).sum(1, keepdim=True)
    loss = -((1 - log_pt.exp()).clamp(min=0) ** gamma) * log_pt
    if alpha is not None:
        weights = [1 - alpha] + [alpha] * (n - 1) if isinstance(alpha, (int, float)) else list(alpha)
        if len(weights) != n:
            raise ValueError(f"alpha has {len(weights)} weights but the logits have {n} classes")
        w = torch.as_tensor(weights, dtype=loss.dtype, device=loss.device).view(1, n, *[1] * (logits.ndim - 2))
        loss = loss * (w * target).sum(1, keepdim=True)
    return loss


class FocalLoss(nn.Module):
    """Focal loss (see module docstring) with ``reduction`` in {"mean", "sum", "none"}.

    ``mean`` averages over every element (every voxel and channel); ``sum`` sums them.
    """

    def __init__(self, gamma: float = 2.0, alpha: Alpha = 0.25, mode: Mode = "sigmoid", reduction: str = "mean") -> None:
        super().__init__()
        if mode == "sigmoid" and alpha is not None and not isinstance(alpha, (int, float)):
            raise ValueError("sigmoid focal loss takes a scalar alpha (weight of positives) or None")
        self.gamma, self.alpha, self.mode, self.reduction = gamma, alpha, mode, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, C, ...), target (B, C, ...) (softmax: also (B, 1, ...) indices)."""
        fn = sigmoid_focal if self.mode == "sigmoid" else softmax_focal
        return _reduce(fn(logits, target, self.gamma, self.alpha), self.reduction)


def dice_loss(mode: Mode = "sigmoid", batch: bool = True, smooth_nr: float = 0.0, smooth_dr: float = 1e-5,
              squared_pred: bool = False, include_background: bool = True) -> DiceLoss:
    """MONAI's soft Dice on the given activation (softmax: targets as class indices or one-hot)."""
    return DiceLoss(sigmoid=mode == "sigmoid", softmax=mode == "softmax", to_onehot_y=False, batch=batch,
                    smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=squared_pred,
                    include_background=include_background)


class FocalDiceLoss(nn.Module):
    """``w_focal * focal + w_dice * dice``, both on the activation chosen by ``mode``.

    Args:
        dice_options: keyword arguments of :func:`dice_loss` (batch, smooth_nr, smooth_dr, ...).
    """

    def __init__(self, mode: Mode = "sigmoid", gamma: float = 2.0, alpha: Alpha = 0.25, w_focal: float = 1.0,
                 w_dice: float = 1.0, **dice_options: object) -> None:
        super().__init__()
        self.mode = mode
        self.focal = FocalLoss(gamma=gamma, alpha=alpha, mode=mode)
        self.dice = dice_loss(mode=mode, **dice_options)  # type: ignore[arg-type]
        self.w_focal, self.w_dice = w_focal, w_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, C, ...); target (B, C, ...) binary, or for softmax (B, 1, ...) indices."""
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.w_focal:
            loss = loss + self.w_focal * self.focal(logits, target)
        if self.w_dice:
            dice_target = target
            if self.mode == "softmax" and target.shape[1] == 1 and logits.shape[1] > 1:
                dice_target = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1)
            loss = loss + self.w_dice * self.dice(logits.float(), dice_target.float())
        return loss


def _focal_dice(cfg, mode: Mode) -> nn.Module:
    return FocalDiceLoss(mode, cfg.gamma, cfg.alpha, cfg.w_focal, cfg.w_dice, **_dice_kwargs(cfg))


def _dice_only(cfg, mode: Mode) -> nn.Module:
    return FocalDiceLoss(mode, w_focal=0.0, w_dice=1.0, **_dice_kwargs(cfg))


def _focal_only(cfg, mode: Mode) -> nn.Module:
    return FocalLoss(cfg.gamma, cfg.alpha, mode)


def _bce_dice(cfg, mode: Mode) -> nn.Module:
    # gamma = 0 and alpha = None is exactly (binary) cross-entropy.
    return FocalDiceLoss(mode, 0.0, None, cfg.w_focal, cfg.w_dice, **_dice_kwargs(cfg))


def _dice_kwargs(cfg) -> dict:
    return {"batch": cfg.batch_dice, "smooth_nr": cfg.smooth_nr, "smooth_dr": cfg.smooth_dr, "squared_pred": cfg.squared_pred}


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "focal_dice": _focal_dice,
    "dice": _dice_only,
    "focal": _focal_only,
    "bce_dice": _bce_dice,
    "ce_dice": _bce_dice,
}


def build_loss(cfg, mode: Mode = "sigmoid") -> nn.Module:
    """The loss named by ``cfg.name`` (a :class:`medseg.config.LossConfig`).

    Raises:
        MedsegError: unknown name (the message lists the available ones).
    """
    if cfg.name not in LOSSES:
        raise MedsegError(f"loss.name: unknown loss {cfg.name!r}; available: {', '.join(LOSSES)}")
    return LOSSES[cfg.name](cfg, mode)
