"""CSV and YAML case lists."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from medseg.config.load import parse_yaml
from medseg.data.case import Case
from medseg.data.sources.common import case_name, declared_labels, inside_root
from medseg.errors import MedsegError, clip, yaml_syntax_error
from medseg.io.paths import expand


def read_case_list(
    path: Path, problems: list[str], allow_outside: bool = False
) -> tuple[list[Case], tuple[str, ...], frozenset[int] | None]:
    """Cases of a CSV or YAML list; paths relative to the list's folder and inside it unless
    ``allow_outside`` (or ``allow_outside: true`` at the top of a YAML list)."""
    labels = None
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                header = reader.fieldnames or []
                rows = list(reader)
            if "case_id" not in header:
                raise MedsegError(f"{path}: the CSV needs a header 'case_id,<channel>,...,label'; got {header}")
            channels = tuple(h for h in header if h not in ("case_id", "label"))
            entries = [
                {"case_id": r["case_id"], "images": [r[c] for c in channels], "label": r.get("label")} for r in rows
            ]
        else:
            raw = parse_yaml(path.read_text())  # YAML 1.2: case id 0012 stays 0012
            raw = {"cases": raw} if isinstance(raw, list) else raw
            if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
                raise MedsegError(
                    f"{path}: expected 'cases: [{{case_id: a, images: [a_flair.nii.gz], label: a_seg.nii.gz}}, ...]'"
                )
            entries = raw["cases"]
            labels = declared_labels(raw, path)
            channels = tuple(raw.get("channels") or ())
            allow_outside = allow_outside or raw.get("allow_outside") is True
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(path, exc) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsegError(f"{path}: cannot read the case list ({exc}); fix the file") from None
    cases = [c for i, entry in enumerate(entries) if (c := _entry_case(entry, i, path, problems, allow_outside))]
    if not channels and cases:
        channels = tuple(f"channel{i}" for i in range(len(cases[0].images)))
    return cases, channels, labels


def _entry_case(entry: object, i: int, path: Path, problems: list[str], allow_outside: bool) -> Case | None:
    """One list entry as a :class:`Case`, or None with its problems appended (no case_id or
    images, an unsafe case_id, a path outside the list's folder, a missing file)."""
    images = (
        (entry.get("images") or ([entry["image"]] if entry.get("image") else [])) if isinstance(entry, dict) else []
    )
    if not images or not entry.get("case_id"):
        problems.append(f"{path}: entry {i + 1} needs case_id and images (got {clip(entry)})")
        return None
    case_id = case_name(entry["case_id"], path, problems)
    files = [
        inside_root(path.parent, expand(p), path, problems, allow_outside)
        for p in [*images, *([entry["label"]] if entry.get("label") else [])]
    ]
    if case_id is None or None in files:
        return None
    missing = [p for p in files if not p.is_file()]
    for p in missing:
        problems.append(f"{path}: case {case_id} names {p}, which does not exist; fix the path")
    if missing:
        return None
    return Case(case_id, tuple(files[: len(images)]), files[len(images)] if entry.get("label") else None)
