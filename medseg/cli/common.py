"""What every command shares: the user-error wrapper (one ``error:`` line, its exit code, no
traceback), small argument parsers and the summary line."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Callable, List, Optional

import typer

from medseg.errors import MedsegError

if TYPE_CHECKING:  # the commands import these lazily, to keep `medseg --help` fast
    from medseg.config.schema import EvalConfig, ExperimentConfig
    from medseg.data.sources.common import Dataset


def fail(message: str, code: int) -> None:
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn MedsegError into one clear stderr line and its exit code, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedsegError as err:
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def triple(text: str, kind: type, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise MedsegError(f"{option} {text!r}: expected three positive numbers like 96,96,64")
    return values


def dataset_argument(dataset: str, layout: str, channels: Optional[List[str]], label: Optional[str]
                     ) -> tuple[Dataset, ExperimentConfig | None]:
    from medseg.data.sources.discover import from_argument

    if layout not in ("auto", "msd", "nnunet", "list", "pattern"):
        raise MedsegError(f"--layout {layout!r}: use auto, msd, nnunet, list or pattern")
    return from_argument(dataset, layout, channels or None, label)


DATASET_HELP = "Dataset folder (MSD, nnU-Net raw), case list (.csv/.yaml), or an experiment config whose data: section is used."


def lesion_values(text: Optional[str], cfg: ExperimentConfig | None) -> Optional[tuple[int, ...]]:
    """--lesion-labels, else the label values a config counts as lesion (any class), else None."""
    if text:
        return ints(text, "--lesion-labels")
    if cfg is None:
        return None
    from medseg.config.schema import all_lesion_values

    return all_lesion_values(cfg.data)


def ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise MedsegError(f"{option} {text!r}: expected integers like 1,2,3,4") from None


def rank() -> int:

    return int(os.environ.get("RANK", "0"))


def parse_empty_dice(text: str) -> float:
    if text.strip().lower() not in ("1", "nan"):
        raise MedsegError(f"--empty-dice {text!r}: use 1 or nan")
    return float(text)


def check_protocol(protocol: str, rule_options_set: bool) -> None:
    """``--protocol``: a known name, and not combined with matching options it fixes itself.

    Raises:
        MedsegError: unknown protocol, or --dilate/--min-*/--one-to-one/--matching given with a BraTS protocol.
    """
    from medseg.evaluation.brats import PROTOCOLS

    if protocol != "medseg" and protocol not in PROTOCOLS:
        raise MedsegError(f"--protocol {protocol!r}: use medseg or one of {', '.join(PROTOCOLS)}")
    if protocol != "medseg" and rule_options_set:
        raise MedsegError(f"--protocol {protocol} fixes the matching (dilation, minimum size, many-to-one); drop --matching/--dilate/--min-voxels/--min-mm3/--one-to-one")


def print_summary(s: dict) -> None:
    if "lesionwise_dice" in s:
        ps = s["protocol_settings"]
        typer.echo(f"protocol {s['protocol']}: lesion-wise dice {s['lesionwise_dice']:.3f}  lesion-wise HD95 "
                   f"{s['lesionwise_hd95_mm']:.2f} mm  (GT merged by {ps['structure']} dilation {ps['dilation_voxels']}, "
                   f"GT lesions > {ps['gt_min_mm3']:g} mm3 scored, misses and FPs scored 0 / {ps['hd95_penalty_mm']:g} mm)")
    rule = f"protocol {s['protocol']}" if "lesionwise_dice" in s else f"matching rule '{s['matching']}'"
    typer.echo(f"{s['cases']} case(s), {rule}: dice {s['dice']:.3f}  lesion recall "
               f"{s['lesion_recall']:.3f}  precision {s['lesion_precision']:.3f}  F1 {s['lesion_f1']:.3f}  "
               f"FP/scan {s['fp_per_scan']:.2f}  (GT lesions {s['gt_lesions']}, found {s['tp']}, FP {s['fp']})")
    if s.get("hd95_cases_excluded"):
        median = "none" if s["hd95_mm_median"] is None else f"{s['hd95_mm_median']:.2f} mm"
        typer.echo(f"HD95 median {median} over {s['cases'] - s['hd95_cases_excluded']} case(s); {s['hd95_cases_excluded']} case(s) "
                   "with exactly one empty mask left out (--hd95-empty MM gives them a penalty instead)")
    if s.get("dice_cases_excluded"):
        typer.echo(f"Dice mean over {s['cases'] - s['dice_cases_excluded']} case(s); {s['dice_cases_excluded']} with both masks empty left out (--empty-dice nan)")


def eval_rule(matching: str, match_threshold: Optional[float], connectivity: int, one_to_one: bool) -> EvalConfig:
    """The ``eval`` config section from ``medseg evaluate``'s options (an ``EvalConfig``).

    Raises:
        MedsegError: an unknown rule or connectivity, or a threshold outside [0, 1].
    """
    from pydantic import ValidationError

    from medseg.config.schema import EvalConfig

    if matching not in ("overlap", "iou", "dsc") or connectivity not in (6, 18, 26):
        raise MedsegError(f"--matching {matching!r} / --connectivity {connectivity}: use overlap|iou|dsc and 6|18|26")
    try:
        return EvalConfig(matching=matching, match_threshold=match_threshold, connectivity=connectivity, one_to_one=one_to_one)
    except ValidationError as err:
        raise MedsegError(f"--match-threshold {match_threshold}: {err.errors()[0]['msg']} (an IoU or Dice between 0 and 1)") from None
