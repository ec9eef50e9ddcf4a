"""Deep supervision: the loss on every output of the network, each against the target
downsampled to its resolution, weighted as nnU-Net does.

Weights ``1/2^i`` for output ``i`` (0 = full resolution), the lowest-resolution output weighted 0,
normalised to sum 1 (nnU-Net v2). Targets and lesion ids are downsampled nearest-neighbour.
Written here because MONAI's ``DeepSupervisionLoss`` passes only (output, target) to its loss,
and the blob loss also needs the patch's lesion ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def ds_weights(n: int) -> list[float]:
    """nnU-Net's deep-supervision weights for ``n`` outputs (full resolution first)."""
    w = [1 / 2**i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [v / total for v in w]


def _down(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return F.interpolate(t.float(), size=tuple(size), mode="nearest-exact").to(t.dtype)


class DeepSupervised(nn.Module):
    """Wrap a loss: a list of outputs (full resolution first) gets the weighted sum of the loss on
    each; a single tensor (no deep supervision, or eval mode) the plain loss."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss
        self.needs_instances = getattr(loss, "needs_instances", False)

    def forward(
        self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor, instances: torch.Tensor | None = None
    ) -> torch.Tensor:
        """outputs (B, C, X, Y, Z) or a list of (B, C, X/2^i, ...); target (B, C, X, Y, Z);
        instances (B, 1, X, Y, Z)."""
        extra = (lambda size: (_down(instances, size),)) if self.needs_instances else (lambda size: ())  # noqa: E731
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target, *extra(outputs.shape[2:]))
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(ds_weights(len(outputs)), outputs):
            if w:
                total = total + w * self.loss(out, _down(target, out.shape[2:]), *extra(out.shape[2:]))
        return total
