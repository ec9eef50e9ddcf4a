"""The shipped real-data configs (BraTS whole tumour from FLAIR / four channels, MS lesions) build
the network their model section names, with the topology planned for their own patch and
spacing, and take one training step at that patch size. No scan is read (a case list, yes; the
full training runs are in benchmarks/real_quality.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.config.load import load_config
from medseg.data.sources.discover import from_config
from medseg.nn.losses.registry import build_training_loss
from medseg.nn.registry import build_model
from medseg.planning.resolve import plan_of_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REAL = {"brats_wt_flair.yaml": 1, "brats_wt.yaml": 4, "ms_flair.yaml": 1}  # config -> input channels


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_network_trains_at_its_patch(name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(tmp_path))
    cfg = load_config(CONFIGS / name)
    channels = tuple(cfg.data.channels or from_config(cfg.data).channels)  # a case list names its own channels
    assert len(channels) == REAL[name]
    plan = plan_of_config(cfg, channels)
    torch.manual_seed(0)
    net = build_model(plan.network, in_channels=REAL[name], out_channels=1)
    loss_fn = build_training_loss(cfg.loss, plan.blob_weight, plan.network.deep_supervision)
    patch = plan.patch_size
    x = torch.randn(1, REAL[name], *patch)
    y = torch.zeros(1, 1, *patch)
    y[..., 20:40, 20:40, 16:32] = 1
    out = net.train()(x)
    heads = out if isinstance(out, list) else [out]
    assert heads[0].shape == (1, 1, *patch)
    if cfg.model.deep_supervision:  # nnU-Net's heads at 1/2 and 1/4 of the patch
        assert [tuple(h.shape[2:]) for h in heads[1:]] == [tuple(p // 2 for p in patch), tuple(p // 4 for p in patch)]
    loss = loss_fn(out, y)
    loss.backward()
    first = next(net.parameters())
    assert torch.isfinite(loss) and first.grad is not None and first.grad.abs().sum() > 0
    with torch.no_grad():
        assert net.eval()(x).shape == (1, 1, *patch)  # inference: the full-resolution output only
