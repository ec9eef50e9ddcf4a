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

import csv
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from medseg.errors import MedsegError
from medseg.io import Case, strip_suffix

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

    def require_clean(self) -> list[Case]:
        """The cases, or a MedsegError listing every structural problem."""
        if self.problems:
            raise MedsegError("\n".join(self.problems))
        return self.cases


def expand(path: str | Path) -> str:
    """``$VAR``/``~`` expansion; a variable that is unset is an error naming it."""
    text = os.path.expanduser(os.path.expandvars(str(path)))
    missing = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    if missing:
        raise MedsegError(f"{path}: environment variable ${missing[0]} is not set; export it with the folder it should point to, or write the path into the config")
    return text


def _inside(root: Path, rel: str, source: Path, problems: list[str]) -> Optional[Path]:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        problems.append(f"{source}: path {rel!r} escapes the dataset folder {root}; keep files inside it")
        return None
    return path


def _declared_labels(meta: dict, source: Path) -> Optional[frozenset[int]]:
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


def _channel_names(meta: dict, key: str) -> tuple[str, ...]:
    names = meta.get(key) or {}
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names, key=lambda k: int(k) if str(k).isdigit() else 0))
    return tuple(str(n) for n in names) if isinstance(names, list) else ()


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedsegError(f"{path}: not valid JSON ({exc}); fix or regenerate it") from None
    if not isinstance(meta, dict):
        raise MedsegError(f"{path}: expected a JSON object with 'training' (MSD) or 'channel_names' (nnU-Net)")
    return meta


def _per_channel_files(path: Path, n: int) -> Optional[list[Path]]:
    """nnU-Net v1: ``x.nii.gz`` listed, ``x_0000.nii.gz``... on disk."""
    stem, ending = strip_suffix(path), path.name[len(strip_suffix(path)):]
    files = [path.with_name(f"{stem}_{i:04d}{ending}") for i in range(max(n, 1))]
    return files if files[0].is_file() else None


def _msd(root: Path, meta: dict, split: str, problems: list[str]) -> tuple[list[Case], tuple[str, ...]]:
    meta_path = root / "dataset.json"
    channels = _channel_names(meta, "modality") or _channel_names(meta, "channel_names")
    entries = meta.get(split)
    if not entries:
        problems.append(f"{meta_path}: no '{split}' cases listed; add entries like {{\"image\": \"./imagesTr/a.nii.gz\", \"label\": \"./labelsTr/a.nii.gz\"}}")
        return [], channels
    cases = []
    for entry in entries:
        if isinstance(entry, str):  # MSD "test" lists bare image paths
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            problems.append(f"{meta_path}: entry {entry!r} in '{split}' needs an 'image' key")
            continue
        rels = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        images = [_inside(root, r, meta_path, problems) for r in rels]
        label = _inside(root, entry["label"], meta_path, problems) if entry.get("label") else None
        if None in images or (entry.get("label") and label is None):
            continue
        if len(images) == 1 and not images[0].is_file():
            images = _per_channel_files(images[0], len(channels)) or images
        missing = [p for p in [*images, label] if p is not None and not p.is_file()]
        for path in missing:
            problems.append(f"{meta_path}: lists {path}, which does not exist; add the file or remove the entry")
        if not missing:
            case_id = strip_suffix(label) if label is not None else re.sub(r"_0000$", "", strip_suffix(images[0]))
            cases.append(Case(case_id, tuple(images), label))
    return cases, channels


def _nnunet(root: Path, meta: dict, split: str, problems: list[str]) -> tuple[list[Case], tuple[str, ...]]:
    channels = _channel_names(meta, "channel_names")
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
        absent = [i for i in range(len(channels)) if i not in files]
        if absent:
            problems.append(f"{images_dir / f'{case_id}_{absent[0]:04d}{ending}'}: channel {absent[0]} ({channels[absent[0]]}) of case {case_id} is missing; add it or remove the case")
            continue
        label = labels_dir / f"{case_id}{ending}"
        if split == "training" and not label.is_file():
            problems.append(f"{label}: label of case {case_id} is missing; add it or remove the case's images")
            continue
        cases.append(Case(case_id, tuple(files[i] for i in range(len(channels))), label if label.is_file() else None))
    return cases, channels


def _list_file(path: Path, problems: list[str]) -> tuple[list[Case], tuple[str, ...], Optional[frozenset[int]]]:
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
            labels = _declared_labels(raw, path)
            channels = tuple(raw.get("channels") or ())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, csv.Error) as exc:
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


def _glob_regex(pattern: str) -> re.Pattern:
    """``{case}`` -> a named group of one path component; ``**`` any depth; ``*`` within a name."""
    out = ""
    for token in re.split(r"(\{case\}|\*\*/?|\*|\?)", pattern):
        if token == "{case}":
            out += "(?P<case>[^/]+)" if "(?P<case>" not in out else "(?P=case)"
        elif token.startswith("**"):
            out += "(?:.*/)?"
        elif token == "*":
            out += "[^/]*"
        elif token == "?":
            out += "[^/]"
        else:
            out += re.escape(token)
    return re.compile(out + "$")


def _pattern(root: Path, channels: Sequence[str], label: Optional[str], problems: list[str]) -> list[Case]:
    if not channels or "{case}" not in channels[0]:
        raise MedsegError("data.channels: the pattern layout needs one glob per channel with a {case} placeholder, "
                          "e.g. ['*/{case}/Flair.nii.gz']")
    first = _glob_regex(channels[0])
    ids = sorted({m["case"] for f in glob.glob(str(root / channels[0].replace("{case}", "*")), recursive=True)
                  if (m := first.match(Path(f).relative_to(root).as_posix()))})
    cases = []
    for case_id in ids:
        files: list[Path] = []
        for pat in [*channels, *([label] if label else [])]:
            hits = sorted(glob.glob(str(root / pat.replace("{case}", glob.escape(case_id))), recursive=True))
            if len(hits) != 1:
                what = "no file" if not hits else f"{len(hits)} files ({', '.join(Path(h).name for h in hits[:3])})"
                problems.append(f"{root / pat.replace('{case}', case_id)}: case {case_id} has {what} for this pattern; exactly one is needed")
                break
            files.append(Path(hits[0]))
        else:
            images = tuple(files[:len(channels)])
            cases.append(Case(case_id, images, files[-1] if label else None))
    return cases


def _pattern_name(pattern: str) -> str:
    """Channel name from a glob: the file name's parts without the case or wildcards
    (``{case}_ses-*_dwi.nii.gz`` -> ``dwi``)."""
    parts = strip_suffix(Path(pattern).name).split("_")
    return "_".join(p for p in parts if "{case}" not in p and not any(ch in p for ch in "*?["))


def detect_layout(source: Path) -> str:
    """``list`` for .csv/.yaml files, ``nnunet`` when dataset.json has channel_names and
    file_ending, ``msd`` when it has a case list."""
    if source.is_file() and source.name.endswith(LIST_SUFFIXES):
        return "list"
    meta_path = source / "dataset.json"
    if not meta_path.is_file():
        if not source.exists():
            raise MedsegError(f"{source}: not found; point data.dataset at a dataset folder or a case list (.csv/.yaml)")
        raise MedsegError(f"{meta_path}: not found; point data.dataset at a folder with dataset.json (e.g. from 'medseg synth'), "
                          "a case list (.csv/.yaml), or set data.layout: pattern with data.channels globs")
    meta = _read_json(meta_path)
    if "channel_names" in meta and "file_ending" in meta and not meta.get("training"):
        return "nnunet"
    return "msd"


def discover(source: Path | str, layout: str = "auto", split: str = "training",
             channels: Optional[Sequence[str]] = None, label: Optional[str] = None) -> Dataset:
    """Find the cases of ``split`` ("training" or "test"; MSD also "test_labeled").

    Args:
        source: dataset folder or case-list file.
        channels: pattern layout: one glob per channel; other layouts: the channel names to use
            (``None`` = all channels, in the dataset's order).
        label: pattern layout: the label glob.

    Raises:
        MedsegError: the source cannot be read at all (missing, bad JSON, unknown layout).
    """
    root = Path(expand(source))
    kind = detect_layout(root) if layout == "auto" else layout
    problems: list[str] = []
    labels: Optional[frozenset[int]] = None
    if kind == "pattern":
        if not root.is_dir():
            raise MedsegError(f"{root}: not a folder; data.dataset must be the root the patterns are relative to")
        cases = _pattern(root, list(channels or []), label, problems)
        names = tuple(_pattern_name(c) or f"channel{i}" for i, c in enumerate(channels or []))
        ds = Dataset(root, kind, cases, names, None, problems)
    elif kind == "list":
        cases, names, labels = _list_file(root, problems)
        ds = Dataset(root.parent, kind, cases, names, labels, problems)
    elif kind in ("msd", "nnunet"):
        meta_path = root / "dataset.json"
        if not meta_path.is_file():
            raise MedsegError(f"{meta_path}: not found; a {kind} dataset folder needs its dataset.json")
        meta = _read_json(meta_path)
        cases, names = (_msd if kind == "msd" else _nnunet)(root, meta, split, problems)
        ds = Dataset(root, kind, cases, names, _declared_labels(meta, meta_path), problems)
    else:
        raise MedsegError(f"data.layout {layout!r}: use auto, msd, nnunet, list or pattern")
    if channels and kind != "pattern":
        ds = _select_channels(ds, channels)
    if not ds.cases and not ds.problems:
        ds.problems.append(f"{root}: no cases found for split '{split}' ({kind} layout); check the folder and its file names")
    return ds


def _select_channels(ds: Dataset, wanted: Sequence[str]) -> Dataset:
    """Keep the named channels, in the order given (e.g. only FLAIR of FLAIR/T1/T1c/T2)."""
    unknown = [w for w in wanted if w not in ds.channels]
    if unknown:
        raise MedsegError(f"data.channels: {unknown[0]!r} is not a channel of {ds.root} (channels: {', '.join(ds.channels) or 'unnamed'})")
    index = [ds.channels.index(w) for w in wanted]
    cases = []
    for case in ds.cases:
        if len(case.images) != len(ds.channels):
            ds.problems.append(f"{case.image}: data.channels selects channels by file, but case {case.case_id} stores them in one 4D file; "
                               "split it into one file per channel or leave data.channels unset")
            continue
        cases.append(Case(case.case_id, tuple(case.images[i] for i in index), case.label))
    return Dataset(ds.root, ds.layout, cases, tuple(wanted), ds.labels, ds.problems)


def from_config(data_cfg: Any, split: str = "training") -> Dataset:
    """:func:`discover` with the ``data`` section of an experiment config, without
    ``data.exclude_cases``."""
    ds = discover(data_cfg.dataset, data_cfg.layout, split, data_cfg.channels, data_cfg.label)
    excluded = set(data_cfg.exclude_cases or ())
    unknown = excluded - {c.case_id for c in ds.cases}
    if unknown and not ds.problems:
        raise MedsegError(f"data.exclude_cases: {sorted(unknown)[0]!r} is not a case of {ds.root}")
    ds.cases = [c for c in ds.cases if c.case_id not in excluded]
    return ds


def from_argument(arg: str, layout: str = "auto", channels: Optional[Sequence[str]] = None,
                  label: Optional[str] = None, split: str = "training"):
    """``medseg check``/``plan`` argument: a dataset (folder or case list) or an experiment config
    (a YAML file with a ``data:`` section, whose data settings are used).

    Returns:
        (dataset, experiment config or None)
    """
    path = Path(expand(arg))
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise MedsegError(f"{path}: not a readable YAML file ({str(exc).splitlines()[0]}); fix its syntax") from None
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
            from medseg.config import load_config

            cfg = load_config(path)
            return from_config(cfg.data, split), cfg
    return discover(path, layout, split, channels, label), None


def find_cases(source: Path | str, split: str = "training") -> list[Case]:
    """Cases of a dataset with an auto-detected layout; any structural problem is an error."""
    return discover(source, split=split).require_clean()
