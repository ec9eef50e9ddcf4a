"""Robustness catalogue: shared helpers and session fixtures.

Every case feeds the ``medseg`` CLI (as a user runs it, in a subprocess) a generated bad input or
an injected fault and checks the failure is clean:

* exit code != 0 (1 when some scans of a batch failed, 2 for a bad input/config);
* stderr holds ONE ``error:`` line naming the offending file or key, saying what is wrong and how
  to fix it (medseg's convention: ``<what>: <problem>; <fix>``);
* no Python traceback;
* nothing half-written: no mask for the bad scan, no ``.*.partial-*`` temporary files;
* in a batch, the good scans are still segmented.

Fixtures are session scoped so the whole catalogue stays fast on 2 CPU cores: one tiny synthetic
dataset, one tiny checkpoint (saved the way ``medseg.train`` does, no training needed). Bad scan
files are made by ``badfiles.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MEDSEG, Forked, cli, oblique_affine, save_nifti

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")
SHAPE = (24, 24, 16)
SPACING = (1.5, 1.5, 2.0)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def params_skipping_as_root(cases, root_ignores: dict[str, str]) -> list:
    """pytest params for ``cases``; those in ``root_ignores`` (case -> what root ignores) are
    skipped when running as root, where permissions do not apply."""
    return [
        pytest.param(
            case,
            id=case,
            marks=[pytest.mark.skipif(IS_ROOT, reason=f"running as root: {root_ignores[case]}")]
            if case in root_ignores
            else [],
        )
        for case in cases
    ]


# overrides that make `medseg train` tiny: 1 epoch, 16^3 patches, a 3-level UNet with 4-16 maps, no MLflow
TINY_TRAIN = [
    "--set",
    "train.epochs=1",
    "--set",
    "train.val_every=1",
    "--set",
    "sampling.patch_size=[16,16,16]",
    "--set",
    "model.channels=[4,8,16]",
    "--set",
    "model.strides=[2,2]",
    "--set",
    "train.batch_size=2",
    "--set",
    "preprocess.target_spacing=null",
    "--set",
    "tracking.enabled=false",
    "--set",
    "inference.sw_batch_size=1",
    "--quiet",
]
TRACEBACK = "Traceback (most recent call last)"


# ---------------------------------------------------------------------------------------------- running


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONFAULTHANDLER"] = "0"
    return env


def limit_memory(gib: float = 12.0):
    """preexec_fn: cap the child's data segment (RLIMIT_DATA; RLIMIT_AS is too tight for torch's
    address-space reservations), so a header claiming terabytes cannot exhaust the machine."""

    def apply() -> None:
        import resource

        cap = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    return apply


def run_cli(*args, timeout: float = 300, cwd: Path | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """``medseg ARGS...`` in its own process; stdout/stderr captured as text. Forked from the
    preloaded server (:func:`tests.conftest.cli`) unless ``preexec_fn`` needs a fresh interpreter."""
    if preexec_fn is None:
        return cli(*args, timeout=timeout, cwd=cwd, env=cli_env())
    return subprocess.run(
        [*MEDSEG, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=cli_env(),
        preexec_fn=preexec_fn,
    )


def start_cli(*args, cwd: Path | None = None) -> Forked:
    """``medseg ARGS...`` started in the background (for the fault-injection cases)."""
    return Forked([str(a) for a in args], env=cli_env(), cwd=cwd)


def run_many(calls: Sequence[tuple], workers: int = 2) -> list[subprocess.CompletedProcess]:
    """Several ``run_cli`` calls, two at a time (the CLI start-up is mostly import time)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda a: run_cli(*a), calls))


# ------------------------------------------------------------------------------------------- assertions


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def describe(res: subprocess.CompletedProcess) -> str:
    return (
        f"exit {res.returncode}\n--- stderr (tail) ---\n{res.stderr[-3000:]}\n"
        f"--- stdout (tail) ---\n{res.stdout[-1000:]}"
    )


def assert_clean_error(
    res: subprocess.CompletedProcess, must_name: str, problem: str | Sequence[str] = (), code: int | None = None
) -> str:
    """The failure is reported as one ``error:`` line that names ``must_name`` (a file name or a
    config key), mentions the ``problem`` (any of the given words, case-insensitive), and suggests
    a fix after a ``;``. Exit code non-zero (``code`` when given), no traceback.

    Returns the error line.
    """
    assert res.returncode != 0, "expected a failure\n" + describe(res)
    if code is not None:
        assert res.returncode == code, describe(res)
    assert TRACEBACK not in res.stderr and "Traceback" not in res.stderr, describe(res)
    named = [line for line in error_lines(res.stderr) if must_name in line]
    assert len(named) == 1, f"expected ONE 'error:' line naming {must_name!r}\n" + describe(res)
    line = named[0]
    words = [problem] if isinstance(problem, str) else list(problem)
    if words:  # the problem must be said in words, not only be guessable from the file's name
        text = " ".join(t for t in line.replace(must_name, " ").split() if "/" not in t).lower()
        assert any(w.lower() in text for w in words), f"error line does not say {words}: {line}"
    assert suggests_fix(line), f"error line suggests no fix: {line}"
    return line


FIX_HINTS = ("e.g.", "valid keys", "valid choices", "should be", "must be", "expected", "use ", "set ", "pass ")


def suggests_fix(line: str) -> bool:
    """medseg's convention is ``<what>: <problem>; <fix>``; config messages from pydantic say what
    is valid instead (``should be ...``, ``valid keys ...``)."""
    after = line.rsplit(";", 1)[1] if ";" in line else ""
    return len(after.split()) >= 2 or any(h in line.lower() for h in FIX_HINTS)


def partial_files(folder: Path) -> list[Path]:
    """Temporary files a write left behind (``.<name>.partial-*``, ``.<name>.tmp``, checkpoint temps)."""
    if not folder.exists():
        return []
    return sorted(
        p
        for p in folder.rglob(".*")
        if p.is_file() and ("partial-" in p.name or p.name.endswith(".tmp") or re.match(r"\.(best|last)\.pt\.", p.name))
    )


def assert_no_partials(folder: Path) -> None:
    left = partial_files(folder)
    assert not left, f"half-written files left: {left}"


def mask_path(out: Path, scan: Path) -> Path:
    from medseg.io.paths import strip_suffix

    return out / f"{strip_suffix(scan)}.nii.gz"


def assert_mask_loads(path: Path, shape: Sequence[int] | None = None) -> None:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if shape is not None:
        assert data.shape == tuple(shape), (path, data.shape)
    assert set(np.unique(data)) <= {0, 1}, path


# ----------------------------------------------------------------------------------------- data makers


def good_image(seed: int = 0, shape: Sequence[int] = SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(600, 50, size=tuple(shape)).astype(np.float32)
    img[:2] = 0  # a zero border, as skull-stripped scans have
    return img


def write_dataset(
    root: Path,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    affines: Sequence[np.ndarray] | None = None,
    label_affines: Sequence[np.ndarray] | None = None,
    entries: list[dict] | None = None,
    labels_meta: dict | None = None,
) -> Path:
    """An MSD folder: imagesTr/cN.nii.gz, labelsTr/cN.nii.gz, dataset.json."""
    n = len(images)
    affines = affines or [oblique_affine(SPACING)] * n
    label_affines = label_affines or affines
    for i in range(n):
        save_nifti(images[i], affines[i], root / "imagesTr" / f"c{i}.nii.gz")
        save_nifti(labels[i], label_affines[i], root / "labelsTr" / f"c{i}.nii.gz")
    meta = {
        "name": "robustness",
        "modality": {"0": "MRI"},
        "labels": labels_meta or {"0": "background", "1": "lesion"},
        "numTraining": n,
        "training": entries
        if entries is not None
        else [{"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"} for i in range(n)],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def lesion_label(seed: int = 0, shape: Sequence[int] = SHAPE, value=1, dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(tuple(shape), dtype=dtype)
    c = np.array(shape) // 2 + (seed % 3) - 1
    lab[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = value
    return lab


def good_cases(n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [good_image(i) for i in range(n)], [lesion_label(i) for i in range(n)]


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def robust_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="session")
def good_scans(robust_root) -> list[Path]:
    """Three good scans (oblique, anisotropic affine) to mix into every batch."""
    return [
        save_nifti(good_image(10 + i), oblique_affine(SPACING), robust_root / "good" / f"good{i}.nii.gz")
        for i in range(3)
    ]


@pytest.fixture(scope="session")
def good_dataset(robust_root) -> Path:
    images, labels = good_cases(4)
    return write_dataset(robust_root / "gooddata", images, labels)


def tiny_config(dataset: Path, in_channels: int = 1):
    from medseg.config.schema import ExperimentConfig

    return ExperimentConfig.model_validate(
        {
            "data": {"dataset": str(dataset)},
            "preprocess": {"target_spacing": list(SPACING), "normalize": "zscore_nonzero"},
            "sampling": {"patch_size": [16, 16, 16]},
            "model": {"channels": [4, 8, 16], "strides": [2, 2]},
            "inference": {"sw_batch_size": 1, "amp": "off"},
            "tracking": {"enabled": False},
        }
    )


def tiny_payload(dataset: Path, in_channels: int = 1, seed: int = 0) -> dict:
    """A checkpoint payload exactly as ``medseg.train._payload`` builds it, with random weights."""
    import torch

    from medseg.nn.registry import build_model

    cfg = tiny_config(dataset)
    torch.manual_seed(seed)
    model = build_model(cfg.model, in_channels=in_channels, out_channels=1)
    return {
        "mlflow_run_id": None,
        "tracking_uri": None,
        "state_dict": model.state_dict(),
        "config": cfg.model_dump(mode="json"),
        "preprocess": {"spacing": list(SPACING), "normalize": cfg.preprocess.normalize, "in_channels": in_channels},
        "operating_point": {"threshold": cfg.inference.threshold, "min_lesion_mm3": cfg.inference.min_lesion_mm3},
        "epoch": 1,
        "metrics": {},
    }


@pytest.fixture(scope="session")
def tiny_checkpoint(robust_root, good_dataset) -> Path:
    """best.pt of a tiny 3D UNet (random weights), saved with medseg.nn.checkpoint.write_payload
    (as a checkpoint of medseg 0.1 was)."""
    from medseg.nn.checkpoint import write_payload

    path = robust_root / "ckpt" / "best.pt"
    write_payload(tiny_payload(good_dataset), path)
    return path
