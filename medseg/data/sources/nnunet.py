"""nnU-Net v2 raw folders: ``channel_names`` and ``file_ending`` in dataset.json."""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.case import Case
from medseg.data.sources.common import case_name, channel_names


def read_nnunet(root: Path, meta: dict, split: str, problems: list[str]) -> tuple[list[Case], tuple[str, ...]]:
    channels = channel_names(meta, "channel_names")
    ending = str(meta.get("file_ending", ".nii.gz"))
    images_dir = root / ("imagesTr" if split == "training" else "imagesTs")
    labels_dir = root / ("labelsTr" if split == "training" else "labelsTs")
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(images_dir.glob(f"*{ending}")) if images_dir.is_dir() else []:
        m = pattern.match(path.name)
        if m:
            found.setdefault(m["case"], {})[int(m["ch"])] = path
    cases = []
    for case_id, files in sorted(found.items()):
        if case_name(case_id, images_dir, problems) is None:
            continue
        absent = [i for i in range(len(channels)) if i not in files]
        if absent:
            problems.append(
                f"{images_dir / f'{case_id}_{absent[0]:04d}{ending}'}: channel {absent[0]} ({channels[absent[0]]}) "
                f"of case {case_id} is missing; add it or remove the case"
            )
            continue
        label = labels_dir / f"{case_id}{ending}"
        if split == "training" and not label.is_file():
            problems.append(f"{label}: label of case {case_id} is missing; add it or remove the case's images")
            continue
        cases.append(Case(case_id, tuple(files[i] for i in range(len(channels))), label if label.is_file() else None))
    return cases, channels
