"""Network registry. ``build_model(cfg, in_channels, out_channels)`` returns a 3D network whose
forward maps (B, in_channels, X, Y, Z) to logits (B, out_channels, X, Y, Z).
"""

from __future__ import annotations

from typing import Callable

from monai.networks.nets import UNet
from torch import nn

from medseg.config.schema import ModelConfig
from medseg.errors import MedsegError


def _unet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    if len(cfg.strides) != len(cfg.channels) - 1:
        raise MedsegError(f"model.strides: needs {len(cfg.channels) - 1} entries for {len(cfg.channels)} channels, got {len(cfg.strides)}")
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=cfg.channels,
                strides=cfg.strides, num_res_units=cfg.num_res_units, norm=cfg.norm, dropout=cfg.dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {"unet": _unet}


def build_model(cfg: ModelConfig, in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    """Build the network named by ``cfg.name`` (a :class:`medseg.config.ModelConfig`).

    Raises:
        MedsegError: unknown name (lists the available ones) or inconsistent settings.
    """
    if cfg.name not in MODELS:
        raise MedsegError(f"model.name: unknown network {cfg.name!r}; available: {', '.join(MODELS)}")
    return MODELS[cfg.name](cfg, in_channels, out_channels)
