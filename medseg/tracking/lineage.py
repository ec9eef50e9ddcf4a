"""What makes a run reproducible from its own record: code version, package versions, device and
a fingerprint of the dataset.
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path


def git_commit(start: Path | None = None) -> str:
    """Commit of the medseg checkout (``+dirty`` with uncommitted changes), or ``unknown``."""
    where = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dataset_fingerprint(dataset: Path) -> str:
    """SHA-256 over dataset.json and every file's name and size (no voxel reads: fast, and any
    added, removed or replaced file changes it)."""
    h = hashlib.sha256()
    meta = dataset / "dataset.json"
    if meta.is_file():
        h.update(meta.read_bytes())
    for path in sorted(p for p in dataset.rglob("*") if p.is_file() and p.name != "dataset.json"):
        h.update(f"{path.relative_to(dataset)}:{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def lineage_tags(cfg, device) -> dict[str, str]:
    """MLflow tags: git commit, versions of medseg/torch/monai/mlflow, device, dataset hash."""
    return {
        "git_commit": git_commit(),
        **{f"version.{pkg}": _version(pkg) for pkg in ("medseg", "torch", "monai", "mlflow", "nibabel", "SimpleITK")},
        "device": str(device),
        "dataset_fingerprint": dataset_fingerprint(Path(cfg.data.dataset)),
        "seed": str(cfg.train.seed),
    }
