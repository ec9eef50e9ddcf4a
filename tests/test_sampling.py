"""Lesion-balanced sampling: small and big lesions are drawn about equally often."""

import numpy as np
import torch
from monai.transforms import Compose, RandCropByPosNegLabeld

from medseg.transforms.sampling import LesionIndicesd, RandLesionCropd, choose_centres


def two_lesions():
    label = np.zeros((1, 60, 60, 60), np.float32)
    label[0, 2:4, 2:7, 2:3] = 1  # 10 voxels
    label[0, 30:55, 30:50, 30:50] = 1  # 10,000 voxels
    return {"image": torch.zeros(1, 60, 60, 60), "label": torch.as_tensor(label)}


def hits(patches):
    # the lesions are 26 voxels apart: a 16^3 patch holds part of one at most
    sums = [float(p["label"].sum()) for p in patches]
    small = sum(0 < s <= 10 for s in sums)
    big = sum(s > 10 for s in sums)
    return small / len(patches), big / len(patches)


def test_lesion_balanced_sees_both_lesions_equally():
    t = Compose([LesionIndicesd("label"), RandLesionCropd(["image", "label"], (16, 16, 16), 2000, pos_fraction=1.0)])
    t.set_random_state(0)
    small, big = hits(t(two_lesions()))
    assert 0.45 < small < 0.55 and 0.45 < big < 0.55


def test_voxel_uniform_rarely_sees_the_small_lesion():
    t = RandCropByPosNegLabeld(["image", "label"], "label", (16, 16, 16), pos=1.0, neg=0.0, num_samples=2000)
    t.set_random_state(0)
    small, _ = hits(t(two_lesions()))
    assert small < 0.01


def test_size_power_favours_small_lesions():
    lesions = [np.arange(10), np.arange(100, 10100)]
    rng = np.random.RandomState(0)
    centres = choose_centres(rng, lesions, (100, 100, 100), 4000, 1.0, size_power=0.5)
    share_small = np.mean([np.ravel_multi_index(c, (100, 100, 100)) < 10 for c in centres])
    expected = 10**-0.5 / (10**-0.5 + 10000**-0.5)  # weights size^-0.5
    assert abs(share_small - expected) < 0.03


def test_no_lesions_gives_random_patches_of_the_right_size():
    d = {"image": torch.zeros(1, 20, 20, 20), "label": torch.zeros(1, 20, 20, 20)}
    t = Compose([LesionIndicesd("label"), RandLesionCropd(["image", "label"], (8, 8, 8), 5, pos_fraction=1.0)])
    out = t(d)
    assert len(out) == 5 and all(tuple(p["image"].shape) == (1, 8, 8, 8) for p in out)
    assert all("lesion_voxels" not in p for p in out)
