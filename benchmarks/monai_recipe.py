"""The plain MONAI tutorial recipe (brats_segmentation_3d), as a reference at the same CPU budget.

As in MONAI's tutorial: SegResNet (blocks 1-2-2-4 down, 1-1-1 up, 16 filters, dropout 0.2),
DiceLoss (sigmoid, squared_pred, smooth_dr 1e-5), Adam 1e-4 with weight decay 1e-5 and a cosine
schedule, RandSpatialCropd (one random crop per volume) + RandFlipd on each axis +
RandScaleIntensityd / RandShiftIntensityd (0.1, p = 1), NormalizeIntensityd(nonzero, channel-wise),
validation by Dice with sliding_window_inference (overlap 0.5), threshold 0.5. Adapted only where
the budget forces it and identically to medseg's config: the same spacing, patch (crop) size, cases,
split, whole tumour as one sigmoid output, and a wall-clock budget instead of 300 epochs. Plain
MONAI calls only: nothing from medseg's training code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.networks.nets import SegResNet
from monai.transforms import (
    Compose,
    ConcatItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    Lambdad,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    Spacingd,
    SpatialPadd,
)

from medseg.data.case import Case


def _items(cases: Sequence[Case]) -> list[dict]:
    return [
        {**{f"c{i}": str(p) for i, p in enumerate(c.images)}, "label": str(c.label), "id": c.case_id} for c in cases
    ]


def _pre(n: int, spacing: Sequence[float], patch: Sequence[int], with_label: bool = True) -> list:
    keys = [f"c{i}" for i in range(n)] + (["label"] if with_label else [])
    steps = [
        LoadImaged(keys),
        EnsureChannelFirstd(keys),
        ConcatItemsd([f"c{i}" for i in range(n)], "image", dim=0),
        Orientationd(["image", *(["label"] if with_label else [])], axcodes="RAS"),
        Spacingd(
            ["image", *(["label"] if with_label else [])],
            pixdim=tuple(spacing),
            mode=("bilinear", "nearest") if with_label else "bilinear",
        ),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ]
    if with_label:
        steps.append(Lambdad("label", lambda x: (x > 0).float()))  # whole tumour / lesion
        steps.append(SpatialPadd(["image", "label"], spatial_size=tuple(patch)))
    return steps


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    s = pred.sum() + ref.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(pred, ref).sum() / s)


def train_recipe(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    spacing: Sequence[float],
    patch: Sequence[int],
    minutes: float,
    seed: int = 0,
    batch_size: int = 2,
) -> tuple[torch.nn.Module, dict]:
    """Train until the budget (checked after each epoch); returns the best-validation-Dice network."""
    torch.manual_seed(seed)
    n = len(train_cases[0].images)
    train_tf = Compose(
        _pre(n, spacing, patch)
        + [
            RandSpatialCropd(["image", "label"], roi_size=tuple(patch), random_size=False),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=1),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=2),
            RandScaleIntensityd("image", factors=0.1, prob=1.0),
            RandShiftIntensityd("image", offsets=0.1, prob=1.0),
            EnsureTyped(["image", "label"]),
        ]
    )
    train_tf.set_random_state(seed=seed)
    val_tf = Compose(_pre(n, spacing, patch) + [EnsureTyped(["image", "label"])])
    train_ds = CacheDataset(_items(train_cases), train_tf, cache_rate=1.0, num_workers=1, progress=False)
    val_ds = CacheDataset(_items(val_cases), val_tf, cache_rate=1.0, num_workers=1, progress=False)
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0)
    net = SegResNet(
        blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=16, in_channels=n, out_channels=1, dropout_prob=0.2
    )
    loss_fn = DiceLoss(smooth_nr=0, smooth_dr=1e-5, squared_pred=True, to_onehot_y=False, sigmoid=True)
    opt = torch.optim.Adam(net.parameters(), 1e-4, weight_decay=1e-5)
    start, epoch, best, best_state, sched = time.monotonic(), 0, -1.0, None, None
    while True:
        epoch += 1
        net.train()
        for batch in loader:
            opt.zero_grad()
            loss_fn(net(batch["image"]), batch["label"]).backward()
            opt.step()
            if sched is not None:
                sched.step()
        elapsed = time.monotonic() - start
        if sched is None:  # cosine over the epochs the budget allows (the tutorial: over max_epochs)
            steps = max(1, int(minutes * 60 / elapsed)) * len(loader)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        done = elapsed >= minutes * 60
        if epoch % 10 == 0 or done:
            score = _validate(net, val_ds, patch)
            if score >= best:
                best, best_state = score, {k: v.detach().clone() for k, v in net.state_dict().items()}
        if done:
            break
    net.load_state_dict(best_state)
    return net.eval(), {"epochs": epoch, "best_val_dice": best, "train_min": (time.monotonic() - start) / 60}


@torch.no_grad()
def _validate(net: torch.nn.Module, val_ds, patch: Sequence[int]) -> float:
    net.eval()
    scores = []
    for item in val_ds:
        logits = sliding_window_inference(item["image"][None], tuple(patch), 4, net, overlap=0.5)
        scores.append(_dice((torch.sigmoid(logits)[0, 0] > 0.5).numpy(), item["label"][0].numpy() > 0))
    return float(np.mean(scores))


@torch.no_grad()
def predict_recipe(net: torch.nn.Module, case: Case, spacing: Sequence[float], patch: Sequence[int]) -> np.ndarray:
    """Mask (X, Y, Z) on the case's own grid: predicted at the training spacing, then inverted
    (resampling nearest, orientation undone) with MONAI's Invertd."""
    pre = Compose(_pre(len(case.images), spacing, patch, with_label=False))
    item = pre({f"c{i}": str(p) for i, p in enumerate(case.images)})
    logits = sliding_window_inference(item["image"][None], tuple(patch), 4, net, overlap=0.5)
    item["pred"] = (torch.sigmoid(logits)[0] > 0.5).float()
    out = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(item)["pred"]
    return np.asarray(out[0]) > 0.5
