"""``medseg check``: validate every case of a dataset before any training, reporting *all*
problems at once, one line each naming the file and the fix.

Per case: a sane header, read first (finite affine, non-zero spacing, a scan small enough to
process: :func:`medseg.io.geometry.check_scan_size`), then every file's voxels read in full and no
more than its header promises (truncated/corrupt bodies, headers claiming more voxels than the file
holds), 3D images (or one 4D file holding the declared channels), channels on one grid, the label
on the image grid (shape, and affine within ``atol`` mm), no NaN/Inf voxels, integer label values
within the declared set.
Structural problems found while listing the cases (missing files or channels, paths escaping the
dataset folder, no cases at all) come from :mod:`medseg.sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.case import Case
from medseg.data.sources.common import Dataset
from medseg.errors import MedsegError
from medseg.io.geometry import read_geometry
from medseg.io.volumes import read_verified


@dataclass(frozen=True)
class Rules:
    """What a case must satisfy."""

    n_channels: int
    allowed_labels: frozenset[int] | None  # None = any integer value
    atol: float = 1e-3  # mm, geometry tolerance between channels and label


def _image_problems(case: Case, rules: Rules) -> tuple[list[str], tuple[tuple[int, ...], np.ndarray] | None]:
    problems: list[str] = []
    grid = None
    single_file = len(case.images) == 1
    for i, path in enumerate(case.images):
        try:
            shape, affine = read_geometry(path)  # the header first: sane, and small enough to read
            voxels, _ = read_verified(path)  # every voxel read once, kept for the NaN check
        except MedsegError as err:
            problems.append(str(err))
            continue
        spatial, extra = shape[:3], shape[3:]
        if len(shape) < 3 or min(spatial) == 1:
            problems.append(
                f"{path}: shape {shape} is not a 3D volume; medseg segments 3D scans (export the whole volume, not "
                "one slice)"
            )
            continue
        if single_file and rules.n_channels > 1 and tuple(extra) != (rules.n_channels,):
            problems.append(
                f"{path}: shape {shape} should hold {rules.n_channels} channels in a 4th axis; add the missing "
                "channel(s) or list one file per channel"
            )
            continue
        if (not single_file or rules.n_channels == 1) and any(e != 1 for e in extra):
            problems.append(f"{path}: shape {shape} has {len(shape)} dimensions; expected one 3D volume per channel")
            continue
        if grid is None:
            grid = (tuple(spatial), affine)
        elif tuple(spatial) != grid[0] or not np.allclose(affine, grid[1], atol=rules.atol):
            problems.append(
                f"{path}: channel {i} is on a different grid (shape {tuple(spatial)}) than {case.image.name} "
                f"(shape {grid[0]}); resample it onto the first channel's grid"
            )
            continue
        bad = (
            int(np.size(voxels) - np.count_nonzero(np.isfinite(voxels)))
            if np.issubdtype(voxels.dtype, np.floating)
            else 0
        )
        if bad:
            problems.append(f"{path}: {bad} NaN or infinite voxel(s); re-export the scan or replace them (e.g. with 0)")
    return problems, grid


def _label_problems(case: Case, rules: Rules, grid) -> list[str]:
    path = case.label
    try:
        shape, affine = read_geometry(path)
        voxels, _ = read_verified(path)
    except MedsegError as err:
        return [str(err)]
    if len(shape) > 3 and any(s != 1 for s in shape[3:]) or len(shape) < 3:
        return [f"{path}: label shape {shape} is not one 3D volume; save the lesion label as a single 3D image"]
    if grid is not None:
        if tuple(shape[:3]) != grid[0]:
            return [
                f"{path}: label shape {tuple(shape[:3])} differs from image shape {grid[0]} ({case.image.name}); use "
                "the label made for this image"
            ]
        if not np.allclose(affine, grid[1], atol=rules.atol):
            gap = float(np.abs(affine - grid[1]).max())
            return [
                f"{path}: label affine differs from the image's ({case.image.name}) by {gap:.3g} (> {rules.atol} mm); "
                "resample the label onto the image grid (nearest neighbour)"
            ]
    values = np.unique(voxels)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            return [f"{path}: label has NaN or infinite values; re-export it with integer values"]
        fractional = values[values != np.round(values)]
        if fractional.size:
            return [
                f"{path}: label has fractional values ({', '.join(f'{v:g}' for v in fractional[:4])}); it was "
                "interpolated "
                "linearly: resample labels with nearest neighbour and save them as integers"
            ]
    if rules.allowed_labels is not None:
        outside = sorted(int(v) for v in values if int(v) not in rules.allowed_labels)
        if outside:
            return [
                f"{path}: label values {outside[:6]} are not in the declared set {sorted(rules.allowed_labels)}; "
                "fix the label or declare them (dataset.json 'labels' / data.lesion_labels)"
            ]
    return []


def check_case(case: Case, rules: Rules) -> list[str]:
    """All problems of one case, one line each (empty = clean)."""
    problems, grid = _image_problems(case, rules)
    if case.label is not None:
        problems += _label_problems(case, rules, grid)
    return problems


def rules_for(ds: Dataset, lesion_labels: Sequence[int] | None = None, atol: float = 1e-3) -> Rules:
    """Declared labels win; else ``{0} + lesion_labels``; else any integer."""
    allowed = ds.labels
    if allowed is None and lesion_labels:
        allowed = frozenset({0, *lesion_labels})
    n = len(ds.channels) or (len(ds.cases[0].images) if ds.cases else 1)
    return Rules(max(1, n), allowed, atol)


def check_dataset(
    ds: Dataset, lesion_labels: Sequence[int] | None = None, atol: float = 1e-3, threads: int = 2
) -> list[str]:
    """Structural problems of the listing plus every case's problems, in case order."""
    rules = rules_for(ds, lesion_labels, atol)
    if lesion_labels and ds.labels is not None:
        undeclared = [v for v in lesion_labels if v not in ds.labels]
        if undeclared:
            return [
                *ds.problems,
                f"data.lesion_labels: {undeclared} are not labels of {ds.root} (declared: {sorted(ds.labels)})",
            ]
    with ThreadPoolExecutor(max(1, threads)) as pool:  # gzip inflation releases the GIL
        per_case = list(pool.map(lambda c: check_case(c, rules), ds.cases))
    return [*ds.problems, *(line for lines in per_case for line in lines)]


def format_report(ds: Dataset, problems: list[str]) -> str:
    """Closing line of ``medseg check``."""
    where = ds.source or Path(ds.root)
    channels = ", ".join(ds.channels) or "1"
    if problems:
        return f"{len(problems)} problem(s) in {len(ds.cases)} case(s) of {where} ({ds.layout}, channels: {channels})"
    return f"{len(ds.cases)} case(s) of {where} are clean ({ds.layout}, channels: {channels})"
