"""What every dataset source shares: the :class:`Dataset` listing and small helpers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from medseg.data.case import Case
from medseg.errors import MedsegError, clip
from medseg.io.names import check_name

LIST_SUFFIXES = (".csv", ".yaml", ".yml")


@dataclass
class Dataset:
    """Cases of one split plus what the dataset declares about itself."""

    root: Path
    layout: str
    cases: list[Case]
    channels: tuple[
        str, ...
    ]  # channel names, e.g. ("FLAIR", "T1c"); modality words like "CT" decide the plan's normalisation
    labels: frozenset[int] | None  # label values the dataset declares; None = not declared
    problems: list[str] = field(default_factory=list)
    source: Path | None = None  # layout list: the case list file (root is its folder)

    def files(self) -> list[Path]:
        """Every file this listing reads: the case list or ``dataset.json``, each case's channel
        files and label (what no output may replace)."""
        listing = [self.source] if self.source is not None else [self.root / "dataset.json"]
        return [*listing, *(p for c in self.cases for p in (*c.images, *([c.label] if c.label else [])))]

    def require_clean(self) -> list[Case]:
        """The cases, or a MedsegError listing every structural problem."""
        if self.problems:
            raise MedsegError("\n".join(self.problems))
        return self.cases


def inside_root(
    root: Path, rel: str | Path, source: Path, problems: list[str], allow_outside: bool = False
) -> Path | None:
    """``root/rel`` when it lies inside the dataset folder ``root``, else None and a problem line.

    The one containment rule of every layout (MSD entries, case-list paths, pattern hits): the
    path is normalised as written (``..`` and absolute paths count), symlinks are not resolved
    for the test: a link inside the dataset folder is part of it (its owner put it there, e.g. a
    linked ``imagesTr``), and reading follows it. ``allow_outside`` (``data.allow_outside: true``,
    or ``allow_outside: true`` in a YAML case list) accepts data kept elsewhere.
    """
    base = os.path.abspath(root)
    path = Path(os.path.abspath(os.path.join(base, os.fspath(rel))))
    if allow_outside or os.path.commonpath([base, path]) == base and str(path) != base:
        return path
    problems.append(
        f"{source}: path {clip(str(rel))} escapes the dataset folder {root}; keep the files inside it, "
        "or set data.allow_outside: true (allow_outside: true in a YAML case list) for data kept elsewhere"
    )
    return None


def case_name(case_id: object, source: Path, problems: list[str]) -> str | None:
    """``case_id`` as text when it is safe in file names (:func:`medseg.io.names.name_problem`),
    else None and a problem line naming ``source``."""
    try:
        return check_name(str(case_id), "case_id", str(source))
    except MedsegError as err:
        problems.append(str(err))
        return None


def declared_labels(meta: dict, source: Path) -> frozenset[int] | None:
    """MSD: ``{"0": "background", "1": "edema"}``; nnU-Net v2: ``{"background": 0, "lesion": 1}``
    (region lists flattened)."""
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None
    values: set[int] = set()
    for key, value in labels.items():
        if str(key).lstrip("-").isdigit():
            values.add(int(key))
        else:
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(v, int):
                    raise MedsegError(f"{source}: labels entry {key!r}: {value!r} is not an integer label value")
                values.add(v)
    return frozenset(values)


def channel_names(meta: dict, key: str) -> tuple[str, ...]:
    names = meta.get(key) or {}
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names, key=lambda k: int(k) if str(k).isdigit() else 0))
    return tuple(str(n) for n in names) if isinstance(names, list) else ()


def read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedsegError(f"{path}: not valid JSON ({exc}); fix or regenerate it") from None
    if not isinstance(meta, dict):
        raise MedsegError(f"{path}: expected a JSON object with 'training' (MSD) or 'channel_names' (nnU-Net)")
    return meta
