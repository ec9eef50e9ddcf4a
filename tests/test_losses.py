"""Proofs of the loss definitions (see medseg/losses.py)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.config.schema import LossConfig
from medseg.errors import MedsegError
from medseg.nn.losses.compound import FocalDiceLoss
from medseg.nn.losses.focal import FocalLoss
from medseg.nn.losses.functional import sigmoid_focal, softmax_focal
from medseg.nn.losses.registry import LOSSES, build_loss


def test_reference_number():
    logits = torch.tensor([2.0, -1.0, 3.0, -2.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    value = FocalLoss(gamma=2.0, alpha=0.25)(logits, target).item()
    assert abs(value - 0.004706109408289194) < 1e-7


def test_gamma0_alpha_none_is_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 5, 6, 7, generator=g) * 4
    target = (torch.rand(3, 2, 5, 6, 7, generator=g) > 0.7).float()
    ours = FocalLoss(gamma=0.0, alpha=None)(logits, target)
    assert torch.allclose(ours, F.binary_cross_entropy_with_logits(logits, target), atol=1e-6)


def test_focal_below_bce_elementwise():
    logits = torch.linspace(-8, 8, 200).reshape(1, 1, 200)
    for t in (0.0, 1.0):
        target = torch.full_like(logits, t)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        assert (sigmoid_focal(logits, target, 2.0, None) <= bce + 1e-7).all()


def test_softmax_gamma0_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 5, 3, generator=g)
    labels = torch.randint(0, 4, (2, 1, 6, 5, 3), generator=g)
    ours = FocalLoss(gamma=0.0, alpha=None, mode="softmax")(logits, labels)
    assert torch.allclose(ours, F.cross_entropy(logits, labels[:, 0]), atol=1e-6)


def test_softmax_alpha_is_applied_per_class():
    # MONAI issue 8117: alpha silently dropped with softmax; here it weights the true class.
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[[0, 1, 2, 2]]])
    plain = softmax_focal(logits, labels, 0.0, None)
    weighted = softmax_focal(logits, labels, 0.0, [0.1, 0.3, 0.6])
    assert torch.allclose(weighted[0, 0], plain[0, 0] * torch.tensor([0.1, 0.3, 0.6, 0.6]))


def test_agrees_with_monai_dicefocal_in_sigmoid_case():
    # Coincide when: sigmoid activation, same gamma and alpha, per-sample Dice (batch=False),
    # smooth_nr = smooth_dr = 1e-5 (MONAI's defaults), no squared denominator, mean reduction.
    from monai.losses import DiceFocalLoss

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 8, 8, 8, generator=g) * 3
    target = (torch.rand(2, 1, 8, 8, 8, generator=g) > 0.8).float()
    ours = FocalDiceLoss("sigmoid", gamma=2.0, alpha=0.25, batch=False, smooth_nr=1e-5, smooth_dr=1e-5)
    theirs = DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25, batch=False)
    assert torch.allclose(ours(logits, target), theirs(logits, target), atol=1e-6)


@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("scale", [1.0, 1e4, -1e4])
def test_gradients_finite_extremes(fill, scale):
    logits = (torch.randn(2, 1, 6, 6, 6) * scale).requires_grad_()
    target = torch.full((2, 1, 6, 6, 6), fill)
    FocalDiceLoss("sigmoid")(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_patch_gives_no_spurious_dice_gradient():
    # With smooth_nr = 0 an all-background target gives Dice loss 1 whatever the prediction:
    # its gradient is zero, only the focal term acts.
    logits = torch.randn(1, 1, 6, 6, 6, requires_grad=True)
    loss = FocalDiceLoss("sigmoid", w_focal=0.0, smooth_nr=0.0)(logits, torch.zeros(1, 1, 6, 6, 6))
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and logits.grad.abs().max() == 0


def test_bf16_autocast_finite():
    model = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.randn(2, 1, 8, 8, 8)
    y = (torch.rand(2, 1, 8, 8, 8) > 0.9).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = FocalDiceLoss("sigmoid")(logits, y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    d=st.integers(1, 5),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    mode=st.sampled_from(["sigmoid", "softmax"]),
)
def test_any_shape(b, c, d, h, w, mode):
    logits = torch.randn(b, c, d, h, w)
    if mode == "sigmoid":
        target = (torch.rand(b, c, d, h, w) > 0.5).float()
    else:
        target = torch.randint(0, c, (b, 1, d, h, w))
    loss = FocalDiceLoss(mode, alpha=None if mode == "softmax" else 0.25)(logits, target)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_registry_by_name_and_unknown_name():
    for name in LOSSES:
        loss = build_loss(LossConfig(name=name))
        assert torch.isfinite(loss(torch.randn(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4)))
    with pytest.raises(MedsegError, match="focal_dice"):
        build_loss(LossConfig(name="tversky"))
