"""What every dataset source shares: the :class:`Dataset` listing and small helpers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from medseg.data.case import Case
from medseg.errors import MedsegError

LIST_SUFFIXES = (".csv", ".yaml", ".yml")


@dataclass
class Dataset:
    """Cases of one split plus what the dataset declares about itself."""

    root: Path
    layout: str
    cases: list[Case]
    channels: tuple[str, ...]  # channel names, e.g. ("FLAIR", "T1c"); modality words like "CT" decide the plan's normalisation
    labels: Optional[frozenset[int]]  # label values the dataset declares; None = not declared
    problems: list[str] = field(default_factory=list)
    source: Optional[Path] = None  # layout list: the case list file (root is its folder)

    def require_clean(self) -> list[Case]:
        """The cases, or a MedsegError listing every structural problem."""
        if self.problems:
            raise MedsegError("\n".join(self.problems))
        return self.cases


def inside_root(root: Path, rel: str, source: Path, problems: list[str]) -> Optional[Path]:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        problems.append(f"{source}: path {rel!r} escapes the dataset folder {root}; keep files inside it")
        return None
    return path


def declared_labels(meta: dict, source: Path) -> Optional[frozenset[int]]:
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
