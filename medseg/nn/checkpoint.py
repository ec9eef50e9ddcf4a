"""The checkpoint: one typed :class:`Checkpoint`, written and read here only.

On disk it is a dict of plain tensors and JSON-like values (``{"format": FORMAT, ...}``), so it
loads with ``torch.load(weights_only=True)``: pickled code is refused. It carries everything
``predict`` needs (the resolved config, the preprocessing, the operating point) and, in ``last.pt``,
everything to resume (:class:`ResumeState`).

Versions: ``medseg-checkpoint/1`` is the only on-disk format so far. Checkpoints written before
the preprocessing gained ``channels``, ``classes``, ``background`` and ``ct_stats`` still load:
the missing keys take the values those older runs used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError
from medseg.io.write import atomic_write

FORMAT = "medseg-checkpoint/1"
KNOWN_FORMATS = (FORMAT,)
REQUIRED = ("config", "preprocess", "state_dict", "operating_point")


@dataclass(frozen=True)
class Preprocessing:
    """What turns a scan into network input (and a prediction back into masks): target spacing
    (mm, RAS), normalisation, input channels, lesion classes (one output each)."""

    spacing: tuple[float, float, float]
    normalize: str
    in_channels: int = 1
    channels: tuple[str, ...] = ()
    ct_stats: Optional[tuple[tuple[float, ...], ...]] = None
    background: str = "zero"
    classes: tuple[str, ...] = ("lesion",)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Preprocessing":
        """From the on-disk mapping; keys older checkpoints lack take their defaults."""
        return cls(tuple(float(s) for s in raw["spacing"]), str(raw["normalize"]), int(raw.get("in_channels", 1)),
                   tuple(raw.get("channels") or ()), tuple(tuple(s) for s in raw["ct_stats"]) if raw.get("ct_stats") else None,
                   str(raw.get("background", "zero")), tuple(raw.get("classes") or ("lesion",)))

    def to_dict(self) -> dict[str, Any]:
        """The on-disk mapping (lists, not tuples)."""
        return {"spacing": list(self.spacing), "normalize": self.normalize, "in_channels": self.in_channels,
                "channels": list(self.channels), "ct_stats": [list(s) for s in self.ct_stats or []],
                "background": self.background, "classes": list(self.classes)}


@dataclass(frozen=True)
class OperatingPoint:
    """Probability threshold and minimum lesion volume (mm^3) of the masks; ``target`` says how
    ``medseg tune`` chose them (None = the config's values)."""

    threshold: float
    min_lesion_mm3: float
    target: Optional[str] = None

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
    mlflow_run_id: Optional[str] = None
    tracking_uri: Optional[str] = None
    resume: Optional[ResumeState] = None

    def with_operating_point(self, point: OperatingPoint) -> "Checkpoint":
        """A copy with another operating point (``medseg tune``)."""
        return replace(self, operating_point=point)

    def to_payload(self) -> dict[str, Any]:
        """The on-disk mapping (see module docstring)."""
        payload = {"format": FORMAT, "mlflow_run_id": self.mlflow_run_id, "tracking_uri": self.tracking_uri,
                   "state_dict": self.state_dict, "config": self.config.model_dump(mode="json"),
                   "preprocess": self.preprocess.to_dict(), "operating_point": self.operating_point.to_dict(),
                   "epoch": self.epoch, "metrics": dict(self.metrics)}
        if self.resume is not None:
            payload["resume"] = asdict(self.resume)
        return payload

    @classmethod
    def from_payload(cls, raw: dict[str, Any], source: Path | str) -> "Checkpoint":
        """Validate an on-disk mapping.

        Raises:
            MedsegError: a key is missing or the config inside no longer validates.
        """
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise MedsegError(f"{source}: not a complete medseg checkpoint (no {', '.join(missing)}); use best.pt or last.pt of a training run")
        try:
            config = ExperimentConfig.model_validate(raw["config"])
            op = raw["operating_point"]
            point = OperatingPoint(float(op["threshold"]), float(op["min_lesion_mm3"]), op.get("target"))
            resume = ResumeState(**raw["resume"]) if raw.get("resume") else None
            return cls(raw["state_dict"], config, Preprocessing.from_dict(raw["preprocess"]), point, int(raw.get("epoch", 0)),
                       dict(raw.get("metrics") or {}), raw.get("mlflow_run_id"), raw.get("tracking_uri"), resume)
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise MedsegError(f"{source}: checkpoint contents do not validate ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                              "use best.pt or last.pt of a training run") from None


def write_payload(payload: dict[str, Any], path: Path) -> None:
    """Write an on-disk mapping atomically (the ``format`` marker added when absent)."""
    with atomic_write(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def save_checkpoint(ckpt: Checkpoint, path: Path) -> None:
    """Write ``ckpt`` atomically (temporary file in the same folder, then rename)."""
    write_payload(ckpt.to_payload(), path)


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
        raise MedsegError(f"{path}: not a loadable medseg checkpoint ({first[:160]}); use a best.pt/last.pt from 'medseg train'") from None
    if not isinstance(raw, dict) or raw.get("format") not in KNOWN_FORMATS:
        raise MedsegError(f"{path}: not a medseg checkpoint (no '{FORMAT}' marker); use a best.pt/last.pt from 'medseg train'")
    return raw


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Load and validate a medseg checkpoint (see :func:`read_payload`)."""
    return Checkpoint.from_payload(read_payload(path), path)
