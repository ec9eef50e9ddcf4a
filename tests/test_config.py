from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from medseg.config.load import flatten, load_config, parse_yaml
from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(tmp_path))
    for path in CONFIGS.glob("*.yaml"):
        cfg = load_config(path)
        assert isinstance(cfg, ExperimentConfig)


def test_unset_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("MEDSEG_REAL_DATA", raising=False)
    with pytest.raises(MedsegError, match=r"\$MEDSEG_REAL_DATA is not set"):
        load_config(CONFIGS / "brats_flair.yaml")


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    path = write(tmp_path, "data: {dataset: d}\ntrain: {epoch: 3}\n")
    with pytest.raises(MedsegError) as err:
        load_config(path)
    msg = str(err.value)
    assert "train.epoch" in msg and "epochs" in msg and "batch_size" in msg and str(path) in msg


def test_wrong_type_and_bounds(tmp_path):
    path = write(tmp_path, "data: {dataset: d}\n")
    with pytest.raises(MedsegError, match="train.epochs"):
        load_config(path, ["train.epochs=abc"])
    with pytest.raises(MedsegError, match="patch_size"):
        load_config(path, ["sampling.patch_size=[-1, 8, 8]"])
    with pytest.raises(MedsegError, match="schedule"):
        load_config(path, ["optim.schedule=linear"])


def test_overrides_and_relative_dataset(tmp_path):
    path = write(tmp_path, "data: {dataset: sub/data}\n")
    cfg = load_config(path, ["train.epochs=7", "loss.alpha=null"])
    assert cfg.train.epochs == 7 and cfg.loss.alpha is None
    assert cfg.data.dataset == (tmp_path / "sub" / "data").resolve()
    assert flatten(cfg)["train.epochs"] == "7"


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(MedsegError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(MedsegError, match="KEY=VALUE"):
        load_config(write(tmp_path, "data: {dataset: d}\n"), ["train.epochs"])


def test_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, "data: {dataset: d}\n"))
    with pytest.raises(ValidationError):
        cfg.train.epochs = 3


def test_on_off_yes_no_are_words_where_a_key_takes_words(tmp_path):
    # YAML 1.1 (PyYAML's default) reads off/on/yes/no as booleans: train.amp: off arrived as False
    path = write(tmp_path, "data: {dataset: d}\ntrain: {amp: off}\ninference: {amp: on, tta: yes}\n")
    cfg = load_config(path)
    assert cfg.train.amp == "off" and cfg.inference.amp == "on" and cfg.inference.tta is True
    cfg = load_config(path, ["train.amp=off", "inference.amp=off", "inference.tta=no", "tracking.enabled=False"])
    assert cfg.train.amp == "off" and cfg.inference.amp == "off"
    assert cfg.inference.tta is False and cfg.tracking.enabled is False
    with pytest.raises(MedsegError, match=r"train\.amp.*'auto', 'bf16', 'fp16' or 'off' \(got 'on'\)"):
        load_config(path, ["train.amp=on"])


def test_case_ids_and_numbers_are_read_as_written(tmp_path):
    path = write(
        tmp_path, "data: {dataset: d, val_cases: [0012, 104252], exclude_cases: [7, 12:30]}\noptim: {lr: 1e-3}\n"
    )
    cfg = load_config(path)
    assert cfg.data.val_cases == ("0012", "104252") and cfg.data.exclude_cases == ("7", "12:30")
    assert cfg.optim.lr == 0.001
    assert load_config(path, ["data.val_cases=[0099]"]).data.val_cases == ("0099",)


@pytest.mark.parametrize(
    "value",
    ["1e3", "1.5e3", "0012", "no", "Off", "1_000", "12:30", "0x1F", "0o17", "-", "~", 0.001, 1e20, -2, True, None],
)
def test_what_a_run_writes_reads_back_the_same(value):
    # a run's config.yaml is yaml.safe_dump (YAML 1.1 quoting); the config loader must read it back unchanged
    assert parse_yaml(yaml.safe_dump({"x": value}))["x"] == value
