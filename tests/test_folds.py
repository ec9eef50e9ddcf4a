"""Cross-validation: fold splits by case and by group, a parent MLflow run with a child per fold,
tuning on the pooled out-of-fold predictions and the fold ensemble in predict."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.data.case import Case
from medseg.data.split import case_groups, fold_splits, split_cases
from medseg.errors import MedsegError


def _cases(ids):
    return [Case(i, (Path(f"{i}.nii.gz"),), Path(f"{i}_seg.nii.gz")) for i in ids]


IDS = ["P14_T1", "P14_T2", "P14_T3", "P18_T1", "P39_T1", "P40_T1", "P40_T2", "P41_T1"]


@pytest.mark.parametrize("folds", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_groups_never_split_and_every_case_validated_once(folds, seed):
    cases = _cases(IDS)
    splits = fold_splits(cases, folds, seed, r"^(P\d+)_")
    assert sorted(i for s in splits for i in s) == sorted(IDS)  # each case in exactly one fold
    for group in ("P14", "P40"):
        holding = [k for k, s in enumerate(splits) if any(i.startswith(group) for i in s)]
        assert len(holding) == 1  # a patient's time points stay together
    assert all(splits)  # no empty fold


def test_folds_by_case_are_balanced_and_reproducible():
    cases = _cases([f"c{i:02d}" for i in range(11)])
    a, b = fold_splits(cases, 5, 3), fold_splits(cases, 5, 3)
    assert a == b and sorted(len(s) for s in a) == [2, 2, 2, 2, 3]
    assert fold_splits(cases, 5, 4) != a


def test_group_errors_and_random_split_by_group():
    cases = _cases(IDS)
    assert case_groups(cases, r"^(P\d+)_")[:4] == ["P14", "P14", "P14", "P18"]
    with pytest.raises(MedsegError, match="group"):
        fold_splits(cases, 7, 0, r"^(P\d+)_")  # 5 patients
    with pytest.raises(MedsegError, match="regular expression"):
        case_groups(cases, "(")
    for seed in range(5):
        train, val = split_cases(cases, 0.3, seed, group_pattern=r"^(P\d+)_")
        assert {c.case_id[:3] for c in train}.isdisjoint({c.case_id[:3] for c in val})


def test_random_split_without_groups_is_unchanged():
    """No group_pattern: the same seeded split as medseg 0.2 (runs stay reproducible)."""
    import numpy as np

    cases = _cases([f"c{i:02d}" for i in range(10)])
    train, val = split_cases(cases, 0.2, 0)
    order = np.random.default_rng(0).permutation(10)
    assert [c.case_id for c in val] == [cases[i].case_id for i in sorted(order[:2])]


@pytest.mark.slow
def test_cross_validation_end_to_end(tmp_path):
    from mlflow.tracking import MlflowClient

    from medseg.calibration.tune import run_tune
    from medseg.config.load import load_config
    from medseg.data.synthetic import write_dataset
    from medseg.demo import DEMO_CONFIG
    from medseg.ensembles.cv import train_folds
    from medseg.inference.model import load_model
    from medseg.nn.ensemble import MeanProbability

    write_dataset(tmp_path / "data", 4, seed=1, shape=(32, 32, 24))
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"data.dataset={tmp_path / 'data'}",
            f"train.output_dir={tmp_path / 'runs'}",
            "train.epochs=1",
            "train.val_every=1",
            "sampling.patch_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.batch_size=2",
            "preprocess.target_spacing=null",
            "tracking.experiment=cv",
        ],
    )
    first = train_folds(cfg, 2, fold=0, progress=False)  # one fold per command, as on a cluster
    second = train_folds(cfg, 2, fold=1, progress=False)
    assert first.folder == second.folder and first.parent_run_id == second.parent_run_id
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    children = [client.get_run(r.run_id) for r in (first.results[0], second.results[1])]
    assert all(c.data.tags["mlflow.parentRunId"] == first.parent_run_id for c in children)
    parent = client.get_run(first.parent_run_id)
    assert "cv_mean_val_lesion_f1" in parent.data.metrics and parent.info.status == "FINISHED"
    res = run_tune(first.folder, device="cpu")
    assert len(res["checkpoints"]) == 2
    lm = load_model(first.folder, "cpu")
    assert isinstance(lm.model, MeanProbability) and len(lm.model.members) == 2
    assert lm.operating_point.threshold == res["chosen"]["threshold"]  # the pooled operating point, in every fold
    again = train_folds(cfg, 2, fold=0, progress=False)  # a finished fold is kept, not trained twice
    assert again.results[0].run_dir == first.results[0].run_dir
    assert (
        len(list((first.folder / "fold0").glob("*/last.pt"))) == 1
        and len(load_model(first.folder, "cpu").model.members) == 2
    )


@pytest.mark.slow
def test_seed_ensemble_trains_tunes_and_predicts_as_one_model(tmp_path):
    """``train --seeds 2``: two members on the first seed's split under one MLflow parent; ``tune
    FOLDER`` predicts their shared validation case once, with the members' mean probability (the
    model ``predict FOLDER`` uses), not once per member."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    from medseg.calibration.tune import run_tune, validation_cases, validation_scans
    from medseg.config.load import load_config
    from medseg.data.synthetic import write_dataset
    from medseg.demo import DEMO_CONFIG
    from medseg.ensembles.cv import train_seeds
    from medseg.inference.model import load_model
    from medseg.inference.predictor import predict_volume
    from medseg.nn.checkpoint import load_checkpoint

    write_dataset(tmp_path / "data", 4, seed=1, shape=(32, 32, 24))
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"data.dataset={tmp_path / 'data'}",
            f"train.output_dir={tmp_path / 'runs'}",
            "train.epochs=1",
            "train.val_every=1",
            "sampling.patch_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.batch_size=2",
            "preprocess.target_spacing=null",
            "tracking.experiment=seeds",
            "data.val_fraction=0.25",
        ],
    )
    ens = train_seeds(cfg, 2, progress=False)
    paths = [r.best_path for r in ens.results.values()]
    ckpts = [load_checkpoint(p) for p in paths]
    assert sorted(ens.results) == [0, 1] and [c.config.train.seed for c in ckpts] == [0, 1]
    assert [[c.case_id for c in validation_cases(k)] for k in ckpts] == ens.folds * 2 and len(ens.folds[0]) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    children = [client.get_run(r.run_id) for r in ens.results.values()]
    assert all(c.data.tags["mlflow.parentRunId"] == ens.parent_run_id for c in children)
    assert "mean_val_lesion_f1" in client.get_run(ens.parent_run_id).data.metrics
    scans = validation_scans(ckpts, "cpu")
    assert len(scans) == 1  # the shared validation case once, not once per seed
    ensemble = predict_volume(load_model(ens.folder, "cpu"), validation_cases(ckpts[0])[0].images).prob
    np.testing.assert_allclose(scans[0].prob, ensemble, atol=1e-6)
    res = run_tune(ens.folder, device="cpu")
    assert sorted(map(str, res["checkpoints"])) == sorted(map(str, paths))
    assert load_model(ens.folder, "cpu").operating_point.threshold == res["chosen"]["threshold"]
    brats = run_tune(ens.folder, device="cpu", protocol="brats2023")  # the BraTS 2023 count, max lesion-wise Dice
    assert (
        "lesionwise_dice" in brats["chosen"]
        and load_checkpoint(paths[0]).operating_point.target == "max_lesionwise_dice:brats2023"
    )
    with pytest.raises(MedsegError, match="at least 2"):
        train_seeds(cfg, 1, progress=False)


@pytest.mark.slow
def test_a_stopped_seed_ensemble_continues_with_the_same_command(tmp_path, monkeypatch, capsys):
    """SIGTERM in seed 1's second epoch stops the ensemble (exit 143, last.pt written); the same
    call again keeps seed 0's finished run, resumes seed 1 in its own run folder and MLflow run,
    and closes the parent run: one run per member, both finished. A setting changed in between
    is named, and the resumed member keeps the one it started with."""
    import os
    import signal

    from mlflow.tracking import MlflowClient

    from medseg.config.load import load_config
    from medseg.data.synthetic import write_dataset
    from medseg.demo import DEMO_CONFIG
    from medseg.ensembles.cv import train_seeds
    from medseg.nn.checkpoint import load_checkpoint
    from medseg.training.trainer import Trainer

    write_dataset(tmp_path / "data", 4, seed=1, shape=(32, 32, 24))
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"data.dataset={tmp_path / 'data'}",
            f"train.output_dir={tmp_path / 'runs'}",
            "train.epochs=2",
            "train.val_every=1",
            "sampling.patch_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.batch_size=1",
            "train.checkpoint_every_steps=1",
            "preprocess.target_spacing=null",
            "tracking.experiment=seeds",
            "data.val_fraction=0.25",
        ],
    )
    validate = Trainer.validate_and_select

    def stop_seed1(self, epoch, metrics):
        validate(self, epoch, metrics)
        if self.cfg.train.seed == 1 and epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the trainer: stops at the next step

    monkeypatch.setattr(Trainer, "validate_and_select", stop_seed1)
    with pytest.raises(MedsegError, match="stopped by SIGTERM") as stopped:
        train_seeds(cfg, 2, progress=False)
    assert stopped.value.exit_code == 143
    folder = tmp_path / "runs" / "seeds2-s0"
    seed0, seed1 = (load_checkpoint(next(folder.glob(f"seed{s}/*/last.pt"))).resume for s in (0, 1))
    assert seed0.finished and not seed1.finished and seed1.epoch == 2 and seed1.train_seconds > 0
    monkeypatch.setattr(Trainer, "validate_and_select", validate)
    capsys.readouterr()
    ens = train_seeds(
        cfg.model_copy(update={"inference": cfg.inference.model_copy(update={"threshold": 0.4})}), 2, progress=False
    )
    err = capsys.readouterr().err
    assert "seed0" in err and "finished earlier, kept" in err
    assert "resumes with the settings it started with, not the changed inference.threshold (remove" in err
    assert load_checkpoint(ens.results[1].best_path).config.inference.threshold == 0.5
    assert [len(list(folder.glob(f"seed{s}/*/last.pt"))) for s in (0, 1)] == [1, 1]
    ends = {s: load_checkpoint(r.last_path).resume for s, r in ens.results.items()}
    assert all(r.finished and r.epoch == 2 for r in ends.values())
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    members = [client.get_run(r.run_id) for r in ens.results.values()]
    assert [m.info.status for m in members] == ["FINISHED", "FINISHED"]
    assert all(m.data.tags["mlflow.parentRunId"] == ens.parent_run_id for m in members)
    assert client.get_run(ens.parent_run_id).info.status == "FINISHED"
    steps = [s.step for s in client.get_metric_history(ens.results[1].run_id, "train_loss")]
    assert steps == [1, 2]  # the resumed member's history: no step twice, none missing
