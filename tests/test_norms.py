"""The channels_last instance norm (medseg/nn/norms.py) against torch's own, value and gradient."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

from medseg.config.schema import ModelConfig
from medseg.nn.norms import LayoutInstanceNorm3d, _InstanceNorm, layout_instance_norms
from medseg.nn.registry import build_model

LAST = torch.channels_last_3d


def _input(dtype: torch.dtype, shape=(2, 3, 4, 5, 6), offset: float = 0.0) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=dtype) * 2 + offset + torch.arange(shape[1], dtype=dtype).view(1, -1, 1, 1, 1)
    return x.contiguous(memory_format=LAST).requires_grad_()


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1e4])  # 1e4: the mean dwarfs the spread, the two-pass statistics
def test_gradients_are_the_analytic_ones(affine, offset):
    x = _input(torch.float64, offset=offset)
    weight = torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5 if affine else None
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (x, weight, bias) if affine else (x,)
    assert torch.autograd.gradcheck(
        lambda *t: _InstanceNorm.apply(*t, *([None, None] if not affine else []), 1e-5), inputs
    )


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_equals_torch_instance_norm_in_float32(affine, offset):
    x = _input(torch.float32, shape=(2, 16, 12, 10, 9), offset=offset)
    ours, theirs = LayoutInstanceNorm3d(16, affine=affine), nn.InstanceNorm3d(16, affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5), theirs.bias.normal_()
        ours.load_state_dict(theirs.state_dict())
    y_ours, y_theirs = ours(x), theirs(x)
    assert y_ours.is_contiguous(memory_format=LAST)
    assert not y_theirs.is_contiguous(memory_format=LAST)  # what the layer is for: torch's comes back plain
    torch.testing.assert_close(y_ours, y_theirs, atol=2e-5, rtol=1e-5)
    grad = torch.randn_like(y_theirs)
    params = [x, *ours.parameters()], [x, *theirs.parameters()]
    for a, b in zip(torch.autograd.grad(y_ours, params[0], grad), torch.autograd.grad(y_theirs, params[1], grad)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_other_layouts_and_dtypes_take_torchs_path():
    norm = LayoutInstanceNorm3d(3)
    plain = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(norm(plain), nn.functional.instance_norm(plain))
    ours = norm(plain.contiguous(memory_format=LAST).requires_grad_())
    assert type(ours.grad_fn).__name__ == "_InstanceNormBackward"
    for other in (
        plain.requires_grad_(),
        plain.detach().to(torch.bfloat16).contiguous(memory_format=LAST).requires_grad_(),
    ):
        assert type(norm(other).grad_fn).__name__ != "_InstanceNormBackward"


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(channels=[8, 16, 32], strides=[2, 2]),
        ModelConfig(name="dynunet", kernel_sizes=[[3, 3, 3]] * 3, level_strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]]),
        ModelConfig(name="segresnet", channels=[8, 16, 32]),
    ],
    ids=["unet", "dynunet", "segresnet"],
)
def test_swapping_keeps_the_network_and_its_state_dict(cfg):
    torch.manual_seed(0)
    net = build_model(cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 1, 16, 16, 16)
    net.eval()
    expected = net(x)
    layout_instance_norms(net)
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(type(m) is LayoutInstanceNorm3d for m in norms)
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    net = net.to(memory_format=LAST)
    out = net(x.contiguous(memory_format=LAST))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile on the CPU needs a C++ compiler"
)
def test_torch_compile_traces_torchs_norm():
    """train.compile: the swapped network compiles (inductor fuses the norm itself) and gives the same output."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(channels=[8, 16, 32], strides=[2, 2], num_res_units=1))
    x = torch.randn(2, 1, 32, 32, 32)
    expected = net(x)
    net = layout_instance_norms(net).to(memory_format=LAST)
    x = x.contiguous(memory_format=LAST)
    out = torch.compile(net)(x)
    out.mean().backward()
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
