"""Augmentation presets: every transform keeps image and label aligned and labels binary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medseg.config.load import migrate
from medseg.config.plan import AUGMENTATIONS as NAMES
from medseg.config.plan import Augmentation
from medseg.config.schema import AugmentConfig
from medseg.transforms.augment import augment, crop_size, resolve
from medseg.transforms.sampling import INSTANCE_KEY, sampling_prep

PATCH = (24, 24, 16)


def _volume():
    """Image = 10 inside the lesion, 0 outside (plus a smooth ramp); label the lesion; two lesions."""
    label = np.zeros((1, 48, 48, 32), np.float32)
    label[0, 10:20, 12:22, 8:14] = 1
    label[0, 30:34, 30:34, 20:24] = 1
    ramp = np.linspace(0, 1, 48)[None, :, None, None] * np.ones((1, 48, 48, 32))
    image = (10 * label + ramp).astype(np.float32)
    return {"image": torch.as_tensor(image), "label": torch.as_tensor(label)}


def _patches(aug: Augmentation, seed: int = 0, instances: bool = True):
    data = _volume()
    crop = crop_size(PATCH, aug)
    for step in sampling_prep(crop, "lesion", instances):
        data = step(data)
    steps = augment(PATCH, crop, 6, 1.0, aug, "lesion", instances=instances)
    for step in steps:
        if hasattr(step, "set_random_state"):
            step.set_random_state(seed=seed)
    for step in steps:
        data = step(data) if isinstance(data, dict) else [step(d) for d in data]
    return data


def _only(name: str, prob: float = 1.0) -> Augmentation:
    return Augmentation({k: prob if k == name else 0.0 for k in NAMES})


@pytest.mark.parametrize("name", ["rotate", "scale", "elastic", "mirror"])
def test_spatial_transforms_keep_image_and_label_aligned(name):
    for patch in _patches(_only(name)):
        img, lab = np.asarray(patch["image"]), np.asarray(patch["label"])
        assert img.shape[1:] == lab.shape[1:] == PATCH
        assert set(np.unique(lab)) <= {0.0, 1.0}  # nearest-neighbour: still binary
        inst = np.asarray(patch[INSTANCE_KEY])
        assert np.array_equal(inst > 0, lab > 0)  # lesion ids moved with the label
        if lab.any():  # the lesion's voxels are bright in the image (bilinear blurs the rim only)
            assert np.median(img[lab > 0]) > 8 and np.median(img[(lab == 0) & (img > -1)]) < 3


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("rotate", "scale", "elastic", "mirror", "edge")])
def test_intensity_transforms_change_the_image_only(name):
    plain, changed = _patches(_only(name, 0.0)), _patches(_only(name, 1.0))
    for a, b in zip(plain, changed):
        assert np.array_equal(np.asarray(a["label"]), np.asarray(b["label"]))
    assert any(not np.allclose(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(plain, changed))


def test_spatial_crop_has_no_padded_border():
    """A rotated and scaled patch from inside a larger scan holds no zero padding."""
    aug = Augmentation({k: 1.0 if k in ("rotate", "scale") else 0.0 for k in NAMES})
    big = crop_size(PATCH, aug)
    assert all(c > p for c, p in zip(big, PATCH))
    data = {"image": torch.ones(1, 120, 120, 100), "label": torch.zeros(1, 120, 120, 100)}
    data["label"][0, 60, 60, 50] = 1
    for step in sampling_prep(big, "lesion") + augment(PATCH, big, 4, 1.0, aug, "lesion"):
        data = step(data) if isinstance(data, dict) else [step(d) for d in data]
    for patch in data:
        assert float(np.asarray(patch["image"]).min()) > 0.99


def test_presets():
    light = resolve(AugmentConfig(mirror_prob=0.3, intensity_prob=0.4))
    assert light.probs["mirror"] == 0.3 and light.jitter == 0.4 and not light.spatial
    assert resolve(AugmentConfig()).probs["mirror"] == 0.5 and resolve(AugmentConfig()).jitter == 0.0
    assert crop_size(PATCH, light) == PATCH  # light is the 0.2 pipeline: no larger crop
    nn = resolve(AugmentConfig(preset="nnunet"))
    assert nn.probs["rotate"] == 0.2 and nn.probs["lowres"] == 0.25 and nn.probs["elastic"] == 0.0 and nn.jitter == 0.0
    assert resolve(AugmentConfig(preset="nnunet", rotate_prob=0.0)).probs["rotate"] == 0.0
    assert all(v == 0 for v in resolve(AugmentConfig(preset="none")).probs.values())
    site = resolve(AugmentConfig(preset="site"))
    assert all(site.probs[k] >= nn.probs[k] for k in NAMES)  # nnunet's set, nothing taken away
    assert site.probs["bias"] > 0 and site.probs["thick"] > 0 and site.probs["edge"] > 0 and site.probs["ghost"] > 0
    assert site.probs["faint"] == nn.probs["faint"] == 0  # off unless asked for
    assert resolve(AugmentConfig(preset="nnunet", faint_prob=0.25)).probs["faint"] == 0.25
    assert site.probs["renorm"] == nn.probs["renorm"] == 0
    assert resolve(AugmentConfig(preset="nnunet", renorm_prob=0.3)).probs["renorm"] == 0.3
    assert site.probs["tail"] == nn.probs["tail"] == 0
    assert resolve(AugmentConfig(preset="nnunet", tail_prob=0.3)).probs["tail"] == 0.3
    assert site.gamma_range[0] < nn.gamma_range[0] and site.intensity_range > nn.intensity_range
    assert site.noise_variance > nn.noise_variance


def test_site_augmentation_round_trips_through_the_plan(tmp_path):
    """A plan with the site preset's ranges is read back as it was written (checkpoints carry it)."""
    from medseg.config.plan import Plan
    from medseg.config.schema import ExperimentConfig
    from medseg.planning.resolve import plan_of_config

    cfg = ExperimentConfig.model_validate(
        {
            "data": {"dataset": str(tmp_path)},
            "preprocess": {"target_spacing": [1, 1, 1], "normalize": "whitestripe", "background": "otsu"},
            "sampling": {"patch_size": [32, 32, 32]},
            "augment": {"preset": "site"},
        }
    )
    plan = plan_of_config(cfg)
    raw = plan.to_dict()
    assert Plan.from_dict(raw) == plan
    assert yaml.safe_load(yaml.safe_dump(raw)) == raw  # plain lists and numbers: plan.yaml reads back the same


def test_body_edge_erodes_image_and_labels_together():
    """Erosion zeroes the image's rim and the lesion under it; dilation adds a dark rim and leaves labels."""
    from medseg.transforms.site import RandBodyEdged

    image = torch.zeros(1, 20, 20, 20)
    image[0, 5:15, 5:15, 5:15] = 10.0
    image[0, 5:8, 5:15, 5:15] = 20.0  # a lesion on the body's edge
    label = torch.zeros(1, 20, 20, 20)
    label[0, 5:8, 5:15, 5:15] = 1
    edge = RandBodyEdged(["image", "label"], prob=1.0)
    outcomes = set()
    for seed in range(8):
        edge.set_random_state(seed)
        out = edge({"image": image, "label": label})
        body, lab = out["image"][0] != 0, out["label"][0]
        assert not bool((lab.bool() & ~body).any())  # no label outside the body
        outcomes.add(edge.erode)
        if edge.erode:
            assert int(body.sum()) < 1000 and int(lab.sum()) < int(label.sum())
        else:
            assert int(body.sum()) > 1000 and torch.equal(lab, label[0])
            assert float(out["image"][0][body & (image[0] == 0)].max()) <= 20.0
    assert outcomes == {True, False}


def test_faint_lesions_lose_contrast_to_their_surroundings_only():
    """Inside a lesion the image moves towards the tissue around it by the factor; far from it, and
    in the background, nothing changes; a patch without lesions is returned as it was."""
    from medseg.transforms.site import RandFaintLesionsd, faint_lesions

    image = torch.zeros(1, 32, 32, 32)
    image[0, 2:30, 2:30, 2:30] = 1.0  # tissue at 1, background 0
    lesion = torch.zeros(32, 32, 32, dtype=torch.bool)
    lesion[12:18, 12:18, 12:18] = True
    image[0][lesion] = 3.0
    out = faint_lesions(image, lesion, 0.6)
    assert torch.allclose(out[0][lesion], torch.full((216,), 1.0 + 0.6 * 2.0))  # contrast 2 -> 1.2 to the tissue
    far = torch.ones(32, 32, 32, dtype=torch.bool)
    far[8:22, 8:22, 8:22] = False
    assert torch.equal(out[0][far], image[0][far]) and torch.equal(out[0][image[0] == 0], image[0][image[0] == 0])
    assert torch.equal(faint_lesions(image, torch.zeros_like(lesion), 0.5), image)
    tr = RandFaintLesionsd(["image", "label"], prob=1.0)
    factors = set()
    for seed in range(6):
        tr.set_random_state(seed)
        d = tr({"image": image, "label": lesion[None].float()})
        factors.add(round(tr.factor, 3))
        assert 0.5 <= tr.factor <= 1.0
        assert torch.allclose(d["image"][0][lesion].mean(), torch.tensor(1.0 + tr.factor * 2.0))
    assert len(factors) == 6


@pytest.mark.parametrize("radius", [1, 3])
def test_separable_dilation_is_the_cube_max_pool(radius):
    from medseg.transforms.site import dilate

    mask = torch.rand(20, 18, 16) > 0.97
    cube = torch.nn.functional.max_pool3d(mask[None, None].float(), 2 * radius + 1, stride=1, padding=radius)
    assert torch.equal(dilate(mask, radius), cube[0, 0] > 0)


def test_old_flip_and_intensity_keys_move_to_augment():
    """sampling.flip_prob / intensity_prob of earlier configs become augment.mirror_prob /
    intensity_prob with the light preset they acted in, and are dropped with another (ignored there)."""
    raw = {"sampling": {"flip_prob": 0.3, "intensity_prob": 0.4}}
    assert len(migrate(raw)) == 2 and raw == {"sampling": {}, "augment": {"mirror_prob": 0.3, "intensity_prob": 0.4}}
    raw = {"sampling": {"flip_prob": 0.3, "intensity_prob": 0.4}, "augment": {"preset": "nnunet"}}
    migrate(raw)
    assert raw == {"sampling": {}, "augment": {"preset": "nnunet"}}


def test_light_preset_is_the_old_pipeline():
    """Same seed, same patches as flips + intensity jitter written out by hand with MONAI."""
    from monai.transforms import RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    from medseg.transforms.sampling import RandLesionCropd

    aug = resolve(AugmentConfig(mirror_prob=0.5, intensity_prob=0.5))
    ours = _patches(aug, seed=4, instances=False)
    data = _volume()
    for step in sampling_prep(PATCH, "lesion"):
        data = step(data)
    old = [
        RandLesionCropd(["image", "label"], PATCH, 6, 1.0, 0.0),  # medseg 0.2's augment(), in its order
        *[RandFlipd(["image", "label"], prob=0.5, spatial_axis=a) for a in range(3)],
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandShiftIntensityd("image", offsets=0.1, prob=0.5),
    ]
    for step in old:
        step.set_random_state(seed=4)  # as _patches seeds each step
    for step in old:
        data = step(data) if isinstance(data, dict) else [step(d) for d in data]
    for a, b in zip(ours, data):
        assert np.allclose(np.asarray(a["image"]), np.asarray(b["image"]))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_rotate_scale_equals_monai_affine(threads, monkeypatch):
    """One grid for image, label and lesion ids gives what MONAI's Affine gives on each key alone
    (image bilinear, the others nearest), as plain tensors of the patch size, however many shares
    the points are cut into (3 does not divide the patch: the last share is padded)."""
    from monai.data import MetaTensor
    from monai.transforms import Affine

    from medseg.transforms.augment import RandRotateScaleCropd

    step = RandRotateScaleCropd(["image", "label", INSTANCE_KEY], PATCH, 1.0, 0.5, 1.0, (0.7, 1.4))
    step.set_random_state(seed=3)
    g = torch.Generator().manual_seed(0)
    data = {
        "image": MetaTensor(torch.randn(1, 50, 50, 40, generator=g)),
        "label": MetaTensor((torch.rand(1, 50, 50, 40, generator=g) > 0.8).float()),
        INSTANCE_KEY: torch.randint(0, 5, (1, 50, 50, 40), generator=g),
    }
    state = step.R.get_state()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    out = step(data)
    step.R.set_state(state)
    step.randomize()  # the same draw again
    assert step.rotate is not None and step.scale is not None
    affine = Affine(
        rotate_params=step.rotate,
        scale_params=(step.scale,) * 3,
        spatial_size=PATCH,
        padding_mode="zeros",
        image_only=True,
    )
    for key in data:
        expected = affine(data[key], mode="bilinear" if key == "image" else "nearest")
        assert type(out[key]) is torch.Tensor and out[key].shape[1:] == PATCH
        assert torch.equal(out[key], torch.as_tensor(expected).to(out[key].dtype))


def test_plain_flip_is_monai_randflipd():
    """RandPlainFlipd draws as MONAI's RandFlipd (same seed, same decisions) and flips image, label
    and lesion ids to the same values, as plain tensors."""
    from monai.transforms import RandFlipd

    from medseg.transforms.augment import RandPlainFlipd

    g = torch.Generator().manual_seed(0)
    data = {
        "image": torch.randn(1, 8, 7, 6, generator=g),
        "label": (torch.rand(1, 8, 7, 6, generator=g) > 0.5).float(),
        INSTANCE_KEY: torch.randint(0, 4, (1, 8, 7, 6), generator=g),
    }
    flipped = 0
    for axis in range(3):
        ours, monai = (cls(list(data), prob=0.5, spatial_axis=axis) for cls in (RandPlainFlipd, RandFlipd))
        ours.set_random_state(seed=axis)
        monai.set_random_state(seed=axis)
        for _ in range(8):
            out, expected = ours(data), monai(data)
            flipped += ours._do_transform
            for key in data:
                assert type(out[key]) is torch.Tensor
                assert torch.equal(out[key], expected[key].as_tensor())
    assert 0 < flipped < 24  # both branches ran


def test_centre_cut_is_a_copy():
    """When neither rotation nor scaling fires, the patch is the exact centre and not a view of
    the (cached) input, so later in-place steps cannot change the cache."""
    from medseg.transforms.augment import RandRotateScaleCropd

    step = RandRotateScaleCropd(["image", "label"], PATCH, 0.0, 0.5, 0.0, (0.7, 1.4))
    data = {"image": torch.randn(1, 30, 30, 20), "label": (torch.rand(1, 30, 30, 20) > 0.8).float()}
    out = step(data)
    for key in data:
        assert torch.equal(out[key], data[key][:, 3:27, 3:27, 2:18])
        out[key] += 1
        assert not torch.equal(out[key], data[key][:, 3:27, 3:27, 2:18])


def test_renorm_moves_the_body_by_one_affine_map_and_keeps_the_background():
    """z -> (z - b) / a on the non-zero voxels of every channel, b and a within their ranges; 0 stays 0."""
    from medseg.transforms.site import RENORM_SCALE, RENORM_SHIFT, RandRenormd

    image = torch.zeros(2, 12, 12, 12)
    image[0, 2:10, 2:10, 2:10] = torch.linspace(-2, 3, 512).reshape(8, 8, 8)
    image[1, 2:10, 2:10, 2:10] = 1.0
    step = RandRenormd(["image"], prob=1.0)
    step.set_random_state(3)
    out = step({"image": image})["image"]
    assert torch.equal(out[:, image.abs().sum(0) == 0], torch.zeros(2, 12**3 - 512))
    body = image[0, 2:10, 2:10, 2:10].ravel()
    a, b = torch.linalg.lstsq(torch.stack([body, torch.ones_like(body)], 1), out[0, 2:10, 2:10, 2:10].ravel()[:, None])[
        0
    ]
    scale, shift = 1 / float(a), -float(b) / float(a)  # out = (z - shift) / scale
    assert RENORM_SCALE[0] <= scale <= RENORM_SCALE[1] and abs(shift) <= RENORM_SHIFT and abs(scale - 1) > 1e-3
    assert torch.allclose(out[1, 2:10, 2:10, 2:10], (1.0 - torch.tensor(shift)) / scale, atol=1e-5)
    assert torch.equal(RandRenormd(["image"], prob=0.0)({"image": image})["image"], image)


def test_tail_scale_pulls_values_above_the_median_towards_it_and_keeps_their_order():
    """Above the body's median m: z -> m + k (z - m), one k within TAIL_FACTORS; below m and the
    background unchanged; a blank patch passes through."""
    from medseg.transforms.site import TAIL_FACTORS, RandTailScaled

    image = torch.zeros(2, 12, 12, 12)
    image[0, 2:10, 2:10, 2:10] = torch.linspace(-2, 3, 512).reshape(8, 8, 8)
    image[1, 2:10, 2:10, 2:10] = torch.linspace(0.5, 1.5, 512).reshape(8, 8, 8)
    step = RandTailScaled(["image"], prob=1.0)
    step.set_random_state(5)
    out = step({"image": image})["image"]
    body = image.abs().sum(0) > 0
    assert torch.equal(out[:, ~body], torch.zeros(2, int((~body).sum())))
    ks = []
    for c in range(2):
        z, y = image[c][body], out[c][body]
        m = z.median()
        assert torch.equal(y[z <= m], z[z <= m])
        ks.append(((y[z > m] - m) / (z[z > m] - m)).mean())
        assert torch.allclose((y[z > m] - m) / (z[z > m] - m), ks[-1].expand(int((z > m).sum())), atol=1e-4)
        assert torch.all(torch.diff(y[torch.argsort(z)]) >= 0)  # the order of the tissues is kept
    assert TAIL_FACTORS[0] <= float(ks[0]) < TAIL_FACTORS[1] and abs(float(ks[0] - ks[1])) < 1e-4
    blank = {"image": torch.zeros(1, 4, 4, 4)}
    assert torch.equal(RandTailScaled(["image"], prob=1.0)(blank)["image"], blank["image"])
    assert torch.equal(RandTailScaled(["image"], prob=0.0)({"image": image})["image"], image)
