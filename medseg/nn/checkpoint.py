"""The checkpoint: one typed :class:`Checkpoint`, written and read here only.

On disk it is a dict of plain tensors and JSON-like values (``{"format": FORMAT, ...}``), so it
loads with ``torch.load(weights_only=True)``: pickled code is refused. It carries everything
``predict`` needs (the resolved config, the resolved plan (:class:`medseg.config.plan.Plan`) with its
preprocessing, the operating point, the range of the training scans' profiles
(:class:`medseg.data.profile.ProfileRange`)) and, in ``last.pt``,
everything to resume (:class:`ResumeState`).

Versions: ``medseg-checkpoint/1`` is the only on-disk format so far. Checkpoints written before
the preprocessing gained ``channels``, ``classes``, ``background`` and ``ct_stats`` still load:
the missing keys take the values those older runs used; checkpoints written before the plan was
stored get theirs from their config (:func:`medseg.planning.resolve.assemble`).

A checkpoint is untrusted input (it may come from anywhere): :meth:`Checkpoint.from_payload`
checks every value that predict uses (spacing, normalisation, channels, class names, which become
output file names, operating point) and refuses values no training run writes, with one line
naming the file. That the weights fit the network of the config is checked where the network is
built (:func:`medseg.inference.model.build_network`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from medseg.config.load import migrate
from medseg.config.plan import Plan, Preprocessing, finite, refuse
from medseg.config.schema import ExperimentConfig
from medseg.data.profile import ProfileRange
from medseg.errors import MedsegError
from medseg.io.write import atomic_write

FORMAT = "medseg-checkpoint/1"
KNOWN_FORMATS = (FORMAT,)
REQUIRED = ("config", "preprocess", "state_dict", "operating_point")


@dataclass(frozen=True)
class OperatingPoint:
    """Probability threshold and minimum lesion volume (mm^3) of the masks; ``target`` says how
    ``medseg tune`` chose them (None = the config's values)."""

    threshold: float
    min_lesion_mm3: float
    target: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: Path | str = "checkpoint") -> OperatingPoint:
        """From the on-disk mapping.

        Raises:
            MedsegError: naming ``source``: threshold outside [0, 1], min_lesion_mm3 negative or
                not finite, target not text.
            KeyError: a missing key.
        """
        threshold, min_mm3, target = raw["threshold"], raw["min_lesion_mm3"], raw.get("target")
        if not finite(threshold) or not 0 <= threshold <= 1:
            refuse(source, "operating_point.threshold", f"{str(threshold)[:40]} is not a probability in [0, 1]")
        if not finite(min_mm3) or min_mm3 < 0:
            refuse(source, "operating_point.min_lesion_mm3", f"{str(min_mm3)[:40]} is not a finite volume >= 0 (mm3)")
        if target is not None and not isinstance(target, str):
            refuse(source, "operating_point.target", "is not text")
        return cls(float(threshold), float(min_mm3), target)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ResumeState:
    """Everything ``--resume`` needs beyond the weights (``last.pt`` only)."""

    epoch: int
    step_in_epoch: int
    epoch_losses: list[float]
    global_step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    scaler: dict[str, Any]
    best: float
    since_best: int
    history: list[dict[str, float]]
    best_epoch: int = 0  # absent from checkpoints of medseg before 0.2
    train_seconds: float = 0.0  # training time so far (train.max_minutes counts it on resume); 0 before 0.3
    finished: bool = False  # the run ended (last epoch, time budget or early stop), not stopped


@dataclass
class Checkpoint:
    """A trained network and everything needed to use it (and, with ``resume``, to continue)."""

    state_dict: dict[str, torch.Tensor]
    config: ExperimentConfig
    preprocess: Preprocessing
    operating_point: OperatingPoint
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    resume: ResumeState | None = None
    plan: Plan | None = None  # the run's resolved plan; None in checkpoints written before plans were stored
    training_scans: ProfileRange | None = None  # the training scans' profile range; None before it was stored
    source: str | None = field(default=None, compare=False)  # the file it was read from (for messages); not saved

    def with_operating_point(self, point: OperatingPoint) -> Checkpoint:
        """A copy with another operating point (``medseg tune``)."""
        return replace(self, operating_point=point)

    def to_payload(self) -> dict[str, Any]:
        """The on-disk mapping (see module docstring)."""
        payload = {
            "format": FORMAT,
            "mlflow_run_id": self.mlflow_run_id,
            "tracking_uri": self.tracking_uri,
            "state_dict": self.state_dict,
            "config": self.config.model_dump(mode="json"),
            "preprocess": self.preprocess.to_dict(),
            "operating_point": self.operating_point.to_dict(),
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
        }
        if self.resume is not None:
            payload["resume"] = asdict(self.resume)
        if self.plan is not None:
            payload["plan"] = self.plan.to_dict()
        if self.training_scans is not None:
            payload["training_scans"] = self.training_scans.to_dict()
        return payload

    @classmethod
    def from_payload(cls, raw: dict[str, Any], source: Path | str) -> Checkpoint:
        """Validate an on-disk mapping.

        Raises:
            MedsegError: naming ``source``: a key is missing, the config inside no longer
            validates, the weights are not a mapping of names to tensors, or a value predict uses
            is out of range (:meth:`Preprocessing.from_dict`, :meth:`OperatingPoint.from_dict`).
        """
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise MedsegError(
                f"{source}: not a complete medseg checkpoint (no {', '.join(missing)}); use best.pt or last.pt of a "
                "training run"
            )
        state = raw["state_dict"]
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            refuse(source, "state_dict", "is not a mapping of tensor names to tensors")
        for key in ("mlflow_run_id", "tracking_uri"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                refuse(source, key, "is not text")
        try:
            config_raw = dict(raw["config"])
            migrate(config_raw)  # keys of earlier versions
            config = ExperimentConfig.model_validate(config_raw)
            point = OperatingPoint.from_dict(raw["operating_point"], source)
            resume = ResumeState(**raw["resume"]) if raw.get("resume") else None
            plan = Plan.from_dict(raw["plan"], source) if raw.get("plan") is not None else None
            scans = raw.get("training_scans")
            return cls(
                state,
                config,
                plan.preprocess if plan is not None else Preprocessing.from_dict(raw["preprocess"], source),
                point,
                int(raw.get("epoch", 0)),
                dict(raw.get("metrics") or {}),
                raw.get("mlflow_run_id"),
                raw.get("tracking_uri"),
                resume,
                plan,
                ProfileRange.from_dict(scans, source) if scans is not None else None,
                str(source),
            )
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise MedsegError(
                f"{source}: checkpoint contents do not validate ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); "
                "use best.pt or last.pt of a training run"
            ) from None


def write_payload(payload: dict[str, Any], path: Path) -> None:
    """Write an on-disk mapping atomically (the ``format`` marker added when absent)."""
    with atomic_write(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def save_checkpoint(ckpt: Checkpoint, path: Path) -> None:
    """Write ``ckpt`` atomically (temporary file in the same folder, then rename)."""
    write_payload(ckpt.to_payload(), path)


def save_checkpoints(items: Sequence[tuple[Checkpoint, Path]]) -> None:
    """Write several checkpoints all or none: every one to its temporary file first, then all
    renamed into place (a failure while writing leaves every original untouched)."""
    with ExitStack() as stack:
        for ckpt, path in items:
            tmp = stack.enter_context(atomic_write(path))
            torch.save(ckpt.to_payload(), tmp)


def read_payload(path: Path | str) -> dict[str, Any]:
    """The on-disk mapping, loaded safely (``weights_only=True``).

    Raises:
        MedsegError: missing file, not a checkpoint, or one containing arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: checkpoint not found; pass the best.pt written by 'medseg train'")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedsegError(
            f"{path}: not a loadable medseg checkpoint ({first[:160]}); use a best.pt/last.pt from 'medseg train'"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") not in KNOWN_FORMATS:
        raise MedsegError(
            f"{path}: not a medseg checkpoint (no '{FORMAT}' marker); use a best.pt/last.pt from 'medseg train'"
        )
    return raw


def load_checkpoint(path: Path | str, source: str | None = None) -> Checkpoint:
    """Load and validate a medseg checkpoint (see :func:`read_payload`, :meth:`Checkpoint.from_payload`);
    ``source``: what messages name instead of ``path`` (e.g. the MLflow model URI it was fetched from)."""
    return Checkpoint.from_payload(read_payload(path), source or path)
