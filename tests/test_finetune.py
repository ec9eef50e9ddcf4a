"""Fine-tuning (``train.init_from``): tensors matched by name and shape, the first layer adapted to
other input channels (numerically), the report with its reasons, the frozen encoder, the MLflow
lineage, one-line errors, resume without re-initialisation, a kept preprocessing resolved once,
and the how-to's commands as written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import cli, oblique_affine, save_nifti

from medseg.config.load import load_config
from medseg.config.plan import Preprocessing
from medseg.config.schema import ModelConfig
from medseg.nn.checkpoint import load_checkpoint
from medseg.nn.parts import encoder_parameters, input_layer_names
from medseg.nn.registry import build_model
from medseg.nn.transfer import match_channels, transfer_weights
from medseg.planning.inherit import preprocessing_differences
from medseg.training import trainer as trainer_module
from medseg.training.prepare import prepare
from medseg.training.run import train
from tests.conftest import how_to_commands

ROOT = Path(__file__).resolve().parents[1]
SPACING = [1.2, 0.9, 2.5]
NETWORKS = {
    "unet": ModelConfig(name="unet", channels=(4, 8, 16), strides=(2, 2)),
    "dynunet": ModelConfig(
        name="dynunet",
        channels=(4,),
        kernel_sizes=((3, 3, 3), (3, 3, 3), (3, 3, 3)),
        level_strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
    ),
    "segresnet": ModelConfig(name="segresnet", channels=(4, 8, 16)),
}


def nets(family: str, n_in: tuple[int, int], n_out: tuple[int, int] = (1, 1)):
    torch.manual_seed(0)
    return build_model(NETWORKS[family], n_in[0], n_out[0]), build_model(NETWORKS[family], n_in[1], n_out[1])


# ---- weights: matching, first layer, report (no training) -----------------------------------------------


@pytest.mark.parametrize("family", sorted(NETWORKS))
def test_matched_tensors_equal_the_source(family):
    source, target = nets(family, (1, 1))
    report = transfer_weights(target, source.state_dict(), family, match_channels(("flair",), 1, ("flair",)))
    assert report.count("loaded") > 0 and report.summary().endswith("0 adapted, 0 skipped, 0 new, 0 unused")
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name


@pytest.mark.parametrize("family", sorted(NETWORKS))
def test_a_new_channel_starts_at_zero_and_the_network_computes_what_the_source_did(family):
    """FLAIR model -> (T1, FLAIR): FLAIR's kernels move to channel 1 (matched by name, not position),
    T1's are zero, so the new network's output ignores T1 and equals the source's on FLAIR."""
    source, target = nets(family, (1, 2))
    report = transfer_weights(target, source.state_dict(), family, match_channels(("FLAIR",), 1, ("t1", "flair")))
    inputs = input_layer_names(target, family, 2)
    assert inputs and report.count("adapted") == len(inputs) and report.count("skipped") == 0
    assert report.channels == "by name: t1 new (zero), flair <- FLAIR"
    for name in inputs:
        kernel, src = target.state_dict()[name], source.state_dict()[name]
        assert torch.equal(kernel[:, 1], src[:, 0]) and not kernel[:, 0].any(), name
    flair = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = source.eval()(flair)
        got = target.eval()(torch.cat([torch.randn(1, 1, 16, 16, 16) * 5, flair], dim=1))
    assert torch.allclose(got, expected, atol=1e-5)


def test_mean_initialises_a_new_channel_with_the_mean_kernel():
    source, target = nets("unet", (2, 3))
    match = match_channels(("flair", "t1"), 2, ("t1", "flair", "t2"))
    transfer_weights(target, source.state_dict(), "unet", match, "mean")
    for name in input_layer_names(target, "unet", 3):
        kernel, src = target.state_dict()[name], source.state_dict()[name]
        assert torch.equal(kernel[:, 0], src[:, 1]) and torch.equal(kernel[:, 1], src[:, 0])
        assert torch.allclose(kernel[:, 2], src.mean(dim=1))


def test_channels_match_by_name_else_by_position():
    assert match_channels(("FLAIR",), 1, ("flair", "t1")).sources == (0, None)
    by_name = match_channels(("flair", "t1", "t1ce", "t2"), 4, ("t2", "flair"))
    assert by_name.sources == (3, 0) and by_name.by_name
    assert by_name.describe("zero") == "by name: t2 <- t2, flair <- flair; source channel(s) not used: t1, t1ce"
    unnamed = match_channels((), 1, ("channel0", "channel1"))
    assert unnamed.sources == (0, None) and not unnamed.by_name
    assert match_channels(("ct",), 1, ("flair",)).sources == (0,)  # no shared name: by position
    assert match_channels(("a", "b"), 2, ("A", "B")).identity


def test_the_report_lists_skipped_tensors_with_reasons():
    source, target = nets("unet", (1, 1), n_out=(1, 3))  # three classes here: the output layer differs
    weights = dict(source.state_dict())
    dropped = "model.1.submodule.0.conv.unit0.conv.bias"
    del weights[dropped]
    weights["extra.weight"] = torch.ones(2)
    weights["model.0.residual.bias"] = torch.full_like(weights["model.0.residual.bias"], float("nan"))
    before = target.state_dict()["model.0.residual.bias"].clone()
    report = transfer_weights(target, weights, "unet", match_channels((), 1, ("channel0",)))
    notes = {n.name: n for n in report.notes}
    out = "model.2.1.conv.unit0.conv.weight"
    assert notes[out].status == "skipped" and "shape mismatch: source (1, 1, 3, 3, 3), here (3, 3, 3, 3, 3)" in (
        notes[out].detail
    )
    assert notes[dropped].status == "new" and "missing in source" in notes[dropped].detail
    assert notes["extra.weight"].status == "unused" and notes["extra.weight"].detail == "not in the new network"
    assert notes["model.0.residual.bias"].status == "skipped" and "NaN" in notes["model.0.residual.bias"].detail
    assert torch.equal(target.state_dict()["model.0.residual.bias"], before)  # kept its fresh initialisation
    text = report.text()
    assert re.search(r"^skipped +model\.2\.1\.conv\.unit0\.conv\.weight +shape mismatch", text, flags=re.M)
    assert re.search(r"^new +model\.1\.submodule\.0\.conv\.unit0\.conv\.bias +missing in source", text, flags=re.M)


@pytest.mark.parametrize("family", sorted(NETWORKS))
def test_the_encoder_is_the_contracting_path(family):
    net = build_model(NETWORKS[family], 1, 1)
    encoder = encoder_parameters(net, family)
    names = [n for n, _ in net.named_parameters()]
    assert encoder and len(encoder) < len(names)
    assert names[0] in encoder and names[-1] not in encoder  # input layer in, output head out
    decoder = {"unet": "model.2.", "dynunet": "upsamples.", "segresnet": "up_layers."}[family]
    assert not any(n.startswith(decoder) for n in encoder)


def test_preprocessing_differences_are_named():
    source = Preprocessing((2.0, 2.0, 2.0), "zscore_nonzero", 1, ("flair",), background="min")
    target = Preprocessing((1.0, 1.0, 1.0), "zscore", 2, ("flair", "t1"), background="min")
    assert preprocessing_differences(source, target) == [
        "spacing [1.0, 1.0, 1.0] mm (source [2.0, 2.0, 2.0])",
        "normalize zscore (source zscore_nonzero)",
    ]
    assert preprocessing_differences(source, source) == []


# ---- training runs on a tiny two-channel dataset ----------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """nnU-Net raw, channels FLAIR and T1, a bright FLAIR / dark T1 lesion per case."""
    root = tmp_path_factory.mktemp("finetune") / "Dataset001_Two"
    rng, affine = np.random.default_rng(3), oblique_affine()
    for i in range(4):
        label = np.zeros((24, 24, 16), np.uint8)
        label[8:13, 8:13, 5:10] = 1
        flair, t1 = rng.normal(10, 1, label.shape), rng.normal(5, 1, label.shape)
        flair[label == 1] += 6
        t1[label == 1] -= 3
        save_nifti(flair.astype(np.float32), affine, root / "imagesTr" / f"p{i}_0000.nii.gz")
        save_nifti(t1.astype(np.float32), affine, root / "imagesTr" / f"p{i}_0001.nii.gz")
        save_nifti(label, affine, root / "labelsTr" / f"p{i}.nii.gz")
    meta = {"channel_names": {"0": "FLAIR", "1": "T1"}, "labels": {"background": 0, "lesion": 1}}
    (root / "dataset.json").write_text(json.dumps(meta | {"numTraining": 4, "file_ending": ".nii.gz"}))
    return root


def write_config(path: Path, dataset: Path, out: Path, channels: list[str], **train) -> Path:
    """A tiny config: a 3-level UNet of 4-16 maps, 16x16x8 patches, CPU, MLflow store beside the runs."""
    cfg = {
        "data": {"dataset": str(dataset), "channels": channels, "val_cases": ["p0"]},
        "preprocess": {"target_spacing": SPACING, "normalize": "zscore_nonzero"},
        "sampling": {"patch_size": [16, 16, 8], "samples_per_volume": 1},
        "model": {"channels": [4, 8, 16], "strides": [2, 2]},
        "train": {"epochs": 1, "val_every": 1, "device": "cpu", "output_dir": str(out), **train},
        "tracking": {"uri": f"sqlite:///{out.parent / 'mlflow.db'}", "experiment": "finetune"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def source(dataset, tmp_path_factory):
    """A FLAIR model trained one epoch, logged to MLflow: (config, result)."""
    work = tmp_path_factory.mktemp("source")
    config = write_config(work / "flair.yaml", dataset, work / "runs", ["FLAIR"])
    return config, train(load_config(config), progress=False)


class Snapshots:
    """The network's tensors and the encoder's requires_grad before and after each epoch."""

    def __init__(self, monkeypatch):
        self.before, self.after, self.grad = {}, {}, {}
        original = trainer_module.Trainer.run_epoch

        def run_epoch(trainer, epoch, *args):
            self.before[epoch] = {k: v.clone() for k, v in trainer.net.state_dict().items()}
            metrics = original(trainer, epoch, *args)
            self.grad[epoch] = {p.requires_grad for p in trainer.freeze.params}
            self.after[epoch] = {k: v.clone() for k, v in trainer.net.state_dict().items()}
            return metrics

        monkeypatch.setattr(trainer_module.Trainer, "run_epoch", run_epoch)


def test_finetune_from_an_mlflow_model_with_a_frozen_encoder(dataset, source, tmp_path, monkeypatch, capsys):
    """runs:/<id>/model of the FLAIR model -> (T1, FLAIR): loaded tensors equal the source, the
    first layer adapted by name; the encoder fixed in epoch 1 while the decoder moves, trained in
    epoch 2; the report printed, written and logged; the run's lineage tags."""
    from mlflow.tracking import MlflowClient

    _, src = source
    config = write_config(
        tmp_path / "two.yaml", dataset, tmp_path / "runs", ["T1", "FLAIR"], epochs=2, freeze_encoder_epochs=1
    )
    cfg = load_config(
        config,
        [
            f"train.init_from=runs:/{src.run_id}/model",
            f"tracking.uri=sqlite:///{src.run_dir.parent.parent / 'mlflow.db'}",
        ],
    )
    seen = Snapshots(monkeypatch)
    result = train(cfg, progress=True)
    err = capsys.readouterr().err
    assert f"init_from runs:/{src.run_id}/model (epoch 1, MLflow run {src.run_id}): " in err
    assert "input channels by name: T1 new (zero), FLAIR <- FLAIR" in err

    weights = load_checkpoint(src.best_path).state_dict
    start = seen.before[1]
    encoder = {n for n in start if re.match(r"model\.(1\.submodule\.)*(0\.|(?![012]\.))", n)}
    for name, tensor in start.items():
        if name.startswith("model.0.") and name.endswith("weight") and tensor.dim() == 5:
            assert torch.equal(tensor[:, 1], weights[name][:, 0]) and not tensor[:, 0].any(), name
        else:
            assert torch.equal(tensor, weights[name]), name
    assert seen.grad == {1: {False}, 2: {True}}
    moved = {n for n in start if not torch.equal(seen.after[1][n], start[n])}
    assert moved and not moved & encoder  # epoch 1: the decoder trains, the encoder stays
    assert any(not torch.equal(seen.after[2][n], seen.after[1][n]) for n in encoder)  # epoch 2: unfrozen

    report = (result.run_dir / "init_report.txt").read_text()
    assert "tensors: 24 loaded, 2 adapted, 0 skipped, 0 new, 0 unused" in report
    assert re.search(r"^adapted +model\.0\.conv\.unit0\.conv\.weight", report, flags=re.M)
    run = MlflowClient(cfg.tracking.uri).get_run(result.run_id)
    assert run.data.tags["init_from"] == f"runs:/{src.run_id}/model"
    assert run.data.tags["init_from.run_id"] == src.run_id
    assert run.data.params["init.adapted"] == "2" and run.data.params["train.freeze_encoder_epochs"] == "1"
    assert f"Fine-tuned from `runs:/{src.run_id}/model`" in run.data.tags["mlflow.note.content"]
    assert "init_report.txt" in {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(result.run_id)}
    history = MlflowClient(cfg.tracking.uri).get_metric_history(result.run_id, "encoder_frozen")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.0)]


def test_resume_continues_from_last_pt_not_from_the_source(dataset, source, tmp_path, monkeypatch, capsys):
    _, src = source
    copy = tmp_path / "model" / "best.pt"
    copy.parent.mkdir()
    shutil.copy(src.best_path, copy)
    config = write_config(tmp_path / "two.yaml", dataset, tmp_path / "runs", ["FLAIR", "T1"])
    first = train(load_config(config, [f"train.init_from={copy.parent}", "preprocess.normalize=zscore"]), False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "train.init_from" in line]
    assert warnings == [
        "warning: train.init_from: this run preprocesses otherwise than its source: normalize zscore (source "
        "zscore_nonzero); set train.init_keep_preprocessing=true to keep the source's"
    ]
    report = (first.run_dir / "init_report.txt").read_text()
    assert f"init_from: {copy.resolve()}" in report and "by name: FLAIR <- FLAIR, T1 new (zero)" in report
    assert "preprocessing differs: normalize zscore (source zscore_nonzero)" in report
    copy.unlink()  # the source is gone: a resume that read it would fail
    after_epoch_1 = load_checkpoint(first.run_dir / "last.pt").state_dict
    seen = Snapshots(monkeypatch)
    cfg = load_config(first.run_dir / "config.yaml", ["train.epochs=2"])
    assert cfg.train.init_from == str(copy.parent)
    train(cfg, progress=False, resume=first.run_dir)
    assert list(seen.before) == [2]  # epoch 2 starts from the run's own weights
    assert all(torch.equal(seen.before[2][k], v) for k, v in after_epoch_1.items())
    assert load_checkpoint(first.run_dir / "last.pt").epoch == 2
    assert (first.run_dir / "init_report.txt").read_text() == report


def test_a_kept_preprocessing_is_resolved_in_the_plan(dataset, source, tmp_path):
    _, src = source
    config = write_config(tmp_path / "two.yaml", dataset, tmp_path / "runs", ["T1", "FLAIR"])
    overrides = [f"train.init_from={src.best_path}", "preprocess.target_spacing=[2,2,2]", "preprocess.normalize=zscore"]
    ckpt = load_checkpoint(src.best_path)
    kept = prepare(load_config(config, [*overrides, "train.init_keep_preprocessing=true"]), ckpt.preprocess)
    assert kept.plan.preprocess.spacing == tuple(SPACING) and kept.plan.preprocess.normalize == "zscore_nonzero"
    assert kept.cfg.preprocess.target_spacing == tuple(SPACING)  # config.yaml records the kept values
    assert kept.plan.origin["preprocess.target_spacing"] == "init_from"
    own = prepare(load_config(config, overrides), ckpt.preprocess)
    assert own.plan.preprocess.spacing == (2.0, 2.0, 2.0) and own.plan.origin["preprocess.target_spacing"] == "config"
    assert len(preprocessing_differences(ckpt.preprocess, own.plan.preprocess)) == 2


def test_errors_are_one_line_with_exit_2(dataset, source, tmp_path):
    config = write_config(tmp_path / "two.yaml", dataset, tmp_path / "runs", ["FLAIR"])
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    cases = {
        "--init-from nope/best.pt": "train.init_from: nope/best.pt: no such checkpoint or run folder",
        f"--init-from {tmp_path / 'junk.pt'}": "not a loadable medseg checkpoint",
        f"--init-from {tmp_path / 'empty'}": "a folder without best.pt",
        "--set train.freeze_encoder_epochs=2": "freeze_encoder_epochs needs init_from",
        "--init-from runs:/0123456789abcdef/model --set tracking.uri=sqlite:///nowhere/mlflow.db": "no MLflow store",
    }
    for args, message in cases.items():
        res = cli("train", config, *args.split(), "--quiet", cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and message in lines[0], (args, res.stderr[-2000:])
    assert not (tmp_path / "runs").exists()
    res = cli("train", "--resume", tmp_path, "--init-from", "x.pt")
    assert res.returncode == 2 and "--init-from: not with --resume" in res.stderr


def test_the_how_to_commands_run_as_written(dataset, source, tmp_path):
    """docs/how-to/finetune.md's first block, with tiny stand-ins for configs/brats_wt_flair.yaml
    (FLAIR) and configs/brats_wt.yaml (FLAIR + T1) and the FLAIR run at the folder it names."""
    _, src = source
    write_config(tmp_path / "configs" / "brats_wt.yaml", dataset, Path("runs/brats_wt"), ["FLAIR", "T1"])
    commands = how_to_commands("how-to/finetune.md")
    assert [c[0] for c in commands] == ["train", "train"]
    named = next(Path(a) for a in commands[0] if a.startswith("runs/brats_wt_flair/"))
    (tmp_path / named).mkdir(parents=True)
    shutil.copy(src.best_path, tmp_path / named / "best.pt")
    for args in commands:
        res = cli(*args, "--set", "train.epochs=1", cwd=tmp_path)
        assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    reports = sorted((tmp_path / "runs" / "brats_wt").glob("*/init_report.txt"))
    assert len(reports) == 2 and all("2 adapted" in r.read_text() for r in reports)
