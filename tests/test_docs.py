"""The documentation site: it builds with ``mkdocs build --strict`` (offline), its generated
command-line reference is current, and every page the navigation lists exists."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from medseg.cli.reference import PAGE, reference

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(nav: list) -> list[str]:
    """Every Markdown file named in mkdocs.yml's nav, depth first."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_cli_reference_page_is_current():
    assert PAGE == ROOT / "docs" / "reference" / "cli.md"
    text = PAGE.read_text()
    assert reference() == text, "docs/reference/cli.md is stale: run `python -m medseg.cli.reference`"
    for command in ("synth", "train", "predict", "evaluate", "tune", "check", "plan", "show", "demo", "runs"):
        assert f"\n## medseg {command}\n" in text


def test_every_docs_page_is_in_the_nav_and_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    listed = _nav_pages(config["nav"])
    assert len(listed) == len(set(listed))
    on_disk = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(listed) == on_disk


def test_mkdocs_build_strict(tmp_path):
    """The site builds without a warning (broken link, missing page, bad anchor), and without network."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(tmp_path / "site"),
    ]
    res = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for page in (
        "index.html",
        "reference/cli/index.html",
        "reference/config/index.html",
        "results/index.html",
        "how-to/own-data/index.html",
        "reference/guarantees/index.html",
    ):
        assert (tmp_path / "site" / page).is_file(), page
    assert "brats_wt_flair.yaml" in (tmp_path / "site" / "how-to" / "own-data" / "index.html").read_text()
