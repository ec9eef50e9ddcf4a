"""The resolved plan: every effective setting of a run, computed once, read everywhere.

:func:`medseg.planning.resolve.resolve` is its only producer: config + dataset fingerprint (or a
``plan.yaml``) -> :class:`Plan`. Training (loaders, loss, network, validation), ``predict`` and
``tune`` read it; nothing after it re-derives a window size, a crop, a topology or a loss term.
It is written next to the run (``plan.yaml``), stored in the checkpoint and logged to MLflow.

This module holds the types only (plain data, checked when read back from an untrusted
checkpoint); the rules that fill them live with what they are about: spacing, patch and
normalisation in :mod:`medseg.planning`, the network's topology and input multiples in
:mod:`medseg.nn.topology`, the loss terms in :mod:`medseg.nn.losses.registry`, the augmentation
and its crop in :mod:`medseg.transforms.augment`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, get_args

from medseg.config.schema import ModelConfig, PreprocessConfig
from medseg.errors import MedsegError
from medseg.io.names import check_name

IntTriple = tuple[int, int, int]
NORMALIZATIONS = get_args(get_args(PreprocessConfig.model_fields["normalize"].annotation)[0])
BACKGROUNDS = get_args(PreprocessConfig.model_fields["background"].annotation)
REFIX = "use the best.pt or last.pt written by 'medseg train' (this one was altered or is not medseg's)"
# the foreground percentiles nyul's landmarks are taken at (part of the stored format: checkpoints hold one
# standard landmark per percentile and channel)
LANDMARK_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)
AUGMENTATIONS = (
    "rotate",
    "scale",
    "elastic",
    "noise",
    "blur",
    "brightness",
    "contrast",
    "lowres",
    "gamma",
    "mirror",
    "bias",
    "thick",
    "edge",
    "motion",
    "ghost",
    "faint",
    "renorm",
    "tail",
)


def patches_per_step(batch_size: int, samples_per_volume: int) -> int:
    """Patches in one optimisation step per process: ``batch_size`` volumes, ``samples_per_volume`` each."""
    return batch_size * samples_per_volume


def refuse(source: Path | str, key: str, problem: str) -> NoReturn:
    """Raise the one-line error for a checkpoint value no training run writes."""
    raise MedsegError(f"{source}: {key} {problem}; {REFIX}")


def finite(value: Any) -> bool:
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
    landmarks: tuple[tuple[float, ...], ...] | None = None

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
        if not isinstance(spacing, (list, tuple)) or len(spacing) != 3 or not all(finite(s) and s > 0 for s in spacing):
            refuse(source, "preprocess.spacing", f"{str(spacing)[:80]} is not three finite numbers > 0 (mm)")
        names = {}
        for key, default in (("channels", ()), ("classes", ("lesion",))):
            value = raw.get(key)
            if value is not None and not isinstance(value, (list, tuple)):
                refuse(source, f"preprocess.{key}", "is not a list of names")
            names[key] = default if value is None else tuple(value)
        pre = cls(
            tuple(float(s) for s in spacing),
            str(raw["normalize"]),
            raw.get("in_channels", 1),
            names["channels"],
            tuple(tuple(s) for s in raw["ct_stats"]) if raw.get("ct_stats") else None,
            str(raw.get("background", "zero")),
            names["classes"],
            tuple(tuple(s) for s in raw["landmarks"]) if raw.get("landmarks") else None,
        )
        pre.check(source)
        return pre

    def check(self, source: Path | str) -> None:
        """Refuse values no training run writes (see :meth:`from_dict`).

        Raises:
            MedsegError: naming ``source`` and the key.
        """
        if self.normalize not in NORMALIZATIONS:
            refuse(source, "preprocess.normalize", f"{self.normalize[:40]!r} is not one of {', '.join(NORMALIZATIONS)}")
        if self.background not in BACKGROUNDS:
            refuse(source, "preprocess.background", f"{self.background[:40]!r} is not one of {', '.join(BACKGROUNDS)}")
        n = self.in_channels
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            refuse(source, "preprocess.in_channels", f"{str(n)[:40]} is not a whole number >= 1")
        if self.channels and (len(self.channels) != n or not all(isinstance(c, str) for c in self.channels)):
            refuse(source, "preprocess.channels", f"holds {len(self.channels)} name(s) for in_channels {n}")
        stats = self.ct_stats or ()
        if self.normalize == "ct" and (
            len(stats) != n or not all(len(s) == 4 and all(map(finite, s)) and s[0] <= s[1] and s[3] > 0 for s in stats)
        ):
            refuse(
                source,
                "preprocess.ct_stats",
                f"must be one finite (low <= high, mean, std > 0) per channel for normalize ct ({n})",
            )
        marks = self.landmarks or ()
        if self.normalize == "nyul" and (
            len(marks) != n
            or not all(
                len(m) == len(LANDMARK_PERCENTILES) and all(map(finite, m)) and all(a < b for a, b in zip(m, m[1:]))
                for m in marks
            )
        ):
            refuse(
                source,
                "preprocess.landmarks",
                f"must be {len(LANDMARK_PERCENTILES)} increasing finite numbers per channel for normalize nyul ({n})",
            )
        if not self.classes or len(set(self.classes)) != len(self.classes):
            refuse(source, "preprocess.classes", f"{list(self.classes)[:10]} must be one or more different names")
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
            "landmarks": [list(m) for m in self.landmarks or []],
        }


@dataclass(frozen=True)
class Augmentation:
    """Resolved probability (0 = off) of every training transform and their ranges
    (:func:`medseg.transforms.augment.resolve` fills it from ``augment.*``)."""

    probs: dict[str, float]
    rotate_deg: float = 30.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    jitter: float = 0.0  # light: probability of the +-10 % intensity scale and shift
    intensity_range: float = 0.25  # brightness and contrast factors 1 +- this
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_variance: float = 0.1  # Gaussian noise variance drawn from [0, this]

    @property
    def spatial(self) -> bool:
        """Whether a spatial transform (rotation, scaling, elastic) is on (they need a larger crop)."""
        return any(self.probs[k] > 0 for k in ("rotate", "scale", "elastic"))


@dataclass(frozen=True)
class Plan:
    """The effective settings of one run (see the module docstring for who fills each).

    Shapes are voxels (x, y, z) on the model grid (``preprocess.spacing``, RAS).
    """

    preprocess: Preprocessing
    class_values: tuple[tuple[int, ...] | None, ...]  # label values of each class; None = every non-zero value
    network: ModelConfig  # the config's model with the planned topology filled in (dynunet)
    input_multiples: IntTriple  # every network input size is a multiple of these (product of strides)
    patch_size: IntTriple  # training patch
    crop_size: IntTriple  # what a draw cuts before the spatial augmentation (>= patch_size)
    roi_size: IntTriple  # sliding window of validation and predict
    batch_size: int  # volumes per step
    samples_per_volume: int  # patches drawn from each volume
    augmentation: Augmentation
    blob_weight: float  # weight of the per-lesion loss term; 0 = off
    memory_gb: float  # the training memory budget the planned patch fits
    origin: dict[str, str] = field(default_factory=dict)  # planned key -> "config", "planned" or a plan.yaml

    @property
    def patches_per_step(self) -> int:
        """Patches in one optimisation step (per process)."""
        return patches_per_step(self.batch_size, self.samples_per_volume)

    @property
    def instances(self) -> bool:
        """Whether the loss needs each lesion's id map (the blob term scores lesions one by one)."""
        return self.blob_weight > 0

    def to_dict(self) -> dict[str, Any]:
        """The mapping written to ``plan.yaml``, the checkpoint and MLflow (lists, not tuples)."""
        raw = asdict(self)
        raw["preprocess"] = self.preprocess.to_dict()
        raw["network"] = self.network.model_dump(mode="json")
        raw["class_values"] = [None if v is None else list(v) for v in self.class_values]
        for key in ("input_multiples", "patch_size", "crop_size", "roi_size"):
            raw[key] = list(raw[key])
        raw["augmentation"]["scale_range"] = list(self.augmentation.scale_range)
        raw["augmentation"]["gamma_range"] = list(self.augmentation.gamma_range)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: Path | str = "checkpoint") -> Plan:
        """From the on-disk mapping (checkpoint or run folder).

        Raises:
            MedsegError: naming ``source``: a value predict uses is out of range (see
                :meth:`Preprocessing.from_dict`; sizes not three whole numbers >= 1).
            KeyError, TypeError, ValueError: a missing key or a value of the wrong kind.
        """
        sizes = {
            key: _triple(raw[key], key, source) for key in ("input_multiples", "patch_size", "crop_size", "roi_size")
        }
        aug = raw["augmentation"]
        probs = {k: float(aug["probs"].get(k, 0.0)) for k in AUGMENTATIONS}
        return cls(
            Preprocessing.from_dict(raw["preprocess"], source),
            tuple(None if v is None else tuple(int(x) for x in v) for v in raw["class_values"]),
            ModelConfig.model_validate(raw["network"]),
            batch_size=int(raw["batch_size"]),
            samples_per_volume=int(raw["samples_per_volume"]),
            augmentation=Augmentation(
                probs,
                float(aug["rotate_deg"]),
                tuple(aug["scale_range"]),
                float(aug["jitter"]),
                float(aug.get("intensity_range", 0.25)),  # plans written before the site preset: nnU-Net's ranges
                tuple(aug.get("gamma_range", (0.7, 1.5))),
                float(aug.get("noise_variance", 0.1)),
            ),
            blob_weight=float(raw["blob_weight"]),
            memory_gb=float(raw["memory_gb"]),
            origin={str(k): str(v) for k, v in (raw.get("origin") or {}).items()},
            **sizes,
        )


def _triple(value: Any, key: str, source: Path | str) -> IntTriple:
    """Three whole numbers >= 1 (a size in voxels), else the one-line refusal naming ``key``."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, int) and v >= 1 for v in value):
        refuse(source, f"plan.{key}", f"{str(value)[:60]} is not three whole numbers >= 1 (voxels)")
    return tuple(value)  # type: ignore[return-value]
