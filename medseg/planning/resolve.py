"""The one producer of :class:`medseg.config.plan.Plan`: config + dataset -> every effective setting.

Order of precedence for the planned keys (``preprocess.target_spacing``, ``preprocess.normalize``,
``preprocess.ct_stats``, ``preprocess.landmarks``, ``sampling.patch_size``): the config, then
``data.plan`` (a ``plan.yaml``), then planning the dataset now (:mod:`medseg.planning.proposal`).
The plan's ``origin`` records which one each came from (``init_from``: kept from a fine-tuned
model's source, :mod:`medseg.planning.inherit`). Then, once: the network's topology and
input multiples, the sliding window, the augmentation and the crop it needs, the batch composition
and the loss terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medseg.config.plan import Plan, Preprocessing, patches_per_step
from medseg.config.schema import ExperimentConfig, all_lesion_values, lesion_classes
from medseg.data.sources.common import Dataset
from medseg.errors import MedsegError
from medseg.nn.losses.registry import blob_weight
from medseg.nn.topology import input_multiples, with_topology
from medseg.planning.fingerprint import fingerprint
from medseg.planning.inherit import keep_preprocessing
from medseg.planning.proposal import PLANNED, apply_plan, make_plan, needs_plan, read_plan
from medseg.transforms.augment import crop_size
from medseg.transforms.augment import resolve as resolve_augmentation


@dataclass(frozen=True)
class Resolved:
    """The config with its planned keys filled (what the run's ``config.yaml`` records), the plan,
    and the ``plan.yaml`` mapping the planned keys came from (None: the config set them all)."""

    cfg: ExperimentConfig
    plan: Plan
    proposal: dict[str, Any] | None


def resolve(
    cfg: ExperimentConfig, ds: Dataset, channels: tuple[str, ...], source: Preprocessing | None = None
) -> Resolved:
    """The plan of ``cfg`` on ``ds`` (whose input channels are ``channels``); ``source``: the
    preprocessing of the ``train.init_from`` model, whose values replace the config's preprocess
    keys first when ``train.init_keep_preprocessing`` is set (origin ``init_from``).

    Raises:
        MedsegError: an unreadable ``data.plan``, a CT plan without lesion voxels, or a patch or
            window that the network cannot take (not multiples of its strides).
    """
    kept: list[str] = []
    if source is not None and cfg.train.init_keep_preprocessing:
        cfg, kept = keep_preprocessing(cfg, source, channels)
    origin = dict.fromkeys(_planned_keys(cfg, set_only=True), "config") | dict.fromkeys(kept, "init_from")
    proposal = None
    if cfg.data.plan is not None:
        proposal = read_plan(cfg.data.plan)
        cfg = _apply(cfg, proposal, origin, str(cfg.data.plan))
    if needs_plan(cfg):
        batch = patches_per_step(cfg.train.batch_size, cfg.sampling.samples_per_volume)
        fp = fingerprint(ds, all_lesion_values(cfg.data), preprocess=cfg.preprocess)
        planned = make_plan(fp, cfg.model, batch, cfg.sampling.memory_gb)
        cfg = _apply(cfg, planned, origin, "planned")
        proposal = proposal or planned
    cfg = _with_topology(cfg)
    return Resolved(cfg, assemble(cfg, preprocessing(cfg, channels), origin), proposal)


def plan_of_config(cfg: ExperimentConfig, channels: tuple[str, ...] = ("channel0",)) -> Plan:
    """The plan of a config that sets every planned key itself, without reading a dataset (what
    tests, benchmarks and notebooks use to build loaders or validate a network directly).

    Raises:
        MedsegError: the config leaves a planned key null (use :func:`resolve` with the dataset).
    """
    if needs_plan(cfg):
        missing = ", ".join(k for k in _planned_keys(cfg, set_only=False) if k not in _planned_keys(cfg, set_only=True))
        raise MedsegError(f"{missing}: null, to be planned from the dataset; set them, or train (it plans them)")
    cfg = _with_topology(cfg)
    return assemble(cfg, preprocessing(cfg, channels), dict.fromkeys(_planned_keys(cfg, set_only=True), "config"))


def preprocessing(cfg: ExperimentConfig, channels: tuple[str, ...]) -> Preprocessing:
    """The preprocessing of a config whose planned keys are filled, for input ``channels``."""
    p = cfg.preprocess
    classes = tuple(name for name, _ in lesion_classes(cfg.data))
    return Preprocessing(
        tuple(p.target_spacing),
        p.normalize,
        len(channels),
        tuple(channels),
        p.ct_stats,
        p.background,
        classes,
        p.landmarks if p.normalize == "nyul" else None,
    )


def _with_topology(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with a DynUNet's topology planned for its patch and spacing (:func:`with_topology`)."""
    return cfg.model_copy(
        update={"model": with_topology(cfg.model, cfg.sampling.patch_size, cfg.preprocess.target_spacing)}
    )


def assemble(cfg: ExperimentConfig, pre: Preprocessing, origin: dict[str, str] | None = None) -> Plan:
    """The plan of a config whose planned keys are filled, with preprocessing ``pre``: window,
    topology multiples, augmentation and crop, batch, loss terms. Also what a checkpoint written
    before plans were stored gets (:func:`medseg.inference.model.from_checkpoint`).

    Raises:
        MedsegError: the patch or window is not a multiple of the network's strides.
    """
    patch = tuple(cfg.sampling.patch_size)
    roi = tuple(cfg.inference.roi_size or patch)
    multiples = input_multiples(cfg.model)
    for name, size in (("sampling.patch_size", patch), ("inference.roi_size", roi)):
        if any(s % m for s, m in zip(size, multiples)):
            raise MedsegError(
                f"{name}: {list(size)} must be multiples of {list(multiples)} (the product of the network's strides "
                "per axis)"
            )
    aug = resolve_augmentation(cfg.augment)
    return Plan(
        pre,
        tuple(values for _, values in lesion_classes(cfg.data)),
        cfg.model,
        multiples,
        patch,
        crop_size(patch, aug),
        roi,
        cfg.train.batch_size,
        cfg.sampling.samples_per_volume,
        aug,
        blob_weight(cfg.loss),
        cfg.sampling.memory_gb,
        dict(origin or {}),
    )


def _planned_keys(cfg: ExperimentConfig, set_only: bool) -> list[str]:
    """``section.key`` of the planned keys the config sets (``set_only``) or all of them."""
    return [
        f"{section}.{key}"
        for section, keys in PLANNED.items()
        for key in keys
        if not set_only or getattr(getattr(cfg, section), key) is not None
    ]


def _apply(cfg: ExperimentConfig, proposal: dict[str, Any], origin: dict[str, str], where: str) -> ExperimentConfig:
    """``cfg`` with its null planned keys taken from ``proposal``; ``origin`` notes ``where`` for each."""
    filled = apply_plan(cfg, proposal)
    for key in _planned_keys(filled, set_only=True):
        origin.setdefault(key, where)
    return filled
