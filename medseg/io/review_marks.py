"""Reviewer marks: accept / reject / comment per scan and per lesion, kept as
``review_marks.json`` beside the masks (written by ``medseg review --serve``, or downloaded from a
page opened from ``file://``).

Format (``"format": "medseg-review-marks/1"``)::

    {"format": "medseg-review-marks/1",
     "marks": [{"case": "synth_020", "kind": "scan", "id": null, "decision": "accept", "comment": ""},
               {"case": "synth_020", "kind": "pred", "id": 3, "decision": "reject",
                "comment": "vessel", "status": "false_positive", "centroid_mm": [12.5, -3.0, 40.25]}]}

* ``kind``: ``scan`` (the whole scan, ``id`` null), ``pred`` (predicted lesion ``id`` of the
  mask's lesion table) or ``gt`` (reference lesion ``id``, e.g. a missed one).
* ``decision``: ``accept``, ``reject`` or ``""`` (a comment only).
* ``status`` (the lesion's match status when it was marked) and ``centroid_mm`` (its world
  coordinate) are kept so a mark still names its lesion if the masks change.

``data.review_marks`` of a training config leaves the scans rejected here out of training.

A file read back (the server's request body, a file beside the masks, a config's file) is untrusted: every field
is checked here, unknown keys are refused, and it never chooses where anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError, clip
from medseg.io.write import write_text

MARKS_FORMAT = "medseg-review-marks/1"
MARKS_FILE = "review_marks.json"
KINDS = ("scan", "pred", "gt")
DECISIONS = ("accept", "reject", "")
MAX_MARKS = 100_000
MAX_COMMENT = 2000
KEYS = {"case", "kind", "id", "decision", "comment", "status", "centroid_mm"}


@dataclass(frozen=True)
class Mark:
    """One reviewer decision (see the module docstring for the fields)."""

    case: str
    kind: str
    id: int | None
    decision: str
    comment: str = ""
    status: str = ""
    centroid_mm: tuple[float, float, float] | None = None


def _text(entry: dict, key: str, where: str, default: str | None = None) -> str:
    """``entry[key]`` (``default`` when absent), which must be a string.

    Raises:
        MedsegError: it is missing or not a string.
    """
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise MedsegError(f"{where}: {key} {clip(value, 60)} is not a text")
    return value


def parse_mark(entry: Any, cases: Collection[str] | None, where: str) -> Mark:
    """One mark from its JSON object.

    Raises:
        MedsegError: a missing, unknown or ill-typed field, a case not in ``cases``.
    """
    if not isinstance(entry, dict) or set(entry) - KEYS:
        raise MedsegError(f"{where}: expected an object with keys among {sorted(KEYS)}, got {clip(entry, 80)}")
    case, kind, decision = (_text(entry, k, where) for k in ("case", "kind", "decision"))
    comment, status = (_text(entry, k, where, "") for k in ("comment", "status"))
    if cases is not None and case not in cases:
        raise MedsegError(f"{where}: case {clip(case, 60)} is not a scan of this review")
    if kind not in KINDS or decision not in DECISIONS or len(comment) > MAX_COMMENT or len(status) > 40:
        raise MedsegError(
            f"{where}: kind must be one of {KINDS}, decision one of {DECISIONS}, comment at most {MAX_COMMENT} "
            "characters"
        )
    ident = entry.get("id")
    if kind == "scan" and ident is not None or kind != "scan" and not (type(ident) is int and 0 < ident < 10**7):
        raise MedsegError(f"{where}: id {clip(ident, 40)}: null for a scan mark, a lesion number (1, 2, ...) otherwise")
    centre = entry.get("centroid_mm")
    if centre is not None and not (
        isinstance(centre, list)
        and len(centre) == 3
        and all(type(c) in (int, float) and math.isfinite(c) for c in centre)
    ):
        raise MedsegError(f"{where}: centroid_mm {clip(centre, 60)} is not three numbers")
    return Mark(case, kind, ident, decision, comment, status, tuple(float(c) for c in centre) if centre else None)


def parse_marks(data: Any, cases: Collection[str] | None, source: str) -> list[Mark]:
    """The marks of a decoded ``review_marks.json`` (module docstring); ``cases``: the scans they
    may name (None: any).

    Raises:
        MedsegError: naming ``source`` and what is wrong.
    """
    if not isinstance(data, dict) or data.get("format") != MARKS_FORMAT or not isinstance(data.get("marks"), list):
        raise MedsegError(
            f'{source}: not a review marks file (expected {{"format": "{MARKS_FORMAT}", "marks": [...]}})'
        )
    if len(data["marks"]) > MAX_MARKS:
        raise MedsegError(f"{source}: {len(data['marks'])} marks, at most {MAX_MARKS}")
    return [parse_mark(entry, cases, f"{source}: mark {i + 1}") for i, entry in enumerate(data["marks"])]


def read_marks(path: Path, cases: Collection[str] | None = None) -> list[Mark]:
    """The marks of a ``review_marks.json`` file ([] when it does not exist).

    Raises:
        MedsegError: unreadable or not a marks file; the fix is to move it away.
    """
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MedsegError(f"{path}: cannot read the review marks ({err}); fix or move the file away") from None
    return parse_marks(data, cases, str(path))


def marks_document(marks: list[Mark]) -> dict[str, Any]:
    """The JSON document of ``marks`` (empty comment/status/centroid fields left out)."""
    rows = []
    for mark in marks:
        row = {k: v for k, v in asdict(mark).items() if v not in ("", None) or k in ("id", "decision")}
        rows.append({**row, **({"centroid_mm": list(mark.centroid_mm)} if mark.centroid_mm else {})})
    return {"format": MARKS_FORMAT, "marks": rows}


def write_marks(marks: list[Mark], path: Path) -> None:
    """Write ``marks`` to ``path`` atomically."""
    write_text(json.dumps(marks_document(marks), indent=1), path)


def decided(marks: list[Mark], decision: str, kind: str = "pred") -> list[tuple[str, int | None]]:
    """(case, id) of the marks of ``kind`` with ``decision``, e.g. the rejected predicted lesions."""
    return [(m.case, m.id) for m in marks if m.kind == kind and m.decision == decision]
