"""Blob loss: the per-lesion term checked by hand on a two-lesion patch, and in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config.plan import AUGMENTATIONS as NAMES
from medseg.config.plan import Augmentation
from medseg.config.schema import LossConfig
from medseg.errors import MedsegError
from medseg.nn.losses.blob import BlobFocalDiceLoss, blob_term
from medseg.nn.losses.compound import FocalDiceLoss
from medseg.nn.losses.registry import build_loss
from medseg.transforms.augment import augment
from medseg.transforms.sampling import INSTANCE_KEY, sampling_prep


def _two_lesions():
    """A 1x1x6x6x6 patch: lesion 3 is 8 voxels, lesion 7 is one voxel (ids as cropped from a case)."""
    inst = torch.zeros(1, 1, 6, 6, 6, dtype=torch.int32)
    inst[0, 0, 0:2, 0:2, 0:2] = 3
    inst[0, 0, 4, 4, 4] = 7
    target = (inst > 0).float()
    logits = torch.randn(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) * 2
    return logits, target, inst


def _by_hand(logits, target, inst, gamma=2.0, alpha=0.25):
    """Loop over the lesions with numpy: focal mean and soft Dice over background + that lesion."""
    x, y, ids = logits.numpy().ravel().astype(np.float64), target.numpy().ravel(), inst.numpy().ravel()
    p = 1 / (1 + np.exp(-x))
    pt = np.where(y == 1, p, 1 - p)
    at = np.where(y == 1, alpha, 1 - alpha)
    focal = -at * (1 - pt) ** gamma * np.log(pt)
    terms = []
    for k in (3, 7):
        region = (ids == 0) | (ids == k)
        yk = (ids == k).astype(float)
        dice = 1 - 2 * (p * yk)[region].sum() / (p[region].sum() + yk[region].sum() + 1e-5)
        terms.append(focal[region].mean() + dice)
    return float(np.mean(terms))


def test_blob_term_equals_the_per_lesion_loop():
    logits, target, inst = _two_lesions()
    assert blob_term(logits, target, inst).item() == pytest.approx(_by_hand(logits, target, inst), rel=1e-5)


def test_blob_loss_adds_the_weighted_term_to_the_global_loss():
    logits, target, inst = _two_lesions()
    base = FocalDiceLoss("sigmoid")(logits, target).item()
    loss = BlobFocalDiceLoss(blob_weight=2.0)(logits, target, inst).item()
    assert loss == pytest.approx(base + 2.0 * _by_hand(logits, target, inst), rel=1e-5)


def test_a_missed_small_lesion_costs_like_a_missed_large_one():
    """The global Dice hardly notices the one-voxel lesion; the blob term counts it as half."""
    _, target, inst = _two_lesions()
    good = torch.where(target > 0, 8.0, -8.0)
    miss_small = good.clone()
    miss_small[0, 0, 4, 4, 4] = -8.0
    glob = FocalDiceLoss("sigmoid", w_focal=0.0)
    blob = lambda x: blob_term(x, target, inst, w_focal=0.0).item()  # noqa: E731
    assert glob(miss_small, target).item() < 0.1  # global Dice: 1 voxel of 9 missed
    assert blob(miss_small) == pytest.approx(0.5, abs=0.01)  # one of two lesions lost entirely
    assert blob(good) < 0.05  # the single voxel: Dice 2/(2 + summed background probability)


def test_gradient_flows_and_no_lesion_gives_zero():
    logits, target, inst = _two_lesions()
    x = logits.clone().requires_grad_()
    blob_term(x, target, inst).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    empty = torch.zeros_like(inst)
    assert blob_term(logits, torch.zeros_like(target), empty).item() == 0.0


def test_samples_without_lesions_do_not_dilute_the_mean():
    logits, target, inst = _two_lesions()
    batch = blob_term(
        torch.cat([logits, logits]),
        torch.cat([target, torch.zeros_like(target)]),
        torch.cat([inst, torch.zeros_like(inst)]),
    )
    assert batch.item() == pytest.approx(blob_term(logits, target, inst).item(), rel=1e-6)


def test_registry_names_and_weights():
    assert isinstance(build_loss(LossConfig(name="focal_dice_blob")), BlobFocalDiceLoss)
    assert build_loss(LossConfig(name="focal_dice_blob")).blob_weight == 1.0
    assert build_loss(LossConfig(name="focal_dice", blob_weight=0.5)).blob_weight == 0.5
    assert not isinstance(build_loss(LossConfig(name="focal_dice")), BlobFocalDiceLoss)
    with pytest.raises(MedsegError, match="sigmoid"):
        build_loss(LossConfig(name="focal_dice_blob"), mode="softmax")


def test_instances_are_cropped_and_flipped_with_the_label():
    label = np.zeros((1, 24, 24, 24), np.float32)
    label[0, 2:5, 2:5, 2:5] = 1
    label[0, 15:20, 15:20, 15:20] = 1
    data = {"image": torch.randn(1, 24, 24, 24), "label": torch.as_tensor(label)}
    for step in sampling_prep((16, 16, 16), "lesion", instances=True):
        data = step(data)
    assert set(np.unique(data[INSTANCE_KEY].numpy())) == {0, 1, 2}
    flips = Augmentation({k: 0.5 if k == "mirror" else 0.0 for k in NAMES})
    for step in augment((16, 16, 16), (16, 16, 16), 4, 1.0, flips, "lesion", instances=True):
        step.set_random_state(seed=1) if hasattr(step, "set_random_state") else None
        data = step(data) if isinstance(data, dict) else [step(d) for d in data]
    for patch in data:
        inst, lab = np.asarray(patch[INSTANCE_KEY]), np.asarray(patch["label"])
        assert inst.shape == lab.shape
        assert np.array_equal(inst > 0, lab > 0)
