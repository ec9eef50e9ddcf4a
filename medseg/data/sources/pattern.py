"""BIDS-like or any nested tree: one glob per channel with a ``{case}`` placeholder."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

from medseg.data.case import Case
from medseg.data.sources.common import case_name, inside_root
from medseg.errors import MedsegError
from medseg.io.paths import strip_suffix


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


def read_pattern(
    root: Path, channels: Sequence[str], label: str | None, problems: list[str], allow_outside: bool = False
) -> list[Case]:
    """Cases whose files match every channel glob (and the label glob) exactly once; every hit
    must lie inside ``root`` (see :func:`inside_root`)."""
    if not channels or "{case}" not in channels[0]:
        raise MedsegError(
            "data.channels: the pattern layout needs one glob per channel with a {case} placeholder, "
            "e.g. ['*/{case}/Flair.nii.gz']"
        )
    first = _glob_regex(channels[0])
    ids = sorted(
        {
            m["case"]
            for f in glob.glob(str(root / channels[0].replace("{case}", "*")), recursive=True)
            if (m := first.match(Path(f).relative_to(root).as_posix()))
        }
    )
    cases = []
    for case_id in [c for c in ids if case_name(c, root, problems) is not None]:
        files: list[Path] = []
        for pat in [*channels, *([label] if label else [])]:
            hits = sorted(glob.glob(str(root / pat.replace("{case}", glob.escape(case_id))), recursive=True))
            if len(hits) != 1:
                what = "no file" if not hits else f"{len(hits)} files ({', '.join(Path(h).name for h in hits[:3])})"
                problems.append(
                    f"{root / pat.replace('{case}', case_id)}: case {case_id} has {what} for this pattern; exactly "
                    "one is needed"
                )
                break
            inside = inside_root(root, hits[0], root / pat, problems, allow_outside)
            if inside is None:
                break
            files.append(inside)
        else:
            images = tuple(files[: len(channels)])
            cases.append(Case(case_id, images, files[-1] if label else None))
    return cases


def pattern_channel_name(pattern: str) -> str:
    """Channel name from a glob: the file name's parts without the case or wildcards
    (``{case}_ses-*_dwi.nii.gz`` -> ``dwi``)."""
    parts = strip_suffix(Path(pattern).name).split("_")
    return "_".join(p for p in parts if "{case}" not in p and not any(ch in p for ch in "*?["))
