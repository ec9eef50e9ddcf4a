"""Instance normalisation that keeps the ``channels_last_3d`` layout of CPU training.

PyTorch's ``instance_norm`` reshapes its input to (1, B*C, X, Y, Z) through ``.contiguous()``: on
a ``channels_last_3d`` tensor that is a full copy, and its output comes back in the plain layout,
so the next convolution copies it back to channels_last and its backward copies the gradient
again. In medseg's float32 CPU training step (UNet 16-256, 2 x 96^3) those copies were 12 % of
the step's CPU time (``benchmarks/train_step.py``). :class:`LayoutInstanceNorm3d` computes the same
function from per-(sample, channel) sums read straight from the channels_last memory, as a
(B, voxels, C) matrix: the sums of x and x*x (and, backward, of g and g*x) are one matrix
product each, the normalisation one fused multiply-add. Its result and gradients equal
``nn.InstanceNorm3d`` to float32 rounding (tests/test_norms.py); it has no tensors of its own, so
a state dict is the same with either. Any other input (the plain layout, bf16, 4-D) takes
PyTorch's own path.

MONAI builds its networks with ``nn.InstanceNorm3d``; :func:`layout_instance_norms` swaps those
modules in place when the training step runs in channels_last_3d
(:meth:`medseg.training.precision.Precision.apply`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SPATIAL = (2, 3, 4)
# Var = E[x^2] - E[x]^2 loses digits when the mean dwarfs the spread; below this ratio of
# variance to squared mean the sums are recomputed the two-pass way (torch.var_mean).
CANCELLATION = 1e-4


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last_3d (B, C, X, Y, Z) tensor as its (B, X*Y*Z, C) matrix (a view, no copy)."""
    return t.permute(0, 2, 3, 4, 1).reshape(t.shape[0], -1, t.shape[1])


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C): per sample and channel, the sum over voxels of a*b; a, b (B, N, C).

    The diagonal of a^T b: one batched matrix product reads both once and needs no (B, N, C)
    temporary, where (a * b).sum(1) writes one.
    """
    return torch.diagonal(torch.bmm(a.transpose(1, 2), b), dim1=1, dim2=2)


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C, 1, 1, 1): a per-(sample, channel) value broadcast over the voxels."""
    return t[:, :, None, None, None]


def _stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Mean and 1/std of each (sample, channel), both (B, C), and whether the two-pass way was used."""
    rows = _rows(x)
    n = rows.shape[1]
    mean = rows.sum(1) / n
    var = _dot(rows, rows) / n - mean * mean
    exact = bool((var < CANCELLATION * mean * mean).any())
    if exact:
        var, mean = torch.var_mean(x, dim=SPATIAL, correction=0)
    return mean, (var.clamp(min=0) + eps).rsqrt(), exact


class _InstanceNorm(torch.autograd.Function):
    """y = (x - mean) * rstd * weight + bias per (sample, channel); x (B, C, X, Y, Z) channels_last_3d."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
    ) -> torch.Tensor:
        mean, rstd, exact = _stats(x, eps)
        scale = rstd if weight is None else rstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.exact, ctx.has_bias = exact, bias is not None
        return torch.addcmul(_per_channel(shift), x, _per_channel(scale))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, None]:
        x, mean, rstd, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        g = _rows(grad)
        n = g.shape[1]
        g_mean = g.sum(1) / n
        if ctx.exact:  # mean(g * xhat) from xhat itself when the sums cancel
            gx_mean = _dot(g, _rows((x - _per_channel(mean)) * _per_channel(rstd))) / n
        else:
            gx_mean = (_dot(g, _rows(x)) / n - mean * g_mean) * rstd  # mean over voxels of g * xhat
        scale = rstd if weight is None else rstd * weight
        # dx = scale * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * rstd
        coef_x = -scale * rstd * gx_mean
        const = -scale * g_mean - coef_x * mean
        dx = torch.addcmul(_per_channel(const), x, _per_channel(coef_x))
        dx.addcmul_(grad, _per_channel(scale))
        d_weight = (gx_mean * n).sum(0) if weight is not None and ctx.needs_input_grad[1] else None
        d_bias = (g_mean * n).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, d_weight, d_bias, None


class LayoutInstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (no running statistics) that keeps a channels_last_3d float32 input in
    that layout; any other input, and any under ``torch.compile``, goes to PyTorch's implementation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keeps_layout = (
            x.dim() == 5 and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last_3d)
        )
        # under train.compile, inductor writes its own fused norm
        if keeps_layout and not torch.compiler.is_compiling():
            return _InstanceNorm.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


def layout_instance_norms(net: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.InstanceNorm3d`` without running statistics in ``net`` by a
    :class:`LayoutInstanceNorm3d` with the same settings and the same affine parameters; returns ``net``."""
    for name, child in net.named_children():
        if type(child) is nn.InstanceNorm3d and not child.track_running_stats:
            swapped = LayoutInstanceNorm3d(child.num_features, child.eps, child.momentum, affine=child.affine)
            if child.affine:
                swapped.weight, swapped.bias = child.weight, child.bias
            setattr(net, name, swapped)
        else:
            layout_instance_norms(child)
    return net
