"""``--markdown FILE`` for the benchmark scripts: the printed table written as a Markdown page section
with a header naming the machine, the git commit, the date and the exact command, ready for
docs/results/index.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def add_markdown_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--markdown FILE`` to a benchmark's parser."""
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the table as Markdown with machine, commit, date and command",
    )


def _cpu() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """Platform, CPU model and core count, torch threads, and the GPU when CUDA is present."""
    text = f"{platform.platform()}; {_cpu()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text


def git_commit() -> str:
    """The checked-out commit, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def section(title: str, table: str, notes: Sequence[str] = (), argv: Sequence[str] | None = None) -> str:
    """A results-page section: heading, machine / commit / date, the command, notes, the table."""
    command = "python " + shlex.join(argv if argv is not None else sys.argv)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {title}",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {machine()} |",
        f"| commit | `{git_commit()}` |",
        f"| date | {date} |",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    lines += [*(f"{note}" for note in notes), ""] if notes else []
    return "\n".join([*lines, table.rstrip(), ""])


def write_markdown(path: Path | None, title: str, table: str, notes: Sequence[str] = ()) -> None:
    """Write :func:`section` to ``path`` (nothing when ``path`` is None, i.e. no ``--markdown``)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(section(title, table, notes))
    print(f"wrote {path}")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table from a header and rows of cells (floats printed as given by the caller)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
