"""The training dataset's cache: draws (and in-place changes to what they return) leave it as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.config.load import load_config
from medseg.data.sources.discover import find_cases
from medseg.data.synthetic import write_dataset
from medseg.planning.resolve import plan_of_config
from medseg.training.loaders import make_datasets

CONFIG = Path(__file__).resolve().parents[1] / "medseg" / "configs" / "demo.yaml"


@pytest.mark.parametrize("preset", ["light", "nnunet"])
def test_draws_leave_the_cache_unchanged(tmp_path, preset):
    """``nnunet`` skips CacheDataset's copy of the cached volume (copy_cache False): the cache must
    still hold the same values after patches are drawn and written to in place."""
    write_dataset(tmp_path / "data", 2, seed=0, shape=(40, 40, 24))
    cfg = load_config(
        CONFIG, [f"data.dataset={tmp_path / 'data'}", f"augment.preset={preset}", "sampling.patch_size=[16,16,8]"]
    )
    cases = find_cases(cfg.data.dataset)
    train_ds, _ = make_datasets(cfg, cases, cases[:1], plan_of_config(cfg))
    before = [{k: v.clone() for k, v in item.items() if isinstance(v, torch.Tensor)} for item in train_ds._cache]
    ops = [{k: len(getattr(v, "applied_operations", [])) for k, v in item.items()} for item in train_ds._cache]
    for _ in range(10):
        for i in range(len(train_ds)):
            for patch in train_ds[i]:
                assert tuple(patch["image"].shape[1:]) == (16, 16, 8)
                for key in ("image", "label"):
                    patch[key] += 1  # an in-place step downstream
    for item, saved, count in zip(train_ds._cache, before, ops):
        for key, value in saved.items():
            assert torch.equal(item[key], value), key
        assert {k: len(getattr(v, "applied_operations", [])) for k, v in item.items()} == count
