"""Splits, target spacing, cached datasets and loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.io import Case, read_geometry


def split_cases(cases: Sequence[Case], val_fraction: float, seed: int,
                val_ids: Optional[Sequence[str]] = None) -> tuple[list[Case], list[Case]]:
    """The named ``val_ids`` as validation, or shuffle with ``seed`` and hold out
    ``round(n * val_fraction)`` (at least 1) cases.

    Raises:
        MedsegError: fewer than 2 cases, or a named validation case that does not exist.
    """
    if len(cases) < 2:
        raise MedsegError(f"dataset has {len(cases)} case(s); training needs at least 2 (one for validation)")
    if val_ids:
        known = {c.case_id for c in cases}
        unknown = [v for v in val_ids if v not in known]
        if unknown:
            raise MedsegError(f"data.val_cases: {unknown[0]!r} is not a case of the dataset (cases: {', '.join(sorted(known)[:8])}...)")
        if len(set(val_ids)) >= len(cases):
            raise MedsegError("data.val_cases: names every case; leave at least one for training")
        return [c for c in cases if c.case_id not in val_ids], [c for c in cases if c.case_id in val_ids]
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, round(len(cases) * val_fraction)))
    val = [cases[i] for i in sorted(order[:n_val])]
    train = [cases[i] for i in sorted(order[n_val:])]
    return train, val


def ras_order(affine: np.ndarray) -> list[int]:
    """The file axis that lies along R, A and S of a (4, 4) affine (axis codes, as Orientationd)."""
    order = [0, 0, 0]
    for axis in range(3):
        order[int(np.argmax(np.abs(np.asarray(affine)[:3, axis])))] = axis
    return order


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the RAS-reoriented axes of a (4, 4) affine."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[ras_order(affine)]
    return tuple(float(s) for s in spacing)


def median_spacing(cases: Sequence[Case]) -> tuple[float, float, float]:
    """Median RAS spacing over the cases' headers (no voxels read)."""
    spacings = np.array([ras_spacing(read_geometry(c.image)[1]) for c in cases])
    return tuple(float(round(s, 4)) for s in np.median(spacings, axis=0))


def image_entry(images: Sequence[Path]) -> str | list[str]:
    """MONAI ``LoadImaged`` input: one path, or a list of per-channel paths it stacks as channels."""
    return str(images[0]) if len(images) == 1 else [str(p) for p in images]


def as_dicts(cases: Sequence[Case]) -> list[dict]:
    """MONAI data dicts ``{"image", "label", "case_id"}``."""
    return [{"image": image_entry(c.images), "label": str(c.label), "case_id": c.case_id} for c in cases]


def make_datasets(cfg, train_cases: Sequence[Case], val_cases: Sequence[Case], spacing: Sequence[float]):
    """Training dataset (deterministic part cached, random crops/flips per draw) and validation
    dataset (whole preprocessed volumes): in memory (CacheDataset) or, with ``data.cache_dir``, on
    disk (PersistentDataset, keyed by the case's files and the transforms)."""
    from monai.data import CacheDataset, PersistentDataset
    from monai.data.utils import json_hashing
    from monai.transforms import Compose

    from medseg.config import lesion_classes
    from medseg.transforms import augment, preprocess, sampling_prep

    p = cfg.preprocess
    classes = [values for _, values in lesion_classes(cfg.data)]
    pre = preprocess(spacing, p.normalize, lesion_classes=None if classes[0] is None else classes, ct_stats=p.ct_stats,
                     background=p.background)
    s = cfg.sampling
    train_tf = Compose(pre + sampling_prep(s.patch_size, s.strategy)
                       + augment(s.patch_size, s.samples_per_volume, s.pos_fraction, s.flip_prob, s.strategy, s.size_power,
                               s.intensity_prob))
    train_tf.set_random_state(seed=cfg.train.seed)
    if cfg.data.cache_dir is not None:
        cache = Path(cfg.data.cache_dir)
        # hash_transform: a changed spacing or normalisation gets a new cache entry, not a stale one
        return (PersistentDataset(as_dicts(train_cases), train_tf, cache_dir=cache / "train", hash_transform=json_hashing),
                PersistentDataset(as_dicts(val_cases), Compose(pre), cache_dir=cache / "val", hash_transform=json_hashing))
    workers = min(4, max(1, cfg.data.num_workers))
    train_ds = CacheDataset(as_dicts(train_cases), train_tf, cache_rate=cfg.data.cache_rate, num_workers=workers, progress=False)
    val_ds = CacheDataset(as_dicts(val_cases), Compose(pre), cache_rate=cfg.data.cache_rate, num_workers=workers, progress=False)
    return train_ds, val_ds


def make_loader(cfg, dataset, rank: int = 0, world: int = 1):
    """Training loader; each item yields ``samples_per_volume`` patches, collated flat. Under
    torchrun a ``DistributedSampler`` gives each rank its share of the cases (reshuffled every
    epoch with ``sampler.set_epoch``): the global batch is ``batch_size * samples_per_volume *
    world`` patches."""
    import torch
    from monai.data import DataLoader, ThreadDataLoader

    generator = torch.Generator().manual_seed(cfg.train.seed)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
    # ThreadDataLoader: the next batch is prepared in a thread while the GPU trains on this one
    cls = ThreadDataLoader if cfg.data.thread_loader else DataLoader
    return cls(dataset, batch_size=cfg.train.batch_size, shuffle=sampler is None, sampler=sampler,
               num_workers=cfg.data.num_workers, generator=generator,
               persistent_workers=False)  # re-seeded from the generator each epoch: exact resume
