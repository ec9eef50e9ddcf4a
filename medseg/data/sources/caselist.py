"""CSV and YAML case lists.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import yaml

from medseg.data.case import Case
from medseg.data.sources.common import declared_labels
from medseg.errors import MedsegError, yaml_syntax_error
from medseg.io.paths import expand


def read_case_list(path: Path, problems: list[str]) -> tuple[list[Case], tuple[str, ...], Optional[frozenset[int]]]:
    root = path.parent
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
            entries = [{"case_id": r["case_id"], "images": [r[c] for c in channels], "label": r.get("label")} for r in rows]
        else:
            raw = yaml.safe_load(path.read_text())
            raw = {"cases": raw} if isinstance(raw, list) else raw
            if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
                raise MedsegError(f"{path}: expected 'cases: [{{case_id: a, images: [a_flair.nii.gz], label: a_seg.nii.gz}}, ...]'")
            entries = raw["cases"]
            labels = declared_labels(raw, path)
            channels = tuple(raw.get("channels") or ())
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(path, exc) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsegError(f"{path}: cannot read the case list ({exc}); fix the file") from None
    cases = []
    for i, entry in enumerate(entries):
        images = entry.get("images") or ([entry["image"]] if entry.get("image") else []) if isinstance(entry, dict) else []
        if not images or not entry.get("case_id"):
            problems.append(f"{path}: entry {i + 1} needs case_id and images (got {entry!r})")
            continue
        resolved = [root / expand(p) for p in images]
        label = root / expand(entry["label"]) if entry.get("label") else None
        missing = [p for p in [*resolved, label] if p is not None and not p.is_file()]
        for p in missing:
            problems.append(f"{path}: case {entry['case_id']} names {p}, which does not exist; fix the path")
        if not missing:
            cases.append(Case(str(entry["case_id"]), tuple(resolved), label))
    if not channels and cases:
        channels = tuple(f"channel{i}" for i in range(len(cases[0].images)))
    return cases, channels, labels
