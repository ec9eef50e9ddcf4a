"""Networks of the registry: forward/backward on a tiny input, deep-supervision shapes and
weights, planned topologies."""

from __future__ import annotations

import pytest
import torch

from medseg.config.schema import ModelConfig
from medseg.errors import MedsegError
from medseg.nn.losses.compound import FocalDiceLoss
from medseg.nn.losses.deep import DeepSupervised, ds_weights
from medseg.nn.registry import build_model
from medseg.nn.topology import input_multiples, plan_topology

SHAPE = (32, 32, 16)


def _cfg(name: str, ds: bool = False) -> ModelConfig:
    kernels, strides = plan_topology(SHAPE, (1.0, 1.0, 2.0))
    return ModelConfig(
        name=name,
        channels=(4, 8, 16, 32) if ds else (4, 8, 16),
        strides=(2, 2, 2) if ds else (2, 2),
        deep_supervision=ds,
        ds_heads=2,
        kernel_sizes=kernels if name == "dynunet" else None,
        level_strides=strides if name == "dynunet" else None,
    )


@pytest.mark.parametrize("name", ["unet", "dynunet", "segresnet"])
def test_forward_backward(name):
    net = build_model(_cfg(name), in_channels=2, out_channels=1)
    x = torch.randn(2, 2, *SHAPE)
    out = net(x)
    assert out.shape == (2, 1, *SHAPE)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 1, *SHAPE)


@pytest.mark.parametrize("name", ["dynunet", "segresnet"])
def test_deep_supervision_heads_at_lower_resolution(name):
    net = build_model(_cfg(name, ds=True), in_channels=1, out_channels=1)
    net.train()
    outs = net(torch.randn(1, 1, *SHAPE))
    assert isinstance(outs, list) and len(outs) == 3
    assert outs[0].shape[2:] == SHAPE
    for i, o in enumerate(outs[1:], start=1):
        assert o.shape[2] == SHAPE[0] // 2**i  # x is halved at every level
    target = torch.zeros(1, 1, *SHAPE)
    target[..., 8:20, 8:20, 4:10] = 1
    loss = DeepSupervised(FocalDiceLoss("sigmoid"))(outs, target)
    loss.backward()
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, *SHAPE)).shape == (1, 1, *SHAPE)  # one output at inference


def test_nnunet_weights_and_downsampled_targets():
    assert ds_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert ds_weights(1) == [1.0]
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, out, target):
            seen.append((tuple(out.shape), tuple(target.shape), sorted(target.unique().tolist())))
            return out.new_ones(())

    outs = [torch.zeros(1, 1, 16, 16, 8), torch.zeros(1, 1, 8, 8, 4), torch.zeros(1, 1, 4, 4, 2)]
    target = torch.zeros(1, 1, 16, 16, 8)
    target[..., :8, :8, :4] = 1
    assert DeepSupervised(Spy())(outs, target).item() == pytest.approx(1.0)
    assert [s[0] for s in seen] == [s[1] for s in seen]  # each target at its output's size
    assert all(s[2] == [0.0, 1.0] for s in seen)  # nearest-neighbour: still binary


def test_planned_topology_pools_the_fine_axes_first():
    kernels, strides = plan_topology((128, 128, 32), (0.8, 0.8, 3.0))
    assert strides[0] == [1, 1, 1] and strides[1] == [2, 2, 1]  # z is 3.75x coarser: in-plane first
    assert kernels[0] == [3, 3, 1]
    assert len(kernels) == len(strides)
    cfg = ModelConfig(name="dynunet", kernel_sizes=kernels, level_strides=strides)
    assert all(n % m == 0 for n, m in zip((128, 128, 32), input_multiples(cfg)))
    iso_k, iso_s = plan_topology((64, 64, 64), (1.0, 1.0, 1.0))
    assert iso_s == [[1, 1, 1]] + [[2, 2, 2]] * 4 and iso_k == [[3, 3, 3]] * 5


def test_bad_network_settings_are_config_errors():
    with pytest.raises(MedsegError, match="unknown network"):
        build_model(ModelConfig(name="vnet"))
    with pytest.raises(MedsegError, match="deep_supervision"):
        build_model(ModelConfig(name="unet", deep_supervision=True))
