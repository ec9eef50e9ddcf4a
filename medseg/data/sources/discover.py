"""Dataset sources: the folders and lists users arrive with, turned into :class:`Case` lists.

Layouts (``layout: auto`` tells them apart):

- ``msd``: Medical Segmentation Decathlon folder, ``dataset.json`` with a ``training`` list;
  ``image`` is one file (3D, or 4D with the channels last) or a list of per-channel files.
  nnU-Net v1 folders (``training`` entries naming ``imagesTr/la_003.nii.gz`` while the files are
  ``la_003_0000.nii.gz``, ``la_003_0001.nii.gz``) are read too.
- ``nnunet``: nnU-Net v2 raw folder, ``dataset.json`` with ``channel_names``, ``labels`` and
  ``file_ending``; ``imagesTr/CASE_0000<ending>`` per channel, ``labelsTr/CASE<ending>``.
- ``list``: a CSV (header ``case_id,<one column per channel>,label``) or YAML file
  (``cases: [{case_id, images: [...], label}]``, optional ``channels:`` and ``labels:``);
  relative paths resolve against the list's folder, ``$VARS`` are expanded.
- ``pattern``: BIDS-like or any nested tree: one glob per channel with a ``{case}`` placeholder
  (``rawdata/{case}/ses-*/{case}_ses-*_dwi.nii.gz``) and one for the label.

Problems that concern one case (a file missing, a channel missing, a path escaping the dataset
folder) are collected in :attr:`Dataset.problems`, so ``medseg check`` can report all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from medseg.config.load import load_config, parse_yaml
from medseg.config.schema import ExperimentConfig
from medseg.data.case import Case
from medseg.data.sources.caselist import read_case_list
from medseg.data.sources.common import (
    LIST_SUFFIXES,
    Dataset,
    declared_labels,
    read_json,
)
from medseg.data.sources.msd import read_msd
from medseg.data.sources.nnunet import read_nnunet
from medseg.data.sources.pattern import pattern_channel_name, read_pattern
from medseg.errors import MedsegError, clip, yaml_syntax_error
from medseg.io.paths import expand
from medseg.io.review_marks import read_marks


def detect_layout(source: Path) -> str:
    """``list`` for .csv/.yaml files, ``nnunet`` when dataset.json has channel_names and
    file_ending, ``msd`` when it has a case list."""
    if source.is_file() and source.name.endswith(LIST_SUFFIXES):
        return "list"
    meta_path = source / "dataset.json"
    if not meta_path.is_file():
        if not source.exists():
            raise MedsegError(
                f"{source}: not found; point data.dataset at a dataset folder or a case list (.csv/.yaml), "
                f"or create synthetic data there first: medseg synth --out {source} --cases 40 --test-cases 16 (what "
                "'medseg demo' does)"
            )
        raise MedsegError(
            f"{meta_path}: not found; point data.dataset at a folder with dataset.json (e.g. from 'medseg synth'), "
            "a case list (.csv/.yaml), or set data.layout: pattern with data.channels globs"
        )
    meta = read_json(meta_path)
    if "channel_names" in meta and "file_ending" in meta and not meta.get("training"):
        return "nnunet"
    return "msd"


def discover(
    source: Path | str,
    layout: str = "auto",
    split: str = "training",
    channels: Sequence[str] | None = None,
    label: str | None = None,
    allow_outside: bool = False,
) -> Dataset:
    """Find the cases of ``split`` ("training" or "test"; MSD also "test_labeled").

    Args:
        source: dataset folder or case-list file.
        channels: pattern layout: one glob per channel; other layouts: the channel names to use
            (``None`` = all channels, in the dataset's order).
        label: pattern layout: the label glob.
        allow_outside: accept files outside the dataset folder (``data.allow_outside``).

    Raises:
        MedsegError: the source cannot be read at all (missing, bad JSON, unknown layout).
    """
    root = Path(expand(source))
    kind = detect_layout(root) if layout == "auto" else layout
    if kind in ("pattern", "list") and split != "training":
        raise MedsegError(
            f"{root}: a {'case list' if kind == 'list' else 'pattern layout'} has no '{split}' split, only its cases; "
            "leave --split out to use them all, or go through an experiment config whose data.exclude_cases "
            "names the held-out cases (--split test then means those)"
        )
    problems: list[str] = []
    labels: frozenset[int] | None = None
    if kind == "pattern":
        if not root.is_dir():
            raise MedsegError(f"{root}: not a folder; data.dataset must be the root the patterns are relative to")
        cases = read_pattern(root, list(channels or []), label, problems, allow_outside)
        names = tuple(pattern_channel_name(c) or f"channel{i}" for i, c in enumerate(channels or []))
        ds = Dataset(root, kind, cases, names, None, problems)
    elif kind == "list":
        cases, names, labels = read_case_list(root, problems, allow_outside)
        ds = Dataset(root.parent, kind, cases, names, labels, problems, source=root)
    elif kind in ("msd", "nnunet"):
        meta_path = root / "dataset.json"
        if not meta_path.is_file():
            raise MedsegError(f"{meta_path}: not found; a {kind} dataset folder needs its dataset.json")
        meta = read_json(meta_path)
        cases, names = (
            read_msd(root, meta, split, problems, allow_outside)
            if kind == "msd"
            else read_nnunet(root, meta, split, problems)
        )
        ds = Dataset(root, kind, cases, names, declared_labels(meta, meta_path), problems)
    else:
        raise MedsegError(f"data.layout {layout!r}: use auto, msd, nnunet, list or pattern")
    if channels and kind != "pattern":
        ds = _select_channels(ds, channels)
    if not ds.cases and not ds.problems:
        ds.problems.append(
            f"{root}: no cases found for split '{split}' ({kind} layout); check the folder and its file names"
        )
    return ds


def _select_channels(ds: Dataset, wanted: Sequence[str]) -> Dataset:
    """Keep the named channels, in the order given (e.g. only FLAIR of FLAIR/T1/T1c/T2)."""
    unknown = [w for w in wanted if w not in ds.channels]
    if unknown:
        raise MedsegError(
            f"data.channels: {unknown[0]!r} is not a channel of {ds.root} (channels: "
            f"{', '.join(ds.channels) or 'unnamed'})"
        )
    index = [ds.channels.index(w) for w in wanted]
    cases = []
    for case in ds.cases:
        if len(case.images) != len(ds.channels):
            ds.problems.append(
                f"{case.image}: data.channels selects channels by file, but case {case.case_id} stores them in one "
                "4D file; "
                "split it into one file per channel or leave data.channels unset"
            )
            continue
        cases.append(Case(case.case_id, tuple(case.images[i] for i in index), case.label))
    return replace(ds, cases=cases, channels=tuple(wanted))


def from_config(data_cfg: Any, split: str = "training") -> Dataset:
    """:func:`discover` with the ``data`` section of an experiment config.

    ``training``: the dataset's training cases without ``data.exclude_cases`` and without the scans
    rejected in ``data.review_marks`` (:func:`rejected_scans`). ``test`` (and
    ``test_labeled``): the config's held-out cases: ``data.exclude_cases`` when set, else the
    dataset's own test split (MSD / nnU-Net ``imagesTs``; a case list or pattern layout has none:
    an error).
    """
    excluded = set(data_cfg.exclude_cases or ())
    if split != "training" and not excluded:
        return discover(
            data_cfg.dataset, data_cfg.layout, split, data_cfg.channels, data_cfg.label, data_cfg.allow_outside
        )
    ds = discover(
        data_cfg.dataset, data_cfg.layout, "training", data_cfg.channels, data_cfg.label, data_cfg.allow_outside
    )
    unknown = excluded - {c.case_id for c in ds.cases}
    if unknown and not ds.problems:
        raise MedsegError(f"data.exclude_cases: {sorted(unknown)[0]!r} is not a case of {ds.root}")
    ds.cases = [c for c in ds.cases if (c.case_id in excluded) == (split != "training")]
    if split == "training":
        rejected = rejected_scans(data_cfg)
        ds.cases = [c for c in ds.cases if c.case_id not in rejected]
    return ds


def rejected_scans(data_cfg: Any) -> set[str]:
    """The case ids whose last scan mark in ``data.review_marks`` is a reject (empty without the key).

    Raises:
        MedsegError: the marks file is missing or invalid.
    """
    path = data_cfg.review_marks
    if path is None:
        return set()
    if not Path(path).is_file():
        raise MedsegError(f"data.review_marks: {path} not found; pass the review_marks.json 'medseg review' saved")
    last = {m.case: m.decision for m in read_marks(Path(path)) if m.kind == "scan" and m.decision}
    return {case for case, decision in last.items() if decision == "reject"}


def with_held_out(ds: Dataset, data_cfg: Any) -> Dataset:
    """``ds`` (a config's training cases, :func:`from_config`) with the config's held-out cases
    (``data.exclude_cases``) added: every case of the config, what ``medseg check`` reads. The
    listing's problems are those of ``ds`` (one discovery of the same folder)."""
    if not data_cfg.exclude_cases:
        return ds
    return replace(ds, cases=[*ds.cases, *from_config(data_cfg, "test").cases])


def held_out_split(source: Path, layout: str = "auto") -> str:
    """The split ``predict --dataset`` and ``evaluate`` use when ``--split`` is not given: the
    held-out cases where the source has them (MSD ``test_labeled`` when listed, else ``test``;
    nnU-Net ``imagesTs``), else every case (``training``: a case list or pattern layout)."""
    kind = detect_layout(source) if layout == "auto" else layout
    if kind in ("pattern", "list"):
        return "training"
    if kind == "msd" and (source / "dataset.json").is_file() and read_json(source / "dataset.json").get("test_labeled"):
        return "test_labeled"
    return "test"


def from_argument(
    arg: str,
    layout: str = "auto",
    channels: Sequence[str] | None = None,
    label: str | None = None,
    split: str | None = "training",
    overrides: Sequence[str] = (),
) -> tuple[Dataset, ExperimentConfig | None]:
    """A command's dataset argument: a dataset (folder or case list) or an experiment config (a
    YAML file with a ``data:`` section, whose data settings are used).

    Args:
        split: ``training``, ``test``, ``test_labeled`` (see :func:`from_config` for a config,
            :func:`discover` otherwise), or None: the held-out cases where the source has them
            (a config: ``test``; a dataset: :func:`held_out_split`).
        overrides: ``--set KEY=VALUE`` assignments of a config (an error with anything else).

    Returns:
        (dataset, experiment config or None)

    Raises:
        MedsegError: a split the source does not have (e.g. ``test`` of a case list), or
            ``overrides`` for a source that is not an experiment config.
    """
    path = Path(expand(arg))
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        try:
            raw = parse_yaml(path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise yaml_syntax_error(path, exc) from None
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
            cfg = load_config(path, overrides)
            return from_config(cfg.data, split or "test"), cfg
    if overrides:
        raise MedsegError(
            f"--set {clip(overrides[0], 80)}: {arg} is not an experiment config; --set overrides a config's "
            "keys, so drop it or pass the config (a .yaml with a data: section)"
        )
    return discover(path, layout, split or held_out_split(path, layout), channels, label), None


def find_cases(source: Path | str, split: str = "training") -> list[Case]:
    """Cases of a dataset with an auto-detected layout; any structural problem is an error."""
    return discover(source, split=split).require_clean()
