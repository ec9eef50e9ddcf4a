"""Medical Segmentation Decathlon folders (and nnU-Net v1 task folders)."""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.case import Case
from medseg.data.sources.common import case_name, channel_names, inside_root
from medseg.io.paths import strip_suffix


def _per_channel_files(path: Path, n: int) -> list[Path] | None:
    """nnU-Net v1: ``x.nii.gz`` listed, ``x_0000.nii.gz``... on disk."""
    stem, ending = strip_suffix(path), path.name[len(strip_suffix(path)) :]
    files = [path.with_name(f"{stem}_{i:04d}{ending}") for i in range(max(n, 1))]
    return files if files[0].is_file() else None


def read_msd(
    root: Path, meta: dict, split: str, problems: list[str], allow_outside: bool = False
) -> tuple[list[Case], tuple[str, ...]]:
    meta_path = root / "dataset.json"
    channels = channel_names(meta, "modality") or channel_names(meta, "channel_names")
    entries = meta.get(split)
    if not entries:
        problems.append(
            f"{meta_path}: no '{split}' cases listed; add entries like "
            f'{{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}}'
        )
        return [], channels
    cases = []
    for entry in entries:
        if isinstance(entry, str):  # MSD "test" lists bare image paths
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            problems.append(f"{meta_path}: entry {entry!r} in '{split}' needs an 'image' key")
            continue
        rels = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        images = [inside_root(root, r, meta_path, problems, allow_outside) for r in rels]
        label = inside_root(root, entry["label"], meta_path, problems, allow_outside) if entry.get("label") else None
        if None in images or (entry.get("label") and label is None):
            continue
        if len(images) == 1 and not images[0].is_file():
            images = _per_channel_files(images[0], len(channels)) or images
        missing = [p for p in [*images, label] if p is not None and not p.is_file()]
        for path in missing:
            problems.append(f"{meta_path}: lists {path}, which does not exist; add the file or remove the entry")
        if not missing:
            case_id = case_name(
                strip_suffix(label) if label is not None else re.sub(r"_0000$", "", strip_suffix(images[0])),
                meta_path,
                problems,
            )
            if case_id is not None:
                cases.append(Case(case_id, tuple(images), label))
    return cases, channels
