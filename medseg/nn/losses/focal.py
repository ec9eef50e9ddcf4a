"""The focal loss as a module."""

from __future__ import annotations

import torch
from torch import nn

from medseg.nn.losses.functional import (
    Alpha,
    Mode,
    reduce_loss,
    sigmoid_focal,
    softmax_focal,
)


class FocalLoss(nn.Module):
    """Focal loss (see module docstring) with ``reduction`` in {"mean", "sum", "none"}.

    ``mean`` averages over every element (every voxel and channel); ``sum`` sums them.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: Alpha = 0.25, mode: Mode = "sigmoid", reduction: str = "mean"
    ) -> None:
        super().__init__()
        if mode == "sigmoid" and alpha is not None and not isinstance(alpha, (int, float)):
            raise ValueError("sigmoid focal loss takes a scalar alpha (weight of positives) or None")
        self.gamma, self.alpha, self.mode, self.reduction = gamma, alpha, mode, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, C, ...), target (B, C, ...) (softmax: also (B, 1, ...) indices)."""
        fn = sigmoid_focal if self.mode == "sigmoid" else softmax_focal
        return reduce_loss(fn(logits, target, self.gamma, self.alpha), self.reduction)
