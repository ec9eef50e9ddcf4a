"""Exit codes and option checks of every command (issue 31): 0 done, 1 some inputs failed, 2 user
or config error, 3 internal error. An unexpected exception is ONE ``error:`` line naming the
command and the exception (exit 3), its traceback only with ``--debug`` / ``MEDSEG_DEBUG=1``; a
usage error or an option value out of range is ONE line naming the option (exit 2), never Click's
usage box. The commands run in-process through Typer's CliRunner, a library function they call
monkeypatched to fail; one case runs the installed ``medseg`` to check the console entry point.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import MedsegError
from tests.conftest import MEDSEG
from tests.robustness.conftest import TRACEBACK, assert_clean_error, cli_env, describe, error_lines

# command -> (the library function it calls that the test makes fail, its arguments up to that call)
INJECT = {
    "synth": ("medseg.data.synthetic.write_dataset", ["--out", "{tmp}/data"]),
    "train": ("medseg.config.load.load_config", ["{tmp}/exp.yaml"]),
    "predict": (
        "medseg.inference.batch.predict_files",
        ["{tmp}/best.pt", "{tmp}/scan.nii.gz", "--out", "{tmp}/out", "--device", "cpu"],
    ),
    "evaluate": ("medseg.evaluation.evaluate.evaluate_dirs", ["{tmp}", "{tmp}"]),
    "tune": ("medseg.calibration.tune.run_tune", ["{tmp}/best.pt", "--device", "cpu"]),
    "check": ("medseg.data.sources.discover.from_argument", ["{tmp}"]),
    "plan": ("medseg.data.sources.discover.from_argument", ["{tmp}"]),
    "show": ("medseg.viz.show.show_case", ["{tmp}/scan.nii.gz"]),
    "demo": ("medseg.demo.run_demo", ["--out", "{tmp}/demo"]),
    "runs": ("medseg.tracking.runs.run_rows", ["--tracking-uri", "sqlite:///{tmp}/mlflow.db"]),
}


def invoke(*args: str, env: dict[str, str] | None = None) -> SimpleNamespace:
    """``medseg ARGS`` in-process; the result shaped like a CompletedProcess for the conftest helpers."""
    res = CliRunner().invoke(app, [str(a) for a in args], env=env, prog_name="medseg")
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def inject(monkeypatch, command: str, tmp_path: Path, exc: BaseException) -> list[str]:
    """Make ``command``'s library call raise ``exc``; returns the command line that reaches it."""
    target, args = INJECT[command]
    module, name = target.rsplit(".", 1)

    def broken(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr(f"{module}.{name}", broken)
    monkeypatch.delenv("MEDSEG_DEBUG", raising=False)
    return [command, *(a.format(tmp=tmp_path) for a in args)]


def only_error_line(res: SimpleNamespace) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), describe(res)
    return lines[0]


# ------------------------------------------------------------------------------------ internal errors


@pytest.mark.parametrize("command", INJECT)
def test_internal_error_is_one_line_and_exit_3(monkeypatch, tmp_path, command):
    args = inject(monkeypatch, command, tmp_path, RuntimeError("injected fault\nsecond line of the cause"))
    res = invoke(*args)
    assert res.returncode == 3, describe(res)
    line = only_error_line(res)
    assert line.startswith(f"error: internal error in medseg {command}: RuntimeError: injected fault; "), line
    assert "rerun with --debug" in line and "second line" not in line and TRACEBACK not in res.stderr


@pytest.mark.parametrize("command", INJECT)
def test_debug_after_the_command_prints_the_traceback(monkeypatch, tmp_path, command):
    args = inject(monkeypatch, command, tmp_path, RuntimeError("injected fault"))
    res = invoke(*args, "--debug")
    assert res.returncode == 3, describe(res)
    assert TRACEBACK in res.stderr and "RuntimeError: injected fault" in res.stderr
    assert error_lines(res.stderr) == [res.stderr.strip().splitlines()[-1]]  # the one-line summary closes the report


@pytest.mark.parametrize("how", ["root option", "environment"])
def test_debug_before_the_command_or_from_the_environment(monkeypatch, tmp_path, how):
    args = inject(monkeypatch, "predict", tmp_path, ValueError("injected fault"))
    res = invoke("--debug", *args) if how == "root option" else invoke(*args, env={"MEDSEG_DEBUG": "1"})
    assert res.returncode == 3 and TRACEBACK in res.stderr and "ValueError: injected fault" in res.stderr, describe(res)


def test_a_long_cause_is_cut_to_one_line(monkeypatch, tmp_path):
    res = invoke(*inject(monkeypatch, "evaluate", tmp_path, KeyError("k" * 2000)))
    line = only_error_line(res)
    assert res.returncode == 3 and "KeyError: 'kkk" in line and "…" in line
    assert 300 < len(line) < 450, len(line)


def test_out_of_memory_says_how_to_need_less(monkeypatch, tmp_path):
    res = invoke(*inject(monkeypatch, "predict", tmp_path, MemoryError()))
    line = only_error_line(res)
    assert res.returncode == 3 and "medseg predict ran out of memory (MemoryError)" in line
    assert "sw_batch_size" in line and "patch_size" in line


@pytest.mark.parametrize(
    "code,fix",
    [
        (errno.ENOSPC, "free disk space or write to another disk"),
        (errno.EACCES, "check its permissions (ls -l) or use a path you can read and write"),
    ],
)
def test_file_system_error_names_the_path_and_the_fix(monkeypatch, tmp_path, code, fix):
    path = tmp_path / "out" / "c1.nii.gz"
    res = invoke(*inject(monkeypatch, "synth", tmp_path, OSError(code, "system says no", str(path))))
    assert res.returncode == 2 and only_error_line(res) == f"error: {path}: system says no; {fix}", describe(res)


def test_ctrl_c_exits_130(monkeypatch, tmp_path):
    res = invoke(*inject(monkeypatch, "runs", tmp_path, KeyboardInterrupt()))
    assert res.returncode == 130 and only_error_line(res) == "error: interrupted"


def test_a_user_error_keeps_its_code(monkeypatch, tmp_path):
    res = invoke(*inject(monkeypatch, "check", tmp_path, MedsegError("data.json: broken; fix it", 1)))
    assert res.returncode == 1 and only_error_line(res) == "error: data.json: broken; fix it"


# ------------------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize("command", INJECT)
def test_unknown_option_is_one_line(command):
    res = invoke(command, "--no-such-option")
    assert res.returncode == 2, describe(res)
    line = only_error_line(res)
    assert (
        "--no-such-option" in line and f"'medseg {command} --help'" in line and "Usage" not in res.stderr + res.stdout
    )


@pytest.mark.parametrize(
    "command,name",
    [
        ("predict", "MODEL"),
        ("evaluate", "PRED"),
        ("tune", "CHECKPOINT"),
        ("check", "DATASET"),
        ("plan", "DATASET"),
        ("show", "CASE"),
    ],
)
def test_missing_argument_is_one_line(command, name):
    res = invoke(command)
    assert (
        res.returncode == 2
        and only_error_line(res) == f"error: {name}: missing argument; give {name}, see 'medseg {command} --help'"
    )


def test_missing_required_option_is_one_line():
    res = invoke("synth")
    assert (
        res.returncode == 2
        and only_error_line(res) == "error: --out: missing option; give --out, see 'medseg synth --help'"
    )


def test_bad_value_type_names_option_and_value():
    res = invoke("predict", "m", "x", "--out", "o", "--threshold", "abc")
    assert res.returncode == 2
    assert only_error_line(res).startswith("error: --threshold 'abc': input should be a valid number")


def test_no_arguments_still_prints_help_and_completion_is_offered():
    res = invoke()
    assert res.returncode == 2 and "Usage" in res.stdout and "synth" in res.stdout and "error:" not in res.stderr
    helped = invoke("--help")
    assert helped.returncode == 0 and "--install-completion" in helped.stdout and "Exit codes: 0 done" in helped.stdout


@pytest.mark.parametrize("command", INJECT)
def test_help_documents_exit_codes_and_debug(command):
    res = invoke(command, "--help")
    assert res.returncode == 0 and "--debug" in res.stdout and "3 internal error" in " ".join(res.stdout.split())


def test_console_entry_point_formats_usage_errors(tmp_path):
    res = subprocess.run(
        [*MEDSEG, "tune", "x", "--min-recall", "2"], capture_output=True, text=True, timeout=120, env=cli_env()
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "error: --min-recall '2': input should be less than or equal to 1; see 'medseg tune --help'"
    )


# ------------------------------------------------------------------------------------ option values

A_FILE = "{tmp}/a_file"
# (command line, the option or path the one error line must name, a word of the problem)
OUT_OF_RANGE = [
    (["synth", "--out", "{tmp}/d", "--cases", "0"], "--cases", "greater than"),
    (["synth", "--out", "{tmp}/d", "--seed", "-1"], "--seed", "greater than"),
    (["synth", "--out", "{tmp}/d", "--spacing", "nan,1,1"], "--spacing", "positive"),
    (["synth", "--out", A_FILE], "a_file", "not a folder"),
    (["train", "{tmp}/c.yaml", "--folds", "1"], "--folds", "greater than"),
    (["train", "{tmp}/c.yaml", "--folds", "3", "--fold", "3"], "--fold", "out of range"),
    (["train", "{tmp}/c.yaml", "--seeds", "1"], "--seeds", "greater than"),
    (["predict", "m", "x", "--out", "{tmp}/o", "--threshold", "1.5"], "--threshold", "less than"),
    (["predict", "m", "x", "--out", "{tmp}/o", "--threshold", "nan"], "--threshold", ("less than", "greater than")),
    (["predict", "m", "x", "--out", "{tmp}/o", "--min-lesion-mm3", "-1"], "--min-lesion-mm3", "greater than"),
    (["predict", "m", "x", "--out", "{tmp}/o", "--device", "gpu"], "--device", "use auto"),
    (["predict", "m", "x", "--out", "{tmp}/o", "--split", "val"], "--split", "not one of"),
    (["predict", "m", "x", "--out", A_FILE], "a_file", "not a folder"),
    (["evaluate", "{tmp}", "{tmp}", "--match-threshold", "2", "--matching", "iou"], "--match-threshold", "less than"),
    (["evaluate", "{tmp}", "{tmp}", "--dilate", "-1"], "--dilate", "greater than"),
    (["evaluate", "{tmp}", "{tmp}", "--hd95-empty", "-5"], "--hd95-empty", "greater than"),
    (["evaluate", "{tmp}", "{tmp}", "--connectivity", "7"], "--connectivity", "not one of"),
    (["evaluate", "{tmp}", "{tmp}", "--matching", "hausdorff"], "--matching", "not one of"),
    (["evaluate", "{tmp}", "{tmp}", "--empty-dice", "0"], "--empty-dice", "not one of"),
    (["evaluate", "{tmp}/missing", "{tmp}"], "missing", "no such"),
    (["evaluate", A_FILE, "{tmp}"], "a_file", "not a folder"),
    (["evaluate", "{tmp}", "{tmp}", "--out", A_FILE], "a_file", "not a folder"),
    (["tune", "{tmp}/best.pt", "--min-recall", "-0.1"], "--min-recall", "greater than"),
    (["tune", "{tmp}/best.pt", "--device", "cuda:x"], "--device", "use auto"),
    (["check", "{tmp}", "--atol", "-1"], "--atol", "greater than"),
    (["check", "{tmp}", "--layout", "bids"], "--layout", "not one of"),
    (["plan", "{tmp}", "--memory-gb", "0"], "--memory-gb", "greater than"),
    (["plan", "{tmp}", "--out", A_FILE], "a_file", "not a folder"),
    (["show", "{tmp}/scan.nii.gz", "--out", A_FILE], "a_file", "not a folder"),
    (["show", "{tmp}/scan.nii.gz", "--lesion-labels", "0,1"], "--lesion-labels", "positive integers"),
    (["demo", "--cases", "2"], "--cases", "greater than"),
    (["demo", "--out", A_FILE], "a_file", "not a folder"),
    (["runs", "--limit", "0"], "--limit", "greater than"),
    (["runs", "--sort", "speed"], "--sort", "not one of"),
]


@pytest.mark.parametrize("args,name,words", OUT_OF_RANGE, ids=[f"{a[0]}-{n.strip('-')}" for a, n, _ in OUT_OF_RANGE])
def test_option_out_of_range_is_one_line_naming_it(tmp_path, args, name, words):
    (tmp_path / "a_file").write_text("a file, not a folder")
    res = invoke(*(a.format(tmp=tmp_path) for a in args))
    assert_clean_error(res, name, words, code=2)
    assert len(res.stderr.strip().splitlines()) == 1, describe(res)
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()


def test_a_missing_cuda_device_is_a_clean_error(tmp_path):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    res = invoke("predict", "m", "x", "--out", tmp_path / "o", "--device", f"cuda:{count}")
    line = assert_clean_error(res, f"--device cuda:{count}", ("no CUDA device", "this machine has"), code=2)
    assert line.endswith("use --device auto or cpu" + (", or cuda:0" if count else ""))
