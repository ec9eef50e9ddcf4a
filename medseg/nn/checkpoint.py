"""The checkpoint: one typed :class:`Checkpoint`, written and read here only.

On disk it is a dict of plain tensors and JSON-like values (``{"format": FORMAT, ...}``), so it
loads with ``torch.load(weights_only=True)``: pickled code is refused. It carries everything
``predict`` needs (the resolved config, the preprocessing, the operating point) and, in ``last.pt``,
everything to resume (:class:`ResumeState`).

Versions: ``medseg-checkpoint/1`` is the only on-disk format so far. Checkpoints written before
the preprocessing gained ``channels``, ``classes``, ``background`` and ``ct_stats`` still load:
the missing keys take the values those older runs used.

A checkpoint is untrusted input (it may come from anywhere): :meth:`Checkpoint.from_payload`
checks every value that predict uses (spacing, normalisation, channels, class names, which become
output file names, operating point) and refuses values no training run writes, with one line
naming the file. That the weights fit the network of the config is checked where the network is
built (:func:`medseg.inference.model.build_network`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, get_args

import torch

from medseg.config.schema import ExperimentConfig, PreprocessConfig
from medseg.errors import MedsegError
from medseg.io.names import check_name
from medseg.io.write import atomic_write

FORMAT = "medseg-checkpoint/1"
KNOWN_FORMATS = (FORMAT,)
REQUIRED = ("config", "preprocess", "state_dict", "operating_point")
NORMALIZATIONS = get_args(PreprocessConfig.model_fields["normalize"].annotation)
BACKGROUNDS = get_args(PreprocessConfig.model_fields["background"].annotation)
REFIX = "use the best.pt or last.pt written by 'medseg train' (this one was altered or is not medseg's)"


def _refuse(source: Path | str, key: str, problem: str) -> NoReturn:
    """Raise the one-line error for a checkpoint value no training run writes."""
    raise MedsegError(f"{source}: {key} {problem}; {REFIX}")


def _finite(value: Any) -> bool:
    """Whether ``value`` is a real number (int or float, not bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Preprocessing:
    """What turns a scan into network input (and a prediction back into masks): target spacing
    (mm, RAS), normalisation, input channels, lesion classes (one output each)."""

    spacing: tuple[float, float, float]
    normalize: str
    in_channels: int = 1
    channels: tuple[str, ...] = ()
    ct_stats: tuple[tuple[float, ...], ...] | None = None
    background: str = "zero"
    classes: tuple[str, ...] = ("lesion",)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: Path | str = "checkpoint") -> Preprocessing:
        """From the on-disk mapping; keys older checkpoints lack take their defaults.

        Raises:
            MedsegError: naming ``source``: spacing not three finite numbers > 0, an unknown
                normalisation or background, ``in_channels`` < 1 or unlike the number of channel
                names, ``ct`` without one finite (low, high, mean, std > 0) per channel, classes
                empty, repeated or unsafe as file names (:func:`medseg.io.names.check_name`).
            KeyError, TypeError, ValueError: a missing key or a value of the wrong kind.
        """
        spacing = raw["spacing"]
        if (
            not isinstance(spacing, (list, tuple))
            or len(spacing) != 3
            or not all(_finite(s) and s > 0 for s in spacing)
        ):
            _refuse(source, "preprocess.spacing", f"{str(spacing)[:80]} is not three finite numbers > 0 (mm)")
        names = {}
        for key, default in (("channels", ()), ("classes", ("lesion",))):
            value = raw.get(key)
            if value is not None and not isinstance(value, (list, tuple)):
                _refuse(source, f"preprocess.{key}", "is not a list of names")
            names[key] = default if value is None else tuple(value)
        pre = cls(
            tuple(float(s) for s in spacing),
            str(raw["normalize"]),
            raw.get("in_channels", 1),
            names["channels"],
            tuple(tuple(s) for s in raw["ct_stats"]) if raw.get("ct_stats") else None,
            str(raw.get("background", "zero")),
            names["classes"],
        )
        pre.check(source)
        return pre

    def check(self, source: Path | str) -> None:
        """Refuse values no training run writes (see :meth:`from_dict`).

        Raises:
            MedsegError: naming ``source`` and the key.
        """
        if self.normalize not in NORMALIZATIONS:
            _refuse(
                source, "preprocess.normalize", f"{self.normalize[:40]!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        if self.background not in BACKGROUNDS:
            _refuse(source, "preprocess.background", f"{self.background[:40]!r} is not one of {', '.join(BACKGROUNDS)}")
        n = self.in_channels
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            _refuse(source, "preprocess.in_channels", f"{str(n)[:40]} is not a whole number >= 1")
        if self.channels and (len(self.channels) != n or not all(isinstance(c, str) for c in self.channels)):
            _refuse(source, "preprocess.channels", f"holds {len(self.channels)} name(s) for in_channels {n}")
        stats = self.ct_stats or ()
        if self.normalize == "ct" and (
            len(stats) != n
            or not all(len(s) == 4 and all(map(_finite, s)) and s[0] <= s[1] and s[3] > 0 for s in stats)
        ):
            _refuse(
                source,
                "preprocess.ct_stats",
                f"must be one finite (low <= high, mean, std > 0) per channel for normalize ct ({n})",
            )
        if not self.classes or len(set(self.classes)) != len(self.classes):
            _refuse(source, "preprocess.classes", f"{list(self.classes)[:10]} must be one or more different names")
        for name in self.classes:
            check_name(name, "preprocess.classes name", str(source))

    def to_dict(self) -> dict[str, Any]:
        """The on-disk mapping (lists, not tuples)."""
        return {
            "spacing": list(self.spacing),
            "normalize": self.normalize,
            "in_channels": self.in_channels,
            "channels": list(self.channels),
            "ct_stats": [list(s) for s in self.ct_stats or []],
            "background": self.background,
            "classes": list(self.classes),
        }


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
        if not _finite(threshold) or not 0 <= threshold <= 1:
            _refuse(source, "operating_point.threshold", f"{str(threshold)[:40]} is not a probability in [0, 1]")
        if not _finite(min_mm3) or min_mm3 < 0:
            _refuse(source, "operating_point.min_lesion_mm3", f"{str(min_mm3)[:40]} is not a finite volume >= 0 (mm3)")
        if target is not None and not isinstance(target, str):
            _refuse(source, "operating_point.target", "is not text")
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
            _refuse(source, "state_dict", "is not a mapping of tensor names to tensors")
        for key in ("mlflow_run_id", "tracking_uri"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                _refuse(source, key, "is not text")
        try:
            config = ExperimentConfig.model_validate(raw["config"])
            point = OperatingPoint.from_dict(raw["operating_point"], source)
            resume = ResumeState(**raw["resume"]) if raw.get("resume") else None
            return cls(
                state,
                config,
                Preprocessing.from_dict(raw["preprocess"], source),
                point,
                int(raw.get("epoch", 0)),
                dict(raw.get("metrics") or {}),
                raw.get("mlflow_run_id"),
                raw.get("tracking_uri"),
                resume,
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
