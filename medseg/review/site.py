"""Write the review site into ``<out>/review/``:

* ``index.html``: one row per scan (thumbnail, lesion count and volume, Dice, lesion recall,
  misses and false positives against a reference), sortable and filterable, and the pictures
  (FROC when every scan has a probability map and a reference, predicted against reference
  lesion volume, Dice per scan, a crop around each missed and each false-positive lesion);
* ``case_<name>.html`` per scan: the NiiVue viewer and the lesion table;
* ``data/site.js``, ``data/case_<name>.js``: the pages' data, volumes included (base64 ``.nii.gz``,
  :mod:`medseg.review.display`), defined by scripts so that the pages open from ``file://``;
* ``img/``: thumbnails, crops and plots; ``static/``: the viewer (NiiVue, with its licence), the
  pages' script and style sheet;
* ``manifest.json``: every file above that this writing produced; the next writing removes the
  files of the previous one that it does not write again (:mod:`medseg.review.manifest`).

Every file is claimed (:class:`medseg.io.outputs.OutputPlan`) inside ``out``, never over an input;
the crops, named after lesions found while writing, are claimed as they are found. Reviewer marks
(``<out>/review_marks.json``, :mod:`medseg.io.review_marks`) found there are shown in the pages.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medseg import __version__
from medseg.errors import MedsegError
from medseg.evaluation.froc import Scan, froc
from medseg.evaluation.tables import EvalOptions
from medseg.io.geometry import voxel_volume
from medseg.io.outputs import OutputPlan
from medseg.io.review_marks import MARKS_FILE, marks_document, read_marks
from medseg.io.write import atomic_write, write_text
from medseg.review.analysis import Analysis, analyse, read_volumes
from medseg.review.cases import ReviewCase
from medseg.review.display import DEFAULT_MAX_VOXELS
from medseg.review.manifest import MANIFEST, read_manifest, remove_listed, write_manifest
from medseg.review.pages import display_volumes, lesion_record, scan_record, write_crops, write_thumbnail
from medseg.viz.plots import plot_froc
from medseg.viz.review_plots import plot_case_dice, plot_lesion_volumes

SITE = "review"
STATIC = Path(__file__).with_name("static")
STATIC_FILES = ("niivue.umd.js", "niivue-LICENSE.txt", "review.js", "review.css")
PICTURES = {"froc": "img/froc.png", "volumes": "img/volumes.png", "dice": "img/dice.png"}


@dataclass(frozen=True)
class SiteOptions:
    """How the site is written: the matching rule of the statuses (``evaluation``: its rule,
    dilation and reference label values), the display voxel limit, the title, and what the world
    coordinates on the pages are (``space``: the masks' own affine for predictions; training's
    validation volumes are on the model's grid)."""

    evaluation: EvalOptions = EvalOptions()
    max_display_voxels: int = DEFAULT_MAX_VOXELS
    title: str = "medseg review"
    space: str = "world, scanner RAS"


@dataclass(frozen=True)
class SiteResult:
    """The index page written, the scans on it, one line per scan that could not be shown, and
    every file of the site (its manifest included)."""

    index: Path
    scans: int
    errors: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


class SiteFiles:
    """The site's files, claimed in ``out`` before the first write (crops: as they are found)."""

    def __init__(self, out: Path, cases: Sequence[ReviewCase]) -> None:
        self.plan = OutputPlan(out, [p for case in cases for p in case.inputs()])
        self.claimed: list[Path] = []
        self.fixed = {name: self.claim(name, "the review index") for name in ("index.html", "data/site.js")}
        self.fixed[MANIFEST] = self.claim(MANIFEST, "the review manifest")
        self.fixed |= {f"static/{n}": self.claim(f"static/{n}", "the review viewer") for n in STATIC_FILES}
        self.fixed |= {name: self.claim(name, "a review picture") for name in PICTURES.values()}
        self.scans = {case.name: self._scan_files(case) for case in cases}

    def claim(self, name: str, owner: str) -> Path:
        """The path ``<out>/review/<name>`` for ``owner``."""
        path = self.plan.claim(f"{SITE}/{name}", owner)
        self.claimed.append(path)
        return path

    def _scan_files(self, case: ReviewCase) -> dict[str, str]:
        names = {
            "page": f"case_{case.name}.html",
            "data": f"data/case_{case.name}.js",
            "thumb": f"img/thumb_{case.name}.png",
        }
        for name in names.values():
            self.claim(name, f"the review page of {case.mask}")
        return names

    def path(self, name: str) -> Path:
        """The claimed path of the site file ``name``."""
        return self.plan.root / SITE / name


def _finite(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, inf) as None: JSON has no NaN."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return None if isinstance(data, float) and not math.isfinite(data) else data


def _script(variable: str, data: Any) -> str:
    """JavaScript that sets ``window.<variable>`` to ``data`` (JSON, NaN as null)."""
    return f"window.{variable} = {json.dumps(_finite(data), separators=(',', ':'), allow_nan=False)};\n"


def _page(template: str, title: str, data_src: str) -> str:
    """An HTML page from a template of ``static/`` with its title and data script filled in."""
    text = (STATIC / template).read_text()
    return text.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", html.escape(quote(data_src)))


def write_scan(analysis: Analysis, files: SiteFiles, opts: SiteOptions) -> dict[str, Any]:
    """Write one scan's page, data, thumbnail and crops; returns its index row (with ``crops``)."""
    case, names = analysis.case, files.scans[analysis.case.name]
    thumb = write_thumbnail(analysis, files.path(names["thumb"]))
    crops = write_crops(analysis, files.claim)
    data = {
        "name": case.name,
        "files": {"mask": str(case.mask), "image": _str(case.image), "ref": _str(case.ref), "prob": _str(case.prob)},
        "volumes": display_volumes(analysis, opts.max_display_voxels),
        "lesions": [lesion_record(lesion) for lesion in analysis.lesions],
        "metrics": analysis.metrics,
        "crops": crops,
        "space": opts.space,
    }
    write_text(_script("MEDSEG_SCAN", data), files.path(names["data"]))
    write_text(_page("case.html", f"{case.name} - {opts.title}", names["data"]), files.path(names["page"]))
    return {**scan_record(analysis, thumb, names), "crops": crops}


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def volume_pairs(analyses: Sequence[Analysis]) -> tuple[list[float], list[float]]:
    """(reference, predicted) volume per lesion pair: each reference lesion with the summed volume
    of the predicted lesions it matches (0: missed), each false positive with reference 0."""
    ref, pred = [], []
    for a in analyses:
        predicted = {lesion.id: lesion.volume_mm3 for lesion in a.lesions if lesion.kind == "pred"}
        for lesion in a.lesions:
            if lesion.kind == "gt":
                ref.append(lesion.volume_mm3)
                pred.append(sum(predicted[i] for i in lesion.matches))
            elif lesion.status == "false_positive":
                ref.append(0.0)
                pred.append(lesion.volume_mm3)
    return ref, pred


class _ProbScans(Sequence):
    """The scans of a FROC, each read when the FROC reaches it (so a batch is never held in memory)."""

    def __init__(self, cases: Sequence[ReviewCase], lesion_labels: tuple[int, ...] | None) -> None:
        self.cases, self.lesion_labels = list(cases), lesion_labels

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Scan:  # type: ignore[override]
        v = read_volumes(replace(self.cases[i], image=None), self.lesion_labels)
        return Scan(v.prob, v.ref, voxel_volume(v.affine))


def write_pictures(
    done: Sequence[ReviewCase], rows: list[dict], pairs: tuple[list, list], files: SiteFiles, opts: SiteOptions
) -> list[dict[str, str]]:
    """The FROC (every scan with a probability map and a reference), the lesion volume plot and
    the Dice per scan (with references); returns ``[{"title", "file"}]`` of those written."""
    written = []
    with_ref = [row for row in rows if row["has_ref"]]
    if done and all(c.prob is not None and c.ref is not None for c in done):
        result = froc(_ProbScans(done, opts.evaluation.lesion_labels), connectivity=opts.evaluation.rule.connectivity)
        plot_froc(result, files.fixed[PICTURES["froc"]])
        written.append({"title": f"FROC (CPM {result['cpm']:.3f})", "file": PICTURES["froc"]})
    if with_ref and pairs[0]:
        plot_lesion_volumes(*pairs, files.fixed[PICTURES["volumes"]])
        written.append({"title": "Lesion volume: prediction against reference", "file": PICTURES["volumes"]})
    if with_ref:
        plot_case_dice([r["name"] for r in with_ref], [r["dice"] for r in with_ref], files.fixed[PICTURES["dice"]])
        written.append({"title": "Dice per scan", "file": PICTURES["dice"]})
    return written


def copy_static(files: SiteFiles) -> None:
    """The viewer, its licence, the pages' script and style sheet into ``review/static/``."""
    for name in STATIC_FILES:
        with atomic_write(files.fixed[f"static/{name}"]) as tmp:
            shutil.copyfile(STATIC / name, tmp)


def write_scans(
    cases: Sequence[ReviewCase], files: SiteFiles, opts: SiteOptions
) -> tuple[list[dict], list[str], list[ReviewCase], tuple[list[float], list[float]]]:
    """Each scan's page, one at a time (one scan's volumes in memory at once).

    Returns:
        (index rows, one error line per scan that could not be read, the cases shown, the lesion
        volume pairs of :func:`volume_pairs`).
    """
    rows, errors, done, pairs = [], [], [], ([], [])
    for case in cases:
        try:
            analysis = analyse(case, read_volumes(case, opts.evaluation.lesion_labels), opts.evaluation)
        except MedsegError as err:
            errors.append(str(err))
            continue
        rows.append(write_scan(analysis, files, opts))
        done.append(case)
        ref, pred = volume_pairs([analysis])
        pairs[0].extend(ref)
        pairs[1].extend(pred)
    return rows, errors, done, pairs


def write_site(cases: Sequence[ReviewCase], out: Path, opts: SiteOptions = SiteOptions()) -> SiteResult:
    """Write the review site of ``cases`` into ``out/review/`` (module docstring).

    Returns:
        The index path, the number of scans shown and one error line per scan that could not be
        read (the others are shown).

    Raises:
        MedsegError: no cases, a file that would leave ``out`` or replace an input, an unreadable
            ``review_marks.json``. Checked before anything is written or removed.
    """
    if not cases:
        raise MedsegError(f"{out}: no masks to review; pass the folder of masks 'medseg predict --out' wrote")
    files = SiteFiles(Path(out), cases)
    marks = read_marks(Path(out) / MARKS_FILE, {c.name for c in cases})
    folder = Path(out) / SITE
    remove_listed(folder, read_manifest(folder), [p for c in cases for p in c.inputs()])
    rows, errors, done, pairs = write_scans(cases, files, opts)
    pictures = write_pictures(done, rows, pairs, files, opts)
    site = {
        "title": opts.title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "rule": opts.evaluation.describe(),
        "marks_file": MARKS_FILE,
        "marks": marks_document(marks)["marks"],
        "scans": rows,
        "pictures": pictures,
        "errors": errors,
    }
    write_text(_script("MEDSEG_SITE", site), files.fixed["data/site.js"])
    write_text(_page("index.html", opts.title, "data/site.js"), files.fixed["index.html"])
    copy_static(files)
    written = write_manifest(files.fixed[MANIFEST], [p for p in files.claimed if p != files.fixed[MANIFEST]])
    return SiteResult(files.fixed["index.html"], len(rows), errors, written)
