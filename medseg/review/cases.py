"""Which scans a review shows: every mask of a folder paired, by file name, with its scan, its
reference label and its probability map.

A mask ``CASE.nii.gz`` (any image suffix) is paired with the scan named ``CASE`` (or ``CASE_0000``,
the nnU-Net name of a case's first channel), the reference named ``CASE`` and ``CASE_prob`` beside
the mask (``medseg predict --save-prob``). Files ``CASE_prob.*`` and ``CASE_lesions.*`` beside a
mask ``CASE`` are predict's extra outputs, not masks.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.names import check_name
from medseg.io.paths import IMAGE_SUFFIXES, strip_suffix

EXTRA_SUFFIXES = ("_prob", "_lesions")  # predict's probability map and numbered-lesion map beside a mask


@dataclass(frozen=True)
class ReviewCase:
    """One scan to review: its name (a safe file name part), predicted mask, and when known its
    scan, reference label and probability map (all on the mask's grid)."""

    name: str
    mask: Path
    image: Path | None = None
    ref: Path | None = None
    prob: Path | None = None

    def inputs(self) -> list[Path]:
        """Every file this case reads."""
        return [p for p in (self.mask, self.image, self.ref, self.prob) if p is not None]


def image_files(folder: Path) -> list[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`) of ``folder``, sorted, hidden files left out."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(IMAGE_SUFFIXES) and not p.name.startswith("."))


def mask_files(pred: Path) -> list[Path]:
    """The predicted masks of a folder (its image files less predict's ``_prob`` and ``_lesions``
    maps beside a mask), or the one mask file ``pred``.

    Raises:
        MedsegError: ``pred`` is missing, or a folder without masks.
    """
    if pred.is_file():
        return [pred]
    if not pred.is_dir():
        raise MedsegError(f"{pred}: no such folder of predicted masks; pass the folder 'medseg predict --out' wrote")
    files = image_files(pred)
    stems = {strip_suffix(p) for p in files}
    masks = [p for p in files if not any(_extra_of(strip_suffix(p), s, stems) for s in EXTRA_SUFFIXES)]
    if not masks:
        raise MedsegError(f"{pred}: no masks (.nii.gz, .nii, .nrrd, .mha) in it; pass the folder of predicted masks")
    return masks


def _extra_of(stem: str, suffix: str, stems: set[str]) -> bool:
    """Whether ``stem`` is ``<mask>_prob`` / ``<mask>_lesions`` of a mask ``<mask>`` among ``stems``."""
    return stem.endswith(suffix) and stem[: -len(suffix)] in stems


def expand_images(items: Iterable[str | Path]) -> list[Path]:
    """Scan files, folders (their image files) and globs -> scan paths.

    Raises:
        MedsegError: an item that matches no scan.
    """
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        found = image_files(p) if p.is_dir() else [p] if p.is_file() else []
        found = found or [Path(f) for f in sorted(glob.glob(str(item))) if f.endswith(IMAGE_SUFFIXES)]
        if not found:
            raise MedsegError(f"{item}: no such scan file, folder or glob (.nii.gz, .nii, .nrrd, .mha); check --images")
        paths.extend(found)
    return paths


def by_name(paths: Iterable[Path]) -> dict[str, Path]:
    """``{file name without image suffix: path}``."""
    return {strip_suffix(p): p for p in paths}


def _lookup(names: Mapping[str, Path], name: str) -> Path | None:
    """The file of case ``name``: named ``name``, or ``name_0000`` (nnU-Net channel 0)."""
    return names.get(name) or names.get(f"{name}_0000")


def match_cases(
    masks: Sequence[Path], images: Mapping[str, Path] | None = None, refs: Mapping[str, Path] | None = None
) -> list[ReviewCase]:
    """One :class:`ReviewCase` per mask, its scan, reference and probability map found by name.

    Args:
        masks: predicted mask files.
        images: ``{case name: scan file}`` (see :func:`by_name`); refs: ``{case name: label file}``.

    Raises:
        MedsegError: a mask whose name is unsafe as a file name (the pages are named after it).
    """
    cases = []
    for mask in masks:
        name = check_name(strip_suffix(mask), "mask name", str(mask))
        prob = next((p for s in IMAGE_SUFFIXES if (p := mask.with_name(f"{name}_prob{s}")).is_file()), None)
        image = _lookup(images or {}, name)
        ref = _lookup(refs or {}, name)
        cases.append(ReviewCase(name, mask, image, ref, prob))
    return cases


def find_cases(pred: Path, images: Sequence[str | Path] = (), ref: Path | None = None) -> list[ReviewCase]:
    """The cases of ``medseg review PRED --images ... --ref ...``: every mask of ``pred`` (a folder,
    or one mask file), with the scans among ``images`` and the labels in the folder ``ref`` (or the
    one label file ``ref`` beside one mask file) of the same name.

    Raises:
        MedsegError: a missing folder, no masks, an image item that matches nothing, a reference
            folder beside a mask file or the other way round.
    """
    masks = mask_files(pred)
    refs: dict[str, Path] = {}
    if ref is not None:
        if not ref.exists():
            raise MedsegError(f"{ref}: no such reference label file or folder (--ref); check the path")
        if ref.is_file() != pred.is_file():
            raise MedsegError(
                f"{ref}: give --ref a folder of labels for a folder of masks, or one label file for one mask file"
            )
        refs = {strip_suffix(masks[0]): ref} if ref.is_file() else by_name(image_files(ref))
    return match_cases(masks, by_name(expand_images(images)), refs)
