"""The typed checkpoint: a payload exactly as medseg 0.1 (before the Checkpoint dataclass) wrote
it still loads, a Checkpoint round-trips, and broken files are refused with one clear line."""

import pytest
import torch

from medseg.config.plan import Preprocessing
from medseg.config.schema import DataConfig, ExperimentConfig
from medseg.errors import MedsegError
from medseg.nn.checkpoint import (
    Checkpoint,
    OperatingPoint,
    ResumeState,
    load_checkpoint,
    save_checkpoint,
    write_payload,
)


def v01_payload(cfg: ExperimentConfig) -> dict:
    """``medseg.train._payload`` of medseg 0.1 plus the resume section of its ``last.pt``."""
    return {
        "mlflow_run_id": "abc",
        "tracking_uri": "sqlite:///x.db",
        "state_dict": {"w": torch.ones(2, 3)},
        "config": cfg.model_dump(mode="json"),
        "preprocess": {
            "spacing": [1.0, 1.0, 2.0],
            "normalize": "zscore_nonzero",
            "in_channels": 2,
            "channels": ["FLAIR", "T1"],
            "ct_stats": [],
            "background": "min",
            "classes": ["lesion"],
        },
        "operating_point": {"threshold": 0.4, "min_lesion_mm3": 10.0},
        "epoch": 7,
        "metrics": {"val_lesion_f1": 0.5},
        "resume": {
            "epoch": 7,
            "step_in_epoch": 3,
            "epoch_losses": [0.5, 0.4, 0.3],
            "global_step": 27,
            "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": 27},
            "rng": {},
            "scaler": {},
            "best": 0.5,
            "since_best": 1,
            "history": [{"epoch": 1, "train_loss": 0.9}],
        },
    }


def test_checkpoint_of_medseg_0_1_loads(tmp_path):
    cfg = ExperimentConfig(data=DataConfig(dataset=tmp_path))
    write_payload(v01_payload(cfg), tmp_path / "last.pt")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt.config == cfg and ckpt.epoch == 7 and ckpt.mlflow_run_id == "abc"
    assert ckpt.preprocess == Preprocessing(
        (1.0, 1.0, 2.0), "zscore_nonzero", 2, ("FLAIR", "T1"), None, "min", ("lesion",)
    )
    assert ckpt.operating_point == OperatingPoint(0.4, 10.0)
    assert ckpt.resume is not None and ckpt.resume.step_in_epoch == 3 and ckpt.resume.best_epoch == 0
    assert torch.equal(ckpt.state_dict["w"], torch.ones(2, 3))


def test_oldest_preprocess_section_takes_defaults(tmp_path):
    cfg = ExperimentConfig(data=DataConfig(dataset=tmp_path))
    payload = v01_payload(cfg) | {"preprocess": {"spacing": [1, 1, 1], "normalize": "zscore_nonzero", "in_channels": 1}}
    write_payload(payload, tmp_path / "best.pt")
    pre = load_checkpoint(tmp_path / "best.pt").preprocess
    assert pre.classes == ("lesion",) and pre.channels == () and pre.background == "zero" and pre.ct_stats is None


def test_round_trip(tmp_path):
    cfg = ExperimentConfig(data=DataConfig(dataset=tmp_path))
    resume = ResumeState(2, 0, [], 10, {}, {}, {}, {}, 0.7, 0, [{"epoch": 1}], best_epoch=2)
    ckpt = Checkpoint(
        {"w": torch.zeros(1)},
        cfg,
        Preprocessing((1.0, 1.0, 1.0), "ct", 1, ("CT",), ((-100.0, 200.0, 40.0, 50.0),)),
        OperatingPoint(0.5, 0.0, "max_f1"),
        2,
        {"a": 1.0},
        None,
        None,
        resume,
    )
    save_checkpoint(ckpt, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt")
    assert back.preprocess == ckpt.preprocess and back.operating_point == ckpt.operating_point
    assert back.resume == resume and back.metrics == {"a": 1.0}


def test_bad_checkpoints_are_refused(tmp_path):
    cfg = ExperimentConfig(data=DataConfig(dataset=tmp_path))
    torch.save({"format": "medseg-checkpoint/99", **v01_payload(cfg)}, tmp_path / "future.pt")
    with pytest.raises(MedsegError, match="not a medseg checkpoint"):
        load_checkpoint(tmp_path / "future.pt")
    write_payload({k: v for k, v in v01_payload(cfg).items() if k != "operating_point"}, tmp_path / "partial.pt")
    with pytest.raises(MedsegError, match="no operating_point"):
        load_checkpoint(tmp_path / "partial.pt")
    bad = v01_payload(cfg)
    bad["config"]["train"]["epochs"] = -1
    write_payload(bad, tmp_path / "badcfg.pt")
    with pytest.raises(MedsegError, match="do not validate"):
        load_checkpoint(tmp_path / "badcfg.pt")
