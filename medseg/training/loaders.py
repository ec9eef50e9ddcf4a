"""Cached training/validation datasets and the training loader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import (
    CacheDataset,
    DataLoader,
    Dataset,
    PersistentDataset,
    ThreadDataLoader,
)
from monai.data.utils import json_hashing, pickle_hashing
from monai.transforms import Compose
from torch.utils.data.distributed import DistributedSampler

from medseg.config.plan import Plan
from medseg.config.schema import ExperimentConfig
from medseg.data.case import Case, as_dicts
from medseg.transforms.augment import augment
from medseg.transforms.preprocess import preprocess
from medseg.transforms.sampling import sampling_prep


def make_datasets(
    cfg: ExperimentConfig, train_cases: Sequence[Case], val_cases: Sequence[Case], plan: Plan
) -> tuple[Dataset, Dataset]:
    """Training dataset (deterministic part cached, random crops/flips per draw) and validation
    dataset (whole preprocessed volumes): in memory (CacheDataset) or, with ``data.cache_dir``, on
    disk (PersistentDataset, keyed by the case's files, their sizes and modification times
    (:func:`file_state_hashing`) and the transforms). Sizes, preprocessing, augmentation and
    whether lesion id maps are made (the blob loss) come from ``plan``."""
    p, classes, s = plan.preprocess, list(plan.class_values), cfg.sampling
    pre = preprocess(p, lesion_classes=None if classes[0] is None else classes)
    draws = augment(
        plan.patch_size,
        plan.crop_size,
        plan.samples_per_volume,
        s.pos_fraction,
        plan.augmentation,
        s.strategy,
        s.size_power,
        plan.instances,
    )
    train_tf = Compose(pre + sampling_prep(plan.crop_size, s.strategy, plan.instances) + draws)
    train_tf.set_random_state(seed=cfg.train.seed)
    if cfg.data.cache_dir is not None:
        cache = Path(cfg.data.cache_dir)
        # hash_transform: a changed spacing or normalisation gets a new cache entry, not a stale one
        return (
            PersistentDataset(
                as_dicts(train_cases),
                train_tf,
                cache_dir=cache / "train",
                hash_func=file_state_hashing,
                hash_transform=json_hashing,
            ),
            PersistentDataset(
                as_dicts(val_cases),
                Compose(pre),
                cache_dir=cache / "val",
                hash_func=file_state_hashing,
                hash_transform=json_hashing,
            ),
        )
    workers = min(4, max(1, cfg.data.num_workers))
    # copy_cache: CacheDataset deep-copies the cached volume before every draw (1.5-2 ms for a
    # 132x132x118 crop); with spatial augmentation RandRotateScaleCropd reads the draw's views
    # and writes new patches, so nothing downstream can touch the cache and the copy is skipped
    train_ds = CacheDataset(
        as_dicts(train_cases),
        train_tf,
        cache_rate=cfg.data.cache_rate,
        num_workers=workers,
        progress=False,
        copy_cache=not plan.augmentation.spatial,
    )
    val_ds = CacheDataset(
        as_dicts(val_cases), Compose(pre), cache_rate=cfg.data.cache_rate, num_workers=workers, progress=False
    )
    return train_ds, val_ds


def file_state_hashing(item: dict[str, Any]) -> bytes:
    """The PersistentDataset key of a data dict: MONAI's ``pickle_hashing`` of the dict with each
    of its files' (path, size, modification time in ns) added. MONAI keys on the dict alone, i.e.
    on the paths, so a scan or label replaced in place would be served from the stale entry."""
    files = [str(p) for key in ("image", "label") for p in _as_list(item.get(key))]
    return pickle_hashing({**item, "file_state": [(p, *_file_state(p)) for p in files]})


def _as_list(entry: Any) -> list:
    """A data dict's ``image`` (one path or one per channel) or ``label`` entry as a list."""
    if entry is None:
        return []
    return list(entry) if isinstance(entry, (list, tuple)) else [entry]


def _file_state(path: str) -> tuple[int, int] | tuple[None, None]:
    """(size, mtime in ns) of ``path``; (None, None) when it cannot be read (the loader then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def make_loader(cfg: ExperimentConfig, dataset: Dataset, rank: int = 0, world: int = 1) -> DataLoader:
    """Training loader; each item yields ``samples_per_volume`` patches, collated flat. Under
    torchrun a ``DistributedSampler`` gives each rank its share of the cases (reshuffled every
    epoch with ``sampler.set_epoch``): the global batch is ``batch_size * samples_per_volume *
    world`` patches."""
    generator = torch.Generator().manual_seed(cfg.train.seed)
    sampler = None
    if world > 1:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
    # ThreadDataLoader: the next batch is prepared in a thread while the GPU trains on this one
    cls = ThreadDataLoader if cfg.data.thread_loader else DataLoader
    return cls(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        generator=generator,
        persistent_workers=False,
    )  # re-seeded from the generator each epoch: exact resume
