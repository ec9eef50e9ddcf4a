"""The review's entry points: from a folder of masks (``medseg review``), after ``medseg predict
--review`` and ``medseg evaluate --review``, and serving a written site (``--serve``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path

from medseg.data.case import Case
from medseg.io.outputs import OutputPlan
from medseg.io.review_marks import MARKS_FILE
from medseg.review.cases import ReviewCase, by_name, expand_images, find_cases, mask_files, match_cases
from medseg.review.serve import make_server, url_of
from medseg.review.site import SITE, SiteOptions, SiteResult, write_site


def default_out(pred: Path) -> Path:
    """Where ``medseg review`` writes without ``--out``: the folder of masks (a mask file's folder)."""
    return pred if pred.is_dir() else pred.parent


def review_folder(
    pred: Path, images: Sequence[str], ref: Path | None, out: Path, opts: SiteOptions = SiteOptions()
) -> tuple[SiteResult, list[ReviewCase]]:
    """``medseg review PRED --images ... --ref ... --out OUT``: the site of every mask of ``pred``."""
    cases = find_cases(pred, images, ref)
    return write_site(cases, out, opts), cases


def review_predictions(
    out: Path, scans: Sequence[str], cases: Sequence[Case], opts: SiteOptions = SiteOptions()
) -> SiteResult:
    """``medseg predict --review``: the site of the masks in ``out``, with the scans ``scans``
    (files, folders, globs) and the dataset ``cases`` (their first channel and, when labelled, their
    label as the reference)."""
    images = {**by_name(expand_images(scans)), **{c.case_id: c.image for c in cases}}
    refs = {c.case_id: c.label for c in cases if c.label is not None}
    return write_site(match_cases(mask_files(out), images, refs), out, opts)


def review_evaluation(
    pred: Path, ref: Path, cases: Sequence[Case] | None, out: Path, opts: SiteOptions = SiteOptions()
) -> SiteResult:
    """``medseg evaluate --review``: the site of the masks of ``pred`` against the labels of the
    folder (or file) ``ref``, or of a dataset's ``cases`` (which also give the scans)."""
    if cases is None:
        return write_site(find_cases(pred, (), ref), out, opts)
    images = {c.case_id: c.image for c in cases}
    refs = {c.case_id: c.label for c in cases if c.label is not None}
    return write_site(match_cases(mask_files(pred), images, refs), out, opts)


def open_server(out: Path, cases: Sequence[ReviewCase], port: int = 0) -> ThreadingHTTPServer:
    """A server (bound, not yet serving: call its ``serve_forever``, e.g. in a thread) of
    ``out/review/`` on 127.0.0.1 that keeps marks in ``out/review_marks.json``.

    Raises:
        MedsegError: the marks file would replace an input, no site, or the port is taken.
    """
    marks = OutputPlan(out, [p for c in cases for p in c.inputs()]).claim(MARKS_FILE, "the review marks")
    return make_server(out / SITE, marks, [c.name for c in cases], port)


def serve_site(out: Path, cases: Sequence[ReviewCase], port: int, ready: Callable[[str], None]) -> None:
    """Serve ``out/review/`` on 127.0.0.1 until interrupted (Ctrl-C), keeping marks in
    ``out/review_marks.json``; ``ready(url)`` is called once the port is bound.

    Raises:
        MedsegError: the marks file would replace an input, no site, or the port is taken.
    """
    server = open_server(out, cases, port)
    ready(url_of(server))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
