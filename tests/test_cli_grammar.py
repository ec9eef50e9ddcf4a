"""One grammar for every command (issue 32): one option name per meaning, one help text per option
name, the dataset layout flags wherever a dataset is read, ``--set`` wherever a config is read,
``-h`` and an Examples section on every command, choices as enums; ``--out`` always a folder.

The walk reads the Click commands Typer builds (``typer.main.get_command(app)``); the few CLI calls
run in-process through Typer's CliRunner.
"""

from __future__ import annotations

import enum
import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.cli.common import run_overrides
from medseg.cli.examples import EXAMPLES
from medseg.cli.options import DATASET_HELP, Protocol, RunSort
from medseg.config.load import load_config
from medseg.errors import MedsegError
from medseg.evaluation.brats import PROTOCOLS
from medseg.evaluation.evaluate import OUTPUT_FILES, output_paths
from medseg.tracking.runs import SORTS
from tests.robustness.conftest import DEMO, assert_clean_error, describe

GROUP = typer.main.get_command(app)
COMMANDS = dict(GROUP.commands)

# meaning -> (the one option name it has on every command, names that must never stand for it)
CANONICAL: dict[str, tuple[str, tuple[str, ...]]] = {
    "output folder": (
        "--out",
        ("--output", "--outdir", "--out-dir", "--output-dir", "--output-folder", "-o", "--dest"),
    ),
    "lesion size filter, mm3": (
        "--min-lesion-mm3",
        ("--min-mm3", "--min-volume", "--min-size", "--min-lesion-volume", "--min-vol"),
    ),
    "lesion size filter, voxels": ("--min-lesion-voxels", ("--min-voxels", "--min-lesion-size", "--min-vox")),
    "compute device": ("--device", ("--gpu", "--gpus", "--cuda", "--cpu", "--accelerator")),
    "MLflow store": ("--tracking-uri", ("--uri", "--mlflow-uri", "--tracking", "--mlflow", "--store")),
    "less output": ("--quiet", ("--silent", "-q", "--no-progress", "--verbose-off", "--no-verbose")),
    "config override": ("--set", ("--override", "--overrides", "--config-override", "--define", "-D")),
    "dataset layout": ("--layout", ("--format", "--dataset-format", "--structure")),
    "channel of a dataset": ("--channel", ("--channels", "--modality", "--modalities")),
    "label glob of a dataset": ("--label", ("--label-glob", "--label-pattern", "--seg")),
    "which cases": ("--split", ("--subset", "--partition", "--cases-split")),
    "lesion label values": ("--lesion-labels", ("--labels", "--lesion-values", "--label-values")),
    "reference label file": ("--ref", ("--gt", "--ground-truth", "--reference", "--target")),
    "lesion matching rule": ("--matching", ("--match", "--rule", "--matcher")),
    "scoring protocol": ("--protocol", ("--challenge", "--metric-protocol")),
}
FORBIDDEN = {name: meaning for meaning, (_, names) in CANONICAL.items() for name in names}
# names that a command which reads no dataset uses for another meaning: export --format is the model file format
OTHER_MEANING = {("export", "--format")}
PER_COMMAND_HELP = {"--out"}  # the output folder's help names the files that command writes into it
CHOICE_OPTIONS = {
    "--layout": "auto",
    "--split": "test",
    "--matching": "overlap",
    "--connectivity": "26",
    "--protocol": "medseg",
    "--empty-dice": "nan",
    "--sort": "recall",
    "--engine": "onnxruntime",
    "--output-format": "dicom-seg",
    "--format": "onnx",
}  # option -> one of its choices
LAYOUT_FLAGS = ("--layout", "--channel", "--label")
DATASET_COMMANDS = {"check", "plan", "predict", "evaluate", "tune"}
CONFIG_COMMANDS = {"train", "demo", "check", "plan", "predict", "evaluate"}


def options(command) -> dict[str, object]:
    """Every option name (``--tta`` and ``--no-tta`` both) of a command -> its parameter."""
    return {name: p for p in command.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}


def invoke(*args) -> SimpleNamespace:
    res = CliRunner().invoke(app, [str(a) for a in args], prog_name="medseg")
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def test_every_command_is_walked():
    assert set(COMMANDS) == {
        "synth",
        "train",
        "predict",
        "evaluate",
        "review",
        "tune",
        "check",
        "plan",
        "show",
        "demo",
        "runs",
        "export",
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_second_name_for_a_meaning(name):
    found = {
        opt: FORBIDDEN[opt] for opt in options(COMMANDS[name]) if opt in FORBIDDEN and (name, opt) not in OTHER_MEANING
    }
    assert not {(n, o) for n, o in OTHER_MEANING if n in DATASET_COMMANDS}  # never where --layout is meant
    assert not found, f"medseg {name}: " + ", ".join(
        f"{o} (say {CANONICAL[m][0]} for the {m})" for o, m in found.items()
    )


def test_every_canonical_name_is_in_use():
    used = {opt for command in COMMANDS.values() for opt in options(command)}
    assert {canonical for canonical, _ in CANONICAL.values()} <= used


def test_both_lesion_size_filters_on_predict_and_evaluate():
    for name in ("predict", "evaluate"):
        assert {"--min-lesion-mm3", "--min-lesion-voxels"} <= set(options(COMMANDS[name])), name


def test_one_option_name_has_one_help_text():
    helps: dict[str, dict[str, list[str]]] = {}
    for name, command in COMMANDS.items():
        for opt, param in options(command).items():
            helps.setdefault(opt, {}).setdefault(param.help or "", []).append(name)
    differing = {opt: by_help for opt, by_help in helps.items() if len(by_help) > 1 and opt not in PER_COMMAND_HELP}
    assert not differing, "\n".join(
        f"{opt}: {list(by_help.values())} have different help texts" for opt, by_help in differing.items()
    )


def test_commands_that_read_a_dataset_have_the_layout_flags():
    readers = {
        name for name, command in COMMANDS.items() if any(DATASET_HELP in (p.help or "") for p in command.params)
    }
    assert readers == DATASET_COMMANDS
    for name in readers:
        missing = [flag for flag in LAYOUT_FLAGS if flag not in options(COMMANDS[name])]
        assert not missing, f"medseg {name} reads a dataset but lacks {missing}"


def takes_config(command) -> bool:
    """A command reads an experiment config: its help names one, or an argument / --dataset may be one."""
    inputs = [p.help or "" for p in command.params if p.param_type_name == "argument" or p.name == "dataset"]
    return any("config" in text.lower() for text in [command.help or "", *inputs])


def test_commands_that_read_a_config_have_set():
    readers = {name for name, command in COMMANDS.items() if takes_config(command)}
    assert readers >= CONFIG_COMMANDS
    assert not [name for name in readers if "--set" not in options(COMMANDS[name])]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_dash_h_is_help_with_examples_last(name):
    short, long = invoke(name, "-h"), invoke(name, "--help")
    assert short.returncode == 0 and short.stdout == long.stdout and "Usage: medseg " + name in short.stdout
    text = " ".join(short.stdout.split())
    assert "Examples:" in text and text.index("Exit codes:") < text.index("Examples:")
    for line in EXAMPLES[name]:
        assert line in text, f"example not shown: {line}"


def test_root_dash_h():
    res = invoke("-h")
    assert res.returncode == 0 and "Usage: medseg" in res.stdout and "synth" in res.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_examples_use_real_options(name):
    assert 2 <= len(EXAMPLES[name]) <= 3
    known = options(COMMANDS[name])
    for line in EXAMPLES[name]:
        words = shlex.split(line)
        assert words[:2] == ["medseg", name], line
        unknown = [w for w in words if w.startswith("-") and w.split("=")[0] not in known]
        assert not unknown, f"{line}: {unknown} are not options of medseg {name}"


def test_choice_options_are_enums_listed_in_the_help():
    seen = set()
    for name, command in COMMANDS.items():
        ctx = command.context_class(command, info_name=name)
        for opt, param in options(command).items():
            if opt not in CHOICE_OPTIONS:
                continue
            seen.add(opt)
            desc = param.type_descriptor
            assert desc.is_choice and issubclass(desc.annotation, (str, enum.Enum)), (
                f"medseg {name} {opt}: not a str enum"
            )
            values = [c.value for c in desc.choices]
            assert CHOICE_OPTIONS[opt] in values and param.display_type(ctx) == f"<{'|'.join(values)}>"
    assert seen == set(CHOICE_OPTIONS)


def test_enums_match_the_libraries():
    assert [p.value for p in Protocol] == ["medseg", *PROTOCOLS]
    assert tuple(s.value for s in RunSort) == SORTS


def test_a_refused_choice_names_the_choices():
    res = invoke("check", ".", "--layout", "bids")
    line = assert_clean_error(res, "--layout", "not one of", code=2)
    assert "use one of auto, msd, nnunet, list, pattern" in line


# ------------------------------------------------------------------------------------ --out is a folder


def test_evaluate_help_names_its_four_files():
    help_text = next(p.help for p in COMMANDS["evaluate"].params if p.name == "out")
    assert "four files" in help_text and all(name in help_text for name in OUTPUT_FILES.values())


def test_evaluate_outputs_are_named_in_the_folder(tmp_path):
    assert output_paths(tmp_path / "ev", []) == {k: tmp_path / "ev" / n for k, n in OUTPUT_FILES.items()}
    assert output_paths(tmp_path / "ev", [], "enhancing")["summary"] == tmp_path / "ev" / "enhancing" / "summary.json"
    with pytest.raises(MedsegError, match="outside --out"):
        output_paths(tmp_path / "ev", [], "..")
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "lesions.csv").write_text("an input")
    with pytest.raises(MedsegError, match="would overwrite the input"):
        output_paths(tmp_path / "ev", [tmp_path / "ev" / "lesions.csv"])


def _mask(path: Path, corner: tuple[int, int, int]) -> Path:
    """A (12, 12, 8) uint8 mask with one 3x3x3 lesion at ``corner``, on an oblique anisotropic grid."""
    data = np.zeros((12, 12, 8), np.uint8)
    x, y, z = corner
    data[x : x + 3, y : y + 3, z : z + 3] = 1
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[1.2 * c, -1.2 * s, 0, 5], [1.2 * s, 1.2 * c, 0, -3], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_evaluate_a_pair_of_files(tmp_path):
    pred, ref = _mask(tmp_path / "p.nii.gz", (2, 2, 2)), _mask(tmp_path / "r.nii.gz", (3, 3, 2))
    res = invoke("evaluate", pred, ref, "--out", tmp_path / "ev")
    assert res.returncode == 0, describe(res)
    rows = (tmp_path / "ev" / "cases.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("r,")
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert (summary["cases"], summary["tp"], summary["fp"]) == (1, 1, 0)
    assert (tmp_path / "ev" / "lesions.csv").is_file() and not (tmp_path / "ev" / "froc.png").exists()


def test_evaluate_a_file_against_a_folder_is_one_clear_error(tmp_path):
    pred = _mask(tmp_path / "p.nii.gz", (2, 2, 2))
    assert_clean_error(invoke("evaluate", pred, tmp_path), "PRED", "one mask file", code=2)
    assert_clean_error(invoke("evaluate", tmp_path, pred), "REF", "one label file", code=2)


# ------------------------------------------------------------------------------------ shared options


def test_set_needs_a_config(tmp_path):
    assert_clean_error(
        invoke("check", tmp_path, "--set", "train.epochs=2"), "--set", "not an experiment config", code=2
    )


def test_layout_flags_without_dataset_are_refused(tmp_path):
    res = invoke("predict", "m.pt", "x.nii.gz", "--out", tmp_path / "o", "--layout", "msd")
    assert_clean_error(res, "--layout", "--dataset", code=2)
    assert not (tmp_path / "o").exists()


def test_device_and_tracking_uri_override_the_config():
    overrides = run_overrides(["train.epochs=2"], "cpu", "sqlite:///runs/x.db")
    assert overrides == ["train.epochs=2", "train.device=cpu", 'tracking.uri="sqlite:///runs/x.db"']
    cfg = load_config(DEMO, overrides)
    assert (cfg.train.epochs, cfg.train.device, cfg.tracking.uri) == (2, "cpu", "sqlite:///runs/x.db")
    assert run_overrides(None, None, None) == []
