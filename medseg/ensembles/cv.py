"""``medseg train CONFIG --folds N [--fold K]``: cross-validation, one MLflow parent run with a
child run per fold; ``medseg train CONFIG --seeds N``: a seed ensemble, the same way.

The folds split the training cases (``data.exclude_cases`` stay out) by case, or by group with
``data.group_pattern`` (:func:`medseg.data.split.fold_splits`). Fold ``k`` is an ordinary run
whose validation cases are fold ``k``, in ``<train.output_dir>/cv<N>-s<seed>/fold<k>/``. The folder
keeps ``cv.json`` (folds and parent run id), so folds trained by separate commands (one per GPU
or node) share their parent. The folder then serves ``medseg predict`` (the fold ensemble) and
``medseg tune`` (operating point on the pooled out-of-fold predictions).

``--seeds N`` trains the config N times (train.seed, train.seed + 1, ...) on one split: every
member validates on the first seed's validation cases (pinned as ``data.val_cases``), in
``<train.output_dir>/seeds<N>-s<seed>/seed<s>/``. ``medseg tune FOLDER`` then picks the ensemble's
operating point on those cases (predicted with the members' mean probability) and ``medseg
predict FOLDER`` averages them.

The same command again continues the ensemble (:func:`train_member`): a member whose run
finished is kept, one that was stopped (SIGTERM, a crash, a lost node) resumes from its
``last.pt`` with its own config.yaml, the others train. So each member folder holds one run, and
``medseg predict FOLDER`` never averages a member twice. Remove a member's folder to train it again.

Folds may train at the same time (``--fold K`` in one process each): cv.json (and ensemble.json) are
read, changed and written under a file lock beside them (``cv.json.lock``), so the parent run is
created once and every fold process finds it, and each fold merges its own result
(``results.<k>``) into cv.json when it ends; the fold that completes the set closes the parent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from medseg.config.load import flatten, load_config
from medseg.config.schema import ExperimentConfig, run_name
from medseg.data.sources.discover import from_config
from medseg.data.split import fold_splits, run_split
from medseg.errors import MedsegError
from medseg.io.write import write_text
from medseg.nn.checkpoint import load_checkpoint
from medseg.tracking.records import record, run_metrics
from medseg.tracking.store import live_uri, redact_config
from medseg.tracking.tracker import parent_run, resolve_uri
from medseg.training.run import train
from medseg.training.state import TrainResult


@dataclass
class CVResult:
    """The cross-validation folder, its parent MLflow run and the folds trained by this call."""

    folder: Path
    parent_run_id: str | None
    folds: list[list[str]]
    results: dict[int, TrainResult] = field(default_factory=dict)


def cv_folder(cfg: ExperimentConfig, folds: int) -> Path:
    return Path(cfg.train.output_dir) / f"cv{folds}-s{cfg.train.seed}"


def _state(cfg: ExperimentConfig, folds: int) -> tuple[Path, dict]:
    """The folder's cv.json, created on the first call (folds, parent run); later calls, and
    fold processes started at the same time, must find the same folds (same cases, seed and
    group pattern) and share its parent run."""
    folder = cv_folder(cfg, folds)
    cases = from_config(cfg.data).require_clean()
    splits = fold_splits(cases, folds, cfg.train.seed, cfg.data.group_pattern)
    state = _shared_state(
        folder / "cv.json",
        "folds",
        splits,
        "its folds differ from this config's cases",
        lambda: {
            "folds": splits,
            "parent_run_id": _open_parent(cfg, f"{run_name(cfg)}-cv{folds}"),
            "group_pattern": cfg.data.group_pattern,
        },
    )
    return folder, state


def _lock(path: Path) -> FileLock:
    """The lock of an ensemble folder's state file ``path`` (``<path>.lock`` beside it)."""
    return FileLock(f"{path}.lock")


def _shared_state(path: Path, key: str, expected: list, differs: str, create: Callable[[], dict]) -> dict:
    """:func:`_saved_state` of ``path``, or ``create()`` written there: under the file's lock, so
    of processes starting together one creates it (and its parent run) and the others read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        state = _saved_state(path, key, expected, differs)
        if state is None:
            state = create()
            write_text(json.dumps(state, indent=2), path)
    return state


def _saved_state(path: Path, key: str, expected: list, differs: str) -> dict | None:
    """An ensemble folder's saved state (cv.json, ensemble.json), None before the first call.

    Raises:
        MedsegError: its ``key`` is not ``expected`` (another config's cases or split).
    """
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state[key] != expected:
        raise MedsegError(f"{path}: {differs}; use another train.output_dir or remove {path.parent}")
    return state


def _open_parent(cfg: ExperimentConfig, name: str) -> str | None:
    """A new MLflow run for the members to nest under (none with tracking off)."""
    if not cfg.tracking.enabled:
        return None
    return parent_run(_uri(cfg), cfg.tracking.experiment, name, Path(cfg.train.output_dir))


def _close_parent(
    cfg: ExperimentConfig, parent: str, mean_key: str, values: list[float], tag_key: str, command: str
) -> None:
    """The members' mean selection metric and the ensemble command on the parent run, which ends."""
    record(_uri(cfg), parent, {mean_key: sum(values) / len(values)}, {tag_key: command}, status="FINISHED")


def _uri(cfg: ExperimentConfig) -> str:
    return resolve_uri(cfg.tracking.uri, Path(cfg.train.output_dir))


def fold_config(
    cfg: ExperimentConfig, folder: Path, k: int, val_ids: list[str], parent: str | None
) -> ExperimentConfig:
    """The config of fold ``k``: its validation cases, its folder, nested under the parent run."""
    return member_config(cfg, folder / f"fold{k}", val_ids, parent, f"{run_name(cfg)}-fold{k}")


def member_config(
    cfg: ExperimentConfig, out: Path, val_ids: Sequence[str], parent: str | None, name: str, seed: int | None = None
) -> ExperimentConfig:
    """The config of one member run (a fold, a seed): its validation cases, its folder ``out``,
    nested under the parent run (in the parent's store: the default SQLite store follows
    train.output_dir, which moves)."""
    data = cfg.data.model_copy(update={"val_cases": tuple(val_ids)})
    train_cfg = cfg.train.model_copy(update={"output_dir": out, **({} if seed is None else {"seed": seed})})
    tracking = cfg.tracking.model_copy(update={"parent_run_id": parent, "run_name": name, "uri": _uri(cfg)})
    return cfg.model_copy(update={"data": data, "train": train_cfg, "tracking": tracking})


def train_folds(cfg: ExperimentConfig, folds: int, fold: int | None = None, progress: bool = True) -> CVResult:
    """Train fold ``fold`` (or every fold in turn); the parent run gets each fold's best
    selection metric and, once every fold has a best.pt, their mean.

    Raises:
        MedsegError: a fold index outside 0..folds-1, or folds that cannot be made.
    """
    if fold is not None and not 0 <= fold < folds:
        raise MedsegError(f"--fold {fold}: folds are numbered 0 to {folds - 1}")
    folder, state = _state(cfg, folds)
    out = CVResult(folder, state["parent_run_id"], state["folds"])
    for k in range(folds) if fold is None else [fold]:
        out.results[k] = train_member(fold_config(cfg, folder, k, state["folds"][k], out.parent_run_id), progress)
    _summarise(cfg, out, folds)
    return out


def _summarise(cfg: ExperimentConfig, out: CVResult, folds: int) -> None:
    """Each trained fold's result merged into cv.json (``results.<k>``: best selection metric, run
    folder) and its best metric on the parent run; once every fold has one, their mean
    (``cv_mean_<metric>``), the ensemble command as a tag, and the parent closed. Under cv.json's
    lock: folds ending together each keep their entry, and one of them closes the parent."""
    path = out.folder / "cv.json"
    with _lock(path):
        state = json.loads(path.read_text())
        results = state.setdefault("results", {})
        results.update(
            {
                str(k): {"best_metric": float(res.best_metric), "run_dir": str(res.run_dir)}
                for k, res in out.results.items()
            }
        )
        write_text(json.dumps(state, indent=2), path)
        if out.parent_run_id is not None:
            _log_folds(cfg, out, folds)


def _log_folds(cfg: ExperimentConfig, out: CVResult, folds: int) -> None:
    """This call's folds' best selection metric on the parent run; closes it when every fold has one."""
    metric = cfg.train.select_metric
    record(_uri(cfg), out.parent_run_id, {f"fold{k}_{metric}": res.best_metric for k, res in out.results.items()})
    logged = run_metrics(_uri(cfg), out.parent_run_id)  # latest value of each fold, this call's or earlier ones'
    values = [logged.get(f"fold{k}_{metric}") for k in range(folds)]
    if all(v is not None for v in values):
        _close_parent(
            cfg,
            out.parent_run_id,
            f"cv_mean_{metric}",
            values,
            "cv.ensemble",
            f"medseg predict {out.folder} SCANS --out OUT",
        )


def train_seeds(cfg: ExperimentConfig, seeds: int, progress: bool = True) -> CVResult:
    """Train the config with ``seeds`` seeds in turn on the first seed's split (module docstring);
    the parent run gets each member's best selection metric, their mean and the commands that
    use the ensemble. ``CVResult.folds`` holds the one shared validation list.

    Raises:
        MedsegError: fewer than 2 seeds, or a folder whose runs are not this ensemble's.
    """
    if seeds < 2:
        raise MedsegError(f"--seeds {seeds}: an ensemble needs at least 2")
    folder, state = _seed_state(cfg, seeds)
    val_ids, parent = state["val_cases"], state["parent_run_id"]
    out = CVResult(folder, parent, [val_ids])
    for seed in range(cfg.train.seed, cfg.train.seed + seeds):
        member = member_config(cfg, folder / f"seed{seed}", val_ids, parent, f"{run_name(cfg)}-seed{seed}", seed)
        out.results[seed] = train_member(member, progress)
    if parent is not None:
        metric, values = cfg.train.select_metric, [float(r.best_metric) for r in out.results.values()]
        record(_uri(cfg), parent, {f"seed{seed}_{metric}": value for seed, value in zip(out.results, values)})
        _close_parent(
            cfg,
            parent,
            f"mean_{metric}",
            values,
            "ensemble",
            f"medseg tune {folder}; medseg predict {folder} SCANS --out OUT",
        )
    return out


def _seed_state(cfg: ExperimentConfig, seeds: int) -> tuple[Path, dict]:
    """The seed ensemble's folder and its ensemble.json (shared validation cases, parent run),
    created on the first call; a later call must find the same validation cases.

    Raises:
        MedsegError: the folder holds runs without an ensemble.json, or another split's.
    """
    folder = Path(cfg.train.output_dir) / f"seeds{seeds}-s{cfg.train.seed}"
    cases = from_config(cfg.data).require_clean()
    val_ids = [c.case_id for c in run_split(cases, cfg)[1]]

    def create() -> dict:
        if any(folder.rglob("last.pt")):
            raise MedsegError(
                f"{folder}: holds runs of no ensemble.json (an older medseg); "
                f"use another train.output_dir or remove {folder}"
            )
        return {
            "seeds": seeds,
            "val_cases": val_ids,
            "parent_run_id": _open_parent(cfg, f"{run_name(cfg)}-seeds{seeds}"),
        }

    state = _shared_state(
        folder / "ensemble.json", "val_cases", val_ids, "its validation cases differ from this config's", create
    )
    return folder, state


def train_member(cfg: ExperimentConfig, progress: bool = True) -> TrainResult:
    """One member of an ensemble (a fold, a seed) in its own folder ``train.output_dir``: its
    latest run is kept when it finished, resumed from its ``last.pt`` (and its config.yaml) when
    it was stopped; a folder without a run trains a new one.

    Raises:
        MedsegError: the latest run's last.pt cannot be resumed (no resume state).
    """
    latest = latest_run(Path(cfg.train.output_dir))
    if latest is None:
        return train(cfg, progress)
    ckpt = load_checkpoint(latest / "last.pt")
    rs = ckpt.resume
    if rs is None:
        raise MedsegError(
            f"{latest / 'last.pt'}: holds no resume state; remove {cfg.train.output_dir} to train this member again"
        )
    if rs.finished:
        print(f"{latest}: finished earlier, kept (remove {cfg.train.output_dir} to train it again)", file=sys.stderr)
        return TrainResult(
            latest, latest / "best.pt", latest / "last.pt", ckpt.mlflow_run_id, rs.best, list(rs.history)
        )
    print(f"{latest}: stopped at epoch {rs.epoch} step {rs.step_in_epoch}, resuming", file=sys.stderr)
    saved = load_config(latest / "config.yaml")  # its tracking URI redacted: reconnect with this call's credentials
    tracking = saved.tracking.model_copy(update={"uri": live_uri(saved.tracking.uri, cfg.tracking.uri)})
    saved = saved.model_copy(update={"tracking": tracking})
    changed = changed_settings(redact_config(saved), redact_config(cfg))
    if changed:  # a resumed run keeps its batches, schedule and MLflow params: it cannot take new settings
        print(
            f"{latest}: resumes with the settings it started with, not the changed {', '.join(changed)} "
            f"(remove {cfg.train.output_dir} to train this member with the new ones)",
            file=sys.stderr,
        )
    return train(saved, progress, resume=latest)


def changed_settings(saved: ExperimentConfig, now: ExperimentConfig) -> list[str]:
    """The ``section.key`` names set in the config given now to another value than in a run's saved
    config. A key unset now (null: planned at training, e.g. ``preprocess.target_spacing``) is no
    change: the saved config holds what was planned for it."""
    a, b = flatten(saved), flatten(now)
    return sorted(k for k in b if b[k] != "None" and a.get(k) != b[k])


def latest_run(folder: Path) -> Path | None:
    """The newest run folder below ``folder`` with a last.pt (run folders are named by start time)."""
    runs = sorted(p.parent for p in folder.glob("*/last.pt")) if folder.is_dir() else []
    return runs[-1] if runs else None
