"""Network registry. ``build_model(cfg, in_channels, out_channels)`` returns a 3D network whose
forward maps (B, in_channels, X, Y, Z) to logits (B, out_channels, X, Y, Z); with
``model.deep_supervision`` in training mode, a list: the full-resolution logits first, then
``ds_heads`` outputs at 1/2, 1/4, ... resolution.

* ``unet``: MONAI ``UNet`` (residual units), ``channels`` per level, isotropic ``strides``.
* ``dynunet``: MONAI ``DynUNet``, nnU-Net's architecture: kernels and strides per level and axis
  (``kernel_sizes``/``level_strides``, planned from spacing and patch by
  :func:`medseg.nn.topology.plan_topology`), widths ``channels[0] * 2^level`` up to 320.
* ``segresnet``: MONAI ``SegResNetDS``, Myronenko's BraTS 2018 winner (residual encoder blocks
  1, 2, 2, 4, ...; a light decoder); ``channels[0]`` = init filters, ``len(channels)`` levels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import DynUNet, SegResNetDS, UNet
from torch import nn

from medseg.config.schema import ModelConfig
from medseg.errors import MedsegError


def _unet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    if len(cfg.strides) != len(cfg.channels) - 1:
        raise MedsegError(
            f"model.strides: needs {len(cfg.channels) - 1} entries for {len(cfg.channels)} channels, got "
            f"{len(cfg.strides)}"
        )
    if cfg.deep_supervision:
        raise MedsegError("model.deep_supervision: the unet has no low-resolution heads; use dynunet or segresnet")
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=cfg.num_res_units,
        norm=cfg.norm,
        dropout=cfg.dropout,
    )


class DeepDynUNet(DynUNet):
    """DynUNet whose deep-supervision outputs stay at their own resolution (MONAI upsamples them
    to full size and stacks them; nnU-Net trains them on downsampled targets, which is cheaper)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.output_block(self.skip_layers(x))
        if self.training and self.deep_supervision:
            return [out, *self.heads]  # filled by the decoder's supervision blocks, 1/2 first
        return out


def _dynunet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    if cfg.kernel_sizes is None or cfg.level_strides is None:
        raise MedsegError(
            "model.kernel_sizes/level_strides: not planned; train plans them (or run medseg plan and copy its "
            "network.dynunet)"
        )
    if len(cfg.kernel_sizes) != len(cfg.level_strides):
        raise MedsegError(
            f"model.kernel_sizes ({len(cfg.kernel_sizes)}) and model.level_strides ({len(cfg.level_strides)}) need "
            "one entry per level"
        )
    levels = len(cfg.level_strides)
    heads = min(cfg.ds_heads, levels - 2) if cfg.deep_supervision else 1
    return DeepDynUNet(
        3,
        in_channels,
        out_channels,
        kernel_size=[list(k) for k in cfg.kernel_sizes],
        strides=[list(s) for s in cfg.level_strides],
        upsample_kernel_size=[list(s) for s in cfg.level_strides[1:]],
        filters=[min(cfg.channels[0] * 2**i, 320) for i in range(levels)],
        dropout=cfg.dropout or None,
        norm_name=cfg.norm,
        deep_supervision=cfg.deep_supervision and levels > 2,
        deep_supr_num=max(heads, 1),
        res_block=cfg.num_res_units > 0,
    )


def _segresnet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    levels = len(cfg.channels)
    blocks_down = tuple([1, 2, 2, 4, 4, 4][:levels])
    return SegResNetDS(
        3,
        init_filters=cfg.channels[0],
        in_channels=in_channels,
        out_channels=out_channels,
        blocks_down=blocks_down,
        norm=cfg.norm,
        dsdepth=1 + (min(cfg.ds_heads, levels - 2) if cfg.deep_supervision else 0),
    )


MODELS: dict[str, Callable[..., nn.Module]] = {"unet": _unet, "dynunet": _dynunet, "segresnet": _segresnet}


def build_model(cfg: ModelConfig, in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    """Build the network named by ``cfg.name`` (a :class:`medseg.config.ModelConfig`).

    Raises:
        MedsegError: unknown name (lists the available ones) or inconsistent settings.
    """
    if cfg.name not in MODELS:
        raise MedsegError(f"model.name: unknown network {cfg.name!r}; available: {', '.join(MODELS)}")
    return MODELS[cfg.name](cfg, in_channels, out_channels)
