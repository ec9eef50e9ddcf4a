"""What every command shares: the error wrapper (one ``error:`` line, its exit code, no
traceback), the checks of option values, small argument parsers and the summary line.

Exit codes, the same for every command: 0 done; 1 some inputs failed, the rest done; 2 user or
config error (a bad option value included); 3 internal error (``--debug`` prints its traceback).
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from medseg.errors import MedsegError, clip

if TYPE_CHECKING:  # the commands import these lazily, to keep `medseg --help` fast
    from medseg.config.schema import EvalConfig, ExperimentConfig


EXIT_CODES = (
    "Exit codes: 0 done, 1 some inputs failed (the rest done), 2 user or config error, "
    "3 internal error (--debug: full report)."
)
DEBUG_ENV = "MEDSEG_DEBUG"
DEBUG_HELP = f"On an internal error print the full traceback (also ${DEBUG_ENV}=1)."
# Typer 0.29 vendors Click (typer._click) and exports only BadParameter; its bases are the parser's
# UsageError and ClickException (click.exceptions' classes with older Typer), found here without a private import.
USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
CLICK_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
CAUSE_CHARS = 300
MEMORY_FIX = (
    "lower it: a smaller inference.sw_batch_size or sampling.patch_size (--set KEY=VALUE; 'medseg plan --memory-gb GB' "
    "plans a patch for a budget), fewer scans per call, or a machine with more memory"
)
OS_FIXES = {
    errno.ENOSPC: "free disk space or write to another disk",
    errno.EDQUOT: "free space in your quota or write elsewhere",
    errno.EACCES: "check its permissions (ls -l) or use a path you can read and write",
    errno.EPERM: "check its permissions (ls -l) or use a path you can read and write",
    errno.EROFS: "the file system is read-only; write to another folder",
    errno.ENOENT: "check that the path exists",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or pass fewer inputs",
    errno.ECONNREFUSED: "check the server address and that it is running",
}


def fail(message: str, code: int) -> None:
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Wrap a command: a :class:`MedsegError` becomes one stderr line and its exit code; any other
    exception one line naming it (exit 3; 2 for a file system error), its traceback only with
    ``--debug`` (after the command, or ``medseg --debug``) or ``$MEDSEG_DEBUG``; Ctrl-C exits 130.
    The parser's own exits and usage errors pass (``medseg.cli.app`` formats those).

    The wrapper takes ``--debug`` and the Typer context on top of ``fn``'s parameters.
    """
    command = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, medseg_context: typer.Context | None = None, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedsegError as err:
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (typer.Exit, typer.Abort, CLICK_ERROR, BrokenPipeError):
            raise  # a closed pipe (`medseg runs | head`) is Typer's to silence
        except Exception as err:  # every other failure: one line, the traceback behind --debug
            if debug or debug_requested(medseg_context):
                traceback.print_exc()
            fail(*unexpected_error(command, err))

    sig = inspect.signature(fn, eval_str=True)
    extra = [
        inspect.Parameter(
            "debug",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(False, "--debug", help=DEBUG_HELP),
        ),
        inspect.Parameter("medseg_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    ]
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, "debug": bool, "medseg_context": typer.Context}
    return wrapper


def debug_requested(ctx: typer.Context | None) -> bool:
    """``medseg --debug COMMAND`` (the root's option), or ``$MEDSEG_DEBUG`` set to 1/true/yes/on."""
    root = ctx.find_root().params if ctx is not None else {}
    return bool(root.get("debug")) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def unexpected_error(command: str, err: Exception) -> tuple[str, int]:
    """(one line, exit code) for an exception no part of medseg turned into a :class:`MedsegError`:
    out of memory (exit 3, how to need less), a file system error with its path (exit 2), else an
    internal error (exit 3)."""
    torch = sys.modules.get("torch")  # a CUDA out-of-memory is a RuntimeError, not a MemoryError
    if isinstance(err, MemoryError) or (torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)):
        return f"medseg {command} ran out of memory ({cause(err)}); {MEMORY_FIX}", 3
    if isinstance(err, OSError) and err.errno is not None:
        return os_error_line(command, err), 2
    return (
        f"internal error in medseg {command}: {cause(err)}; rerun with --debug for the full report and please report it"
    ), 3


def os_error_line(command: str, err: OSError) -> str:
    """``<path>: <what the system said>; <fix>`` for an OSError that carries an errno."""
    fix = OS_FIXES.get(err.errno, "check the path, the disk and the permissions")
    problem = err.strerror or cause(err)
    if err.filename is None:
        return f"medseg {command}: {problem}; {fix}"
    path = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else f"{err.filename}"
    return f"{path}: {problem}; {fix}"


def cause(err: BaseException) -> str:
    """``<ExceptionType>: <first line of its message>`` cut to :data:`CAUSE_CHARS` characters."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {cut(lines[0])}" if lines else type(err).__name__


def cut(text: str, limit: int = CAUSE_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (then ending with ``…``)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def usage_error_line(err: Exception) -> str:
    """A parser error (bad option value, missing argument, unknown option or command) as one line:
    ``<option or command>: <problem>; see '<command> --help'``."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "medseg"
    fix = f"see '{command} --help'"
    param = getattr(err, "param", None)
    if isinstance(err, typer.BadParameter) and param is not None:
        kind = getattr(param, "param_type_name", "option")
        name = "/".join(param.opts) if kind == "option" else param.name.upper()
        if not err.message:  # MissingParameter
            return f"{name}: missing {kind}; give {name}, {fix}"
        choices = choice_values(param)
        if choices:  # an enum option: the parser's message lists the choices quoted; say what to use instead
            return f"{name}{bad_value(err)}: not one of its choices; use one of {', '.join(choices)}; {fix}"
        return f"{name}{bad_value(err)}: {lower_first(cut(err.message))}; {fix}"
    return f"{command}: {lower_first(cut(str(err.format_message())))}; {fix}"  # type: ignore[attr-defined]


def choice_values(param: Any) -> list[str]:
    """The choices of an enum option as strings ([] for any other parameter). Typer 0.29 describes
    a parameter's type in ``type_descriptor``; Click's ``Choice`` (older Typer) in ``type``."""
    desc = getattr(param, "type_descriptor", None)
    choices = (
        desc.choices if desc is not None and desc.is_choice else getattr(getattr(param, "type", None), "choices", None)
    )
    return [str(getattr(c, "value", c)) for c in choices or ()]


def bad_value(err: Exception) -> str:
    """`` 'VALUE'`` the parser refused: Typer 0.29 validates with pydantic and keeps the input in the cause."""
    errors = getattr(err.__cause__, "errors", None)
    if not callable(errors):
        return ""
    found = errors()
    return f" {clip(str(found[0]['input']), 80)}" if found and "input" in found[0] else ""


def lower_first(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]


def check_device(device: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N of a CUDA device this machine has.

    Raises:
        MedsegError: another name, or a CUDA device that is not there.
    """
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise MedsegError(f"--device {device!r}: use auto, cpu, cuda or cuda:N (N = a GPU index, e.g. cuda:0)")
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(device.partition(":")[2] or 0) >= count:
            have = (
                f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
                if count
                else "no CUDA device is available"
            )
            raise MedsegError(f"--device {device}: {have}; use --device auto or cpu" + (", or cuda:0" if count else ""))
    return device


def run_overrides(set_: list[str] | None, device: str | None, tracking_uri: str | None) -> list[str]:
    """``--set`` assignments, then ``--device`` as ``train.device`` and ``--tracking-uri`` as
    ``tracking.uri`` (train, demo: the options win over the config and over ``--set``).

    Raises:
        MedsegError: a device this machine lacks, or cuda:N (the config's train.device takes auto, cpu or cuda).
    """
    overrides = list(set_ or [])
    if device is not None:
        check_device(device)
        if ":" in device:
            raise MedsegError(
                f"--device {device}: train and demo take auto, cpu or cuda (the config's train.device); choose the "
                f"GPU with CUDA_VISIBLE_DEVICES={device.partition(':')[2]} and --device cuda"
            )
        overrides.append(f"train.device={device}")
    if tracking_uri is not None:
        overrides.append(
            f"tracking.uri={json.dumps(tracking_uri)}"
        )  # a JSON string is a YAML string: the URI read as written
    return overrides


def check_exists(path: Path, option: str, what: str, folder: bool = False) -> Path:
    """An input path that must exist (``what``: what it should be, e.g. "folder of predicted masks"),
    with ``folder`` as a folder.

    Raises:
        MedsegError: it does not, or it is not a folder.
    """
    if not path.exists():
        raise MedsegError(f"{path}: no such {what} ({option}); check the path")
    if folder and not path.is_dir():
        raise MedsegError(f"{path}: is a file, not a folder ({option}); give the {what}")
    return path


def check_out_folder(path: Path, option: str) -> Path:
    """An output folder: missing (it is created) or a folder, never an existing file.

    Raises:
        MedsegError: ``path`` is a file.
    """
    if path.exists() and not path.is_dir():
        raise MedsegError(f"{option} {path}: is a file, not a folder; give a folder (it is created when missing)")
    return path


def triple(text: str, kind: type, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise MedsegError(f"{option} {text!r}: expected three positive numbers like 96,96,64")
    return values


def lesion_values(text: str | None, cfg: ExperimentConfig | None) -> tuple[int, ...] | None:
    """--lesion-labels, else the label values a config counts as lesion (any class), else None."""
    if text:
        return ints(text, "--lesion-labels")
    if cfg is None:
        return None
    from medseg.config.schema import all_lesion_values

    return all_lesion_values(cfg.data)


def ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise MedsegError(f"{option} {text!r}: expected positive integers (label values; 0 is background) like 1,2,3,4")
    return values


def rank() -> int:

    return int(os.environ.get("RANK", "0"))


def check_protocol(protocol: str, rule_options_set: bool) -> None:
    """``--protocol``: a BraTS protocol fixes the matching itself (the parser checked the name).

    Raises:
        MedsegError: --matching/--dilate/--min-lesion-*/--one-to-one given with a BraTS protocol.
    """
    if protocol != "medseg" and rule_options_set:
        raise MedsegError(
            f"--protocol {protocol} fixes the matching (dilation, minimum size, many-to-one); "
            "drop --matching/--dilate/--min-lesion-voxels/--min-lesion-mm3/--one-to-one"
        )


def print_summary(s: dict) -> None:
    if "lesionwise_dice" in s:
        ps = s["protocol_settings"]
        typer.echo(
            f"protocol {s['protocol']}: lesion-wise dice {s['lesionwise_dice']:.3f}  lesion-wise HD95 "
            f"{s['lesionwise_hd95_mm']:.2f} mm  (GT merged by {ps['structure']} dilation {ps['dilation_voxels']}, "
            f"GT lesions > {ps['gt_min_mm3']:g} mm3 scored, misses and FPs scored 0 / {ps['hd95_penalty_mm']:g} mm)"
        )
    rule = f"protocol {s['protocol']}" if "lesionwise_dice" in s else f"matching rule '{s['matching']}'"
    typer.echo(
        f"{s['cases']} case(s), {rule}: dice {s['dice']:.3f}  lesion recall "
        f"{s['lesion_recall']:.3f}  precision {s['lesion_precision']:.3f}  F1 {s['lesion_f1']:.3f}  "
        f"FP/scan {s['fp_per_scan']:.2f}  (GT lesions {s['gt_lesions']}, found {s['tp']}, FP {s['fp']})"
    )
    if s.get("hd95_cases_excluded"):
        median = "none" if s["hd95_mm_median"] is None else f"{s['hd95_mm_median']:.2f} mm"
        typer.echo(
            f"HD95 median {median} over {s['cases'] - s['hd95_cases_excluded']} case(s); {s['hd95_cases_excluded']} "
            "case(s) "
            "with exactly one empty mask left out (--hd95-empty MM gives them a penalty instead)"
        )
    if s.get("dice_cases_excluded"):
        typer.echo(
            f"Dice mean over {s['cases'] - s['dice_cases_excluded']} case(s); {s['dice_cases_excluded']} with both "
            "masks empty left out (--empty-dice nan)"
        )


def eval_rule(matching: str, match_threshold: float | None, connectivity: int, one_to_one: bool) -> EvalConfig:
    """The ``eval`` config section from ``medseg evaluate``'s options (an ``EvalConfig``; the parser
    checked the rule and the connectivity).

    Raises:
        MedsegError: a threshold outside [0, 1].
    """
    from pydantic import ValidationError

    from medseg.config.schema import EvalConfig

    try:
        return EvalConfig(
            matching=matching, match_threshold=match_threshold, connectivity=connectivity, one_to_one=one_to_one
        )
    except ValidationError as err:
        raise MedsegError(
            f"--match-threshold {match_threshold}: {err.errors()[0]['msg']} (an IoU or Dice between 0 and 1)"
        ) from None
