"""The list of files a review site wrote (``review/manifest.json``), so that writing the site again
removes what the previous one left and nothing else.

Format (``"format": "medseg-review-manifest/1"``)::

    {"format": "medseg-review-manifest/1",
     "files": ["index.html", "data/site.js", "case_synth_020.html", "img/crop_synth_020_pred3.png", ...]}

Paths are relative to ``review/``. The manifest is read back from disk, so it is untrusted: an
entry is removed only when it is a plain relative path (no ``..``, not absolute), it resolves
inside ``review/`` (no link leads out), and it is a regular file (not a link, not a folder). An
unreadable manifest removes nothing. The reviewer marks (``review_marks.json`` beside ``review/``)
are never listed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from medseg.io.write import write_text

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "medseg-review-manifest/1"
MAX_ENTRIES = 1_000_000


def _safe(site: Path, entry: object) -> Path | None:
    """``site/entry`` when ``entry`` names a regular file of the site (module docstring), else None."""
    if not isinstance(entry, str) or not entry or len(entry) > 1000 or "\\" in entry or "\0" in entry:
        return None
    rel = PurePosixPath(entry)
    if rel.is_absolute() or ".." in rel.parts or rel.name == MANIFEST:
        return None
    path = site / rel
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(site))
    if root not in real.parents or path.is_symlink() or not path.is_file():
        return None
    return path


def read_manifest(site: Path) -> list[str]:
    """The entries of ``site/manifest.json`` ([] when it is missing, unreadable or not a manifest)."""
    try:
        data = json.loads((site / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    return [f for f in files[:MAX_ENTRIES] if isinstance(f, str)] if isinstance(files, list) else []


def remove_listed(site: Path, entries: Iterable[str], keep: Iterable[Path] = ()) -> int:
    """Delete the files of ``site`` named by ``entries`` that pass :func:`_safe`, except ``keep``
    (e.g. the inputs of the new site); returns how many were removed."""
    kept = {os.path.realpath(p) for p in keep}
    removed = 0
    for entry in entries:
        path = _safe(site, entry)
        if path is not None and os.path.realpath(path) not in kept:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_manifest(path: Path, files: Iterable[Path]) -> list[Path]:
    """Write the manifest ``path`` (``<site>/manifest.json``) listing those of ``files`` (paths
    inside its folder) that exist; returns them and the manifest."""
    site = path.parent
    written = sorted({p for p in files if p.is_file()})
    names = [p.relative_to(site).as_posix() for p in written]
    write_text(json.dumps({"format": MANIFEST_FORMAT, "files": names}, indent=0), path)
    return [*written, path]
