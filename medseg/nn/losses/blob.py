"""Blob loss: the compound loss evaluated per ground-truth lesion (Kofler et al. 2023).

For lesion ``k`` of a sample, the voxels of the *other* lesions are masked out: the region is the
background of the instance map plus lesion ``k``. On that region the same focal and Dice terms as
the global loss are computed, averaged over the lesions of the sample (and over the classes the
lesion carries), then over the samples that hold a lesion. A missed small lesion then costs as
much as a missed large one, instead of its share of the voxels.

Vectorised: the per-lesion sums (focal over the region, Dice's intersection, prediction and
target sums) are scatter-adds of the voxel values into one bin per instance id, so the cost is a
few passes over the patch whatever the number of lesions (a one-hot of K lesions would cost K
passes and K times the memory). The region of lesion ``k`` is ``background + lesion k``, so
every region sum is ``bin[0] + bin[k]``. No library has this term (MONAI has none), hence this file.

Sigmoid outputs only: a lesion of class ``c`` is scored on channel ``c``; the instance map is the
lesion components of the union of the classes (``medseg.transforms.sampling.LesionInstancesd``).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.nn.losses.compound import FocalDiceLoss
from medseg.nn.losses.functional import sigmoid_focal


def _bin_sums(values: torch.Tensor, ids: torch.Tensor, bins: int) -> torch.Tensor:
    """Sum of ``values`` (B, C, N) per instance id ``ids`` (B, 1, N) -> (B, C, bins)."""
    out = values.new_zeros(values.shape[0], values.shape[1], bins)
    return out.scatter_add_(2, ids.expand_as(values), values)


def blob_term(
    logits: torch.Tensor,
    target: torch.Tensor,
    instances: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    w_focal: float = 1.0,
    w_dice: float = 1.0,
    smooth_nr: float = 0.0,
    smooth_dr: float = 1e-5,
) -> torch.Tensor:
    """Per-lesion compound loss, averaged over lesions then samples.

    Args:
        logits: (B, C, X, Y, Z) sigmoid scores.
        target: (B, C, X, Y, Z) binary.
        instances: (B, 1, X, Y, Z) lesion ids, 0 = background (ids need not be consecutive).

    Returns:
        Scalar; 0 (with a gradient path) when no sample holds a lesion.
    """
    b, c = logits.shape[:2]
    x, t = logits.float().reshape(b, c, -1), target.float().reshape(b, c, -1)
    ids = instances.reshape(b, 1, -1).long()
    bins = int(ids.max()) + 1 if ids.numel() else 1
    if bins == 1:
        return logits.sum() * 0.0
    p = torch.sigmoid(x)
    count = _bin_sums(torch.ones_like(x[:, :1]), ids, bins)  # (B, 1, K)
    t_sum = _bin_sums(t, ids, bins)
    region = lambda s: s[..., :1] + s[..., 1:]  # noqa: E731  (background bin + lesion k's bin)
    loss = x.new_zeros(b, c, bins - 1)
    if w_focal:
        loss = loss + w_focal * region(_bin_sums(sigmoid_focal(x, t, gamma, alpha), ids, bins)) / region(count)
    if w_dice:
        inter, p_sum = _bin_sums(p * t, ids, bins), _bin_sums(p, ids, bins)
        dice = (2 * inter[..., 1:] + smooth_nr) / (region(p_sum) + t_sum[..., 1:] + smooth_dr)
        loss = loss + w_dice * (1 - dice)
    present = t_sum[..., 1:] > 0  # lesion k carries class c
    per_sample = (loss * present).sum((1, 2)) / present.sum((1, 2)).clamp(min=1)
    has = present.any(2).any(1)
    return per_sample[has].mean() if has.any() else logits.sum() * 0.0


class BlobFocalDiceLoss(nn.Module):
    """Global focal + Dice plus ``blob_weight`` times the per-lesion term (:func:`blob_term`) with
    the same focal and Dice settings. ``forward(logits, target, instances)``; without
    ``instances`` it is the global loss alone."""

    needs_instances = True  # the training step passes the patch's lesion ids

    def __init__(
        self,
        blob_weight: float = 1.0,
        gamma: float = 2.0,
        alpha: float | None = 0.25,
        w_focal: float = 1.0,
        w_dice: float = 1.0,
        smooth_nr: float = 0.0,
        smooth_dr: float = 1e-5,
        **dice_options: object,
    ) -> None:
        super().__init__()
        self.base = FocalDiceLoss(
            "sigmoid", gamma, alpha, w_focal, w_dice, smooth_nr=smooth_nr, smooth_dr=smooth_dr, **dice_options
        )
        self.blob_weight = blob_weight
        self.options = {
            "gamma": gamma,
            "alpha": alpha,
            "w_focal": w_focal,
            "w_dice": w_dice,
            "smooth_nr": smooth_nr,
            "smooth_dr": smooth_dr,
        }

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, instances: torch.Tensor | None = None
    ) -> torch.Tensor:
        """logits, target (B, C, X, Y, Z); instances (B, 1, X, Y, Z) lesion ids or None."""
        loss = self.base(logits, target)
        if instances is None or not self.blob_weight:
            return loss
        return loss + self.blob_weight * blob_term(logits, target, instances, **self.options)
