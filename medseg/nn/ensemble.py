"""Several trained networks as one: the mean of their probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MeanProbability(nn.Module):
    """Forward (B, C_in, X, Y, Z) -> logits (B, C, X, Y, Z) whose sigmoid is the mean of the
    members' sigmoid probabilities (a fold ensemble, as nnU-Net averages its folds' softmax).
    Returning logits keeps the sliding-window, blending and thresholding code unchanged."""

    def __init__(self, members: Sequence[nn.Module], eps: float = 1e-6) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(0)
        return torch.logit(prob.clamp(self.eps, 1 - self.eps))
