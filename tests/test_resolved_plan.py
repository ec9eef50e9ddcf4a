"""The resolved plan: every effective setting computed in one place and read from the plan by
every consumer (loaders, validation, predict, the network and the loss)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import torch

from medseg.config.load import load_config
from medseg.config.plan import Plan
from medseg.data.synthetic import write_dataset
from medseg.inference.model import LoadedModel
from medseg.nn.checkpoint import Checkpoint, OperatingPoint, load_checkpoint, save_checkpoint
from medseg.planning.resolve import plan_of_config
from medseg.training.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "medseg" / "configs" / "demo.yaml"

# rule -> the only modules allowed to call it (besides the module defining it)
PRODUCERS = {
    "crop_size": {"medseg/planning/resolve.py"},
    "plan_topology": {"medseg/planning/proposal.py"},
    "with_topology": {"medseg/planning/resolve.py"},
    "input_multiples": {"medseg/planning/resolve.py"},
    "blob_weight": {"medseg/planning/resolve.py"},
    "resolve_augmentation": {"medseg/planning/resolve.py"},
    "patches_per_step": {"medseg/planning/resolve.py", "medseg/cli/commands/data.py"},
    "make_plan": {"medseg/planning/resolve.py", "medseg/cli/commands/data.py"},
}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def test_each_rule_is_called_by_its_producer_only():
    for path in sorted((ROOT / "medseg").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        for rule in _calls(path) & set(PRODUCERS):
            assert rule in defined or rel in PRODUCERS[rule], f"{rel} computes {rule}(): read it from the plan"


def test_no_module_redefaults_the_window():
    """``inference.roi_size or sampling.patch_size`` is written once: in the plan's producer."""
    hits = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "medseg").rglob("*.py")
        if "roi_size or" in p.read_text().replace("\n", " ")
    ]
    assert hits == ["medseg/planning/resolve.py"]


def _config(tmp_path, *overrides):
    write_dataset(tmp_path / "data", 3, seed=0, shape=(40, 40, 24))
    return load_config(CONFIG, [f"data.dataset={tmp_path / 'data'}", "sampling.patch_size=[16,16,8]", *overrides])


def test_patching_the_plan_changes_every_consumer(tmp_path, monkeypatch):
    """A plan whose patch, crop and window are changed: the loaders draw that patch from that crop,
    validation and predict slide that window; nothing looks at the config's values again."""
    from medseg.inference import predictor
    from medseg.training import loaders, validation

    cfg = _config(tmp_path, "augment.preset=nnunet")  # spatial transforms: draws of the crop, cut to the patch
    plan = dataclasses.replace(plan_of_config(cfg), patch_size=(8, 8, 8), crop_size=(24, 24, 16), roi_size=(24, 16, 8))
    seen: dict[str, object] = {}
    original_prep = loaders.sampling_prep
    monkeypatch.setattr(
        loaders, "sampling_prep", lambda size, *a: seen.setdefault("crop", size) and original_prep(size, *a)
    )
    from medseg.data.sources.discover import find_cases

    found = find_cases(cfg.data.dataset)
    train_ds, val_ds = loaders.make_datasets(cfg, found, found[:1], plan)
    assert seen["crop"] == (24, 24, 16)
    assert all(tuple(p["image"].shape[1:]) == (8, 8, 8) for p in train_ds[0])

    def window(model, image, icfg, roi, device, *rest):
        seen.setdefault("windows", []).append(tuple(roi))
        return torch.zeros(1, 1, *image.shape[2:])

    monkeypatch.setattr(validation, "sliding_window_probs", window)
    validation.validate(torch.nn.Identity(), val_ds, cfg, plan, torch.device("cpu"))
    monkeypatch.setattr(predictor, "sliding_window_probs", window)
    lm = LoadedModel(torch.nn.Identity(), plan, OperatingPoint(0.5, 0.0), cfg.inference, 26, torch.device("cpu"))
    predictor.predict_volume(lm, found[0].image)
    assert seen["windows"] == [(24, 16, 8), (24, 16, 8)]


def test_training_resolves_once_and_the_checkpoint_carries_the_plan(tmp_path):
    cfg = _config(tmp_path, "preprocess.target_spacing=null", "loss.name=focal_dice_blob")
    prep = prepare(cfg)
    plan = prep.plan
    assert plan.origin["preprocess.target_spacing"] == "planned" and plan.origin["sampling.patch_size"] == "config"
    assert plan.blob_weight == 1.0 and plan.instances  # focal_dice_blob: the blob term, decided here once
    assert (
        plan.roi_size == plan.patch_size == (16, 16, 8) and plan.crop_size == plan.patch_size
    )  # light: no bigger crop
    assert prep.cfg.preprocess.target_spacing == plan.preprocess.spacing  # config.yaml records the planned value
    ckpt = Checkpoint({}, prep.cfg, plan.preprocess, OperatingPoint(0.5, 0.0), plan=plan)
    save_checkpoint(ckpt, tmp_path / "best.pt")
    back = load_checkpoint(tmp_path / "best.pt")
    assert back.plan == plan and back.preprocess == plan.preprocess


def test_a_checkpoint_without_a_plan_gets_its_configs(tmp_path):
    """Checkpoints written before the plan was stored: the same rules give their plan."""
    from medseg.inference.model import checkpoint_plan

    cfg = _config(tmp_path)
    plan = plan_of_config(cfg)
    old = Checkpoint({}, cfg, plan.preprocess, OperatingPoint(0.5, 0.0))
    save_checkpoint(old, tmp_path / "old.pt")
    assert checkpoint_plan(load_checkpoint(tmp_path / "old.pt")) == dataclasses.replace(plan, origin={})


def test_plan_round_trips_and_refuses_bad_sizes(tmp_path):
    import pytest

    from medseg.errors import MedsegError

    plan = plan_of_config(_config(tmp_path))
    assert Plan.from_dict(plan.to_dict()) == plan
    bad = plan.to_dict() | {"roi_size": [16, 0, 8]}
    with pytest.raises(MedsegError, match="plan.roi_size"):
        Plan.from_dict(bad, "x.pt")
