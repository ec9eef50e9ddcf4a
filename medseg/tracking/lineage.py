"""What makes a run reproducible from its own record: code version, package versions, device, a
fingerprint of the dataset, and the model a fine-tuned run started from.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import (
    get_registered_sources,
    resolve_dataset_source,
)
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import DatasetInput, InputTag

from medseg.config.schema import ExperimentConfig
from medseg.tracking.store import redact_uri


def git_commit(start: Path | None = None) -> str:
    """Commit of the medseg checkout (``+dirty`` with uncommitted changes), or ``unknown``."""
    where = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
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


def _redact_arg(arg: str) -> str:
    """A command-line argument as it is recorded: a URI in it (``tracking.uri=URI`` too) without credentials."""
    key, eq, value = arg.partition("=")
    return key + eq + redact_uri(value) if eq and "://" in value else redact_uri(arg)


def lineage_tags(cfg: ExperimentConfig, device: torch.device) -> dict[str, str]:
    """MLflow tags: git commit, versions of medseg/torch/monai/mlflow, device, dataset hash, and
    MLflow's own source tags (the command line, the commit) for the run page's Source field."""
    commit = git_commit()
    return {
        "git_commit": commit,
        **{f"version.{pkg}": _version(pkg) for pkg in ("medseg", "torch", "monai", "mlflow", "nibabel", "SimpleITK")},
        "device": str(device),
        "dataset_fingerprint": dataset_fingerprint(Path(cfg.data.dataset)),
        "seed": str(cfg.train.seed),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": " ".join(["medseg", *map(_redact_arg, sys.argv[1:])])
        if Path(sys.argv[0]).name == "medseg"
        else sys.argv[0],
        **({"mlflow.source.git.commit": commit.removesuffix("+dirty")} if commit != "unknown" else {}),
    }


def local_source(root: Path) -> DatasetSource:
    """MLflow's ``local`` dataset source for a folder (asked for by type: several registered
    source classes accept a plain path, and MLflow warns when it has to guess)."""
    local = [cls for cls in get_registered_sources() if cls._get_source_type() == "local"][:1]
    return resolve_dataset_source(str(Path(root).resolve()), candidate_sources=local)


def dataset_input(root: Path, splits: dict[str, Sequence[str]], digest: str | None = None) -> DatasetInput:
    """The MLflow dataset record of a training run (the runs table's Dataset column): the case ids
    per split as a table, named after the dataset folder, the :func:`dataset_fingerprint` as its
    digest, the folder as its source, and ``cases.<split>`` counts as input tags."""
    table = pd.DataFrame(
        [{"case_id": case, "split": split} for split, ids in splits.items() for case in ids],
        columns=["case_id", "split"],
    )
    root = Path(root)
    data = PandasDataset(
        table, local_source(root), name=root.name or str(root), digest=digest or dataset_fingerprint(root)
    )
    tags = [
        InputTag("mlflow.data.context", "training"),
        *(InputTag(f"cases.{split}", str(len(ids))) for split, ids in splits.items()),
    ]
    return DatasetInput(data._to_mlflow_entity(), tags)  # what mlflow.log_input sends, for a client-driven run


def init_tags(source: str, run_id: str | None) -> dict[str, str]:
    """MLflow tags naming a fine-tuned run's parent model (``train.init_from``): ``init_from``, the
    checkpoint file or model URI it started from (without credentials), and ``init_from.run_id``,
    the MLflow run that trained that model when the checkpoint records one."""
    return {"init_from": redact_uri(source), **({"init_from.run_id": run_id} if run_id else {})}
