"""Shared fixtures: tiny volumes with an oblique, anisotropic, LAS-flipped affine."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

MEDSEG = [str(Path(sys.executable).with_name("medseg"))]

# `medseg` in a fresh interpreter spends ~4 s importing torch, MONAI and MLflow before it does
# anything; most CLI tests only need a separate process with the CLI's own exit code and output.
# cli() forks each call from a fork server that has imported them once (multiprocessing's
# forkserver: the server never runs torch, so no OpenMP threads exist when it forks). Calls that
# need a fresh interpreter (resource limits, torchrun, start-up time, an optional extra made
# unimportable) use subprocess; :class:`Forked` leaves one running for the signal tests.
# What the server imports and warms once: tests/preload.py.
PRELOAD = ["tests.preload"]
_SERVER: list = []


# `make test` hands whole files to its two pytest-xdist workers in collection order
# (--dist loadfile --no-loadscope-reorder). The files that train models or start servers go first,
# longest first (their seconds on 2 cores in the comment), so that the short files fill in at the
# end and both workers finish together, instead of one worker starting a minute-long file last.
LONG_FILES = [
    "test_mlflow_server.py",  # 82
    "test_resume.py",  # 72
    "test_adversarial_concurrency.py",  # 57
    "test_mlflow_run.py",  # 54
    "test_notebooks.py",  # 49
    "test_real_data.py",  # 44
    "test_finetune.py",  # 38
    "test_cli_e2e.py",  # 37
    "test_folds.py",  # 36
    "test_adversarial_models.py",  # 32
    "test_onnx.py",  # 32
    "test_review.py",  # 24
]


def pytest_collection_modifyitems(items: list) -> None:
    """The files of :data:`LONG_FILES` first, in that order; the rest as collected."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


def fork_context():
    """The forkserver context, started once per test process with the heavy modules preloaded."""
    import multiprocessing

    if not _SERVER:
        # read by MLflow when it is imported (in the server), as `medseg` sets them before importing it
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _SERVER.append(ctx)
    return _SERVER[0]


def _cli_child(argv: list[str], env: dict, cwd: str | None, out: str, err: str, umask: int | None) -> None:
    """In the forked process: the environment, folder, umask and output files of a fresh ``medseg`` run."""
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    if umask is not None:
        os.umask(umask)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = ["medseg", *argv]
    from medseg.cli.app import main

    main()


class Forked:
    """``medseg ARGS...`` forked from the preloaded server (see :data:`PRELOAD`) and left running, with
    the part of ``subprocess.Popen``'s interface the tests use: ``pid``, ``returncode`` (negative:
    the signal that ended it), ``poll``, ``wait``, ``send_signal``, ``kill``, ``communicate``."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd=None, umask: int | None = None) -> None:
        import tempfile

        self.args = [*MEDSEG, *argv]
        self._tmp = tempfile.TemporaryDirectory(prefix="medseg-cli-")
        self._files = [os.path.join(self._tmp.name, name) for name in ("out", "err")]
        context = (argv, dict(env or os.environ), cwd and str(cwd), *self._files, umask)
        self._proc = fork_context().Process(target=_cli_child, args=context)
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._proc.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self._proc.kill()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end (``subprocess.TimeoutExpired`` after ``timeout`` s); its stdout and stderr."""
        self.wait(timeout)
        return tuple(Path(p).read_text(errors="replace") if Path(p).exists() else "" for p in self._files)


def cli(*args, timeout: float = 600, cwd=None, env: dict | None = None, umask: int | None = None):
    """``medseg ARGS...`` in its own process (:class:`Forked`), with file-creation mask ``umask`` if
    given; a ``subprocess.CompletedProcess`` with the exit code and the text of stdout and stderr."""
    import subprocess

    proc = Forked([str(a) for a in args], env, cwd, umask)
    try:
        out, err = proc.communicate(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def oblique_affine(spacing=(1.2, 0.9, 2.5), angle_deg: float = 7.0) -> np.ndarray:
    """A non-identity affine: LAS flip, rotation about z and x, anisotropic spacing, offset."""
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-spacing[0], spacing[1], spacing[2]])
    affine[:3, 3] = [31.5, -17.25, 9.0]
    return affine


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@pytest.fixture
def affine() -> np.ndarray:
    return oblique_affine()


@pytest.fixture
def real_data() -> Path:
    root = os.environ.get("MEDSEG_REAL_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("MEDSEG_REAL_DATA not set")
    return Path(root)


def how_to_commands(page: str) -> list[list[str]]:
    """The ``medseg`` lines of the first bash block of a docs page (``docs/PAGE``), as argument lists."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text()
    block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    return [line.split("#")[0].split()[1:] for line in block.splitlines() if line.startswith("medseg ")]
