"""Soft Dice (MONAI) and the focal + Dice compound on one activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from medseg.nn.losses.focal import FocalLoss
from medseg.nn.losses.functional import Alpha, Mode


def dice_loss(
    mode: Mode = "sigmoid",
    batch: bool = True,
    smooth_nr: float = 0.0,
    smooth_dr: float = 1e-5,
    squared_pred: bool = False,
    include_background: bool = True,
) -> DiceLoss:
    """MONAI's soft Dice on the given activation (softmax: targets as class indices or one-hot)."""
    return DiceLoss(
        sigmoid=mode == "sigmoid",
        softmax=mode == "softmax",
        to_onehot_y=False,
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        squared_pred=squared_pred,
        include_background=include_background,
    )


class FocalDiceLoss(nn.Module):
    """``w_focal * focal + w_dice * dice``, both on the activation chosen by ``mode``.

    Args:
        dice_options: keyword arguments of :func:`dice_loss` (batch, smooth_nr, smooth_dr, ...).
    """

    def __init__(
        self,
        mode: Mode = "sigmoid",
        gamma: float = 2.0,
        alpha: Alpha = 0.25,
        w_focal: float = 1.0,
        w_dice: float = 1.0,
        **dice_options: object,
    ) -> None:
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
