"""Element-wise focal losses from logits (pure functions); see :mod:`medseg.nn.losses` for the definitions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Mode = Literal["sigmoid", "softmax"]


Alpha = float | Sequence[float] | None


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def sigmoid_focal(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = 0.25
) -> torch.Tensor:
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
