"""Before training: the dataset checked and planned, every case loaded once."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.data import Dataset

from medseg.config.schema import ExperimentConfig, all_lesion_values, input_multiples
from medseg.data.case import Case
from medseg.data.check import check_dataset, rules_for
from medseg.data.plan import apply_plan, fingerprint, make_plan, needs_plan, plan_topology, read_plan
from medseg.data.sources.discover import from_config
from medseg.data.split import median_spacing
from medseg.errors import MedsegError
from medseg.io.geometry import ras_order, ras_spacing, read_geometry
from medseg.training.loaders import make_datasets


@dataclass
class Prepared:
    """A checked dataset and the config completed by the plan."""

    cfg: ExperimentConfig
    cases: list
    spacing: tuple[float, float, float]
    channels: tuple[str, ...]
    plan: dict | None


def prepare(cfg: ExperimentConfig) -> Prepared:
    """List and check every case (all problems reported at once, as ``medseg check`` does), then
    fill the keys the config leaves unset from the plan (``data.plan`` or planned now).

    Raises:
        MedsegError: listing every problem of the dataset, or a config that does not fit it.
    """
    ds = from_config(cfg.data)
    problems = check_dataset(ds, all_lesion_values(cfg.data))
    if problems:
        raise MedsegError(
            "\n".join(
                problems
                + [
                    f"{len(problems)} problem(s) in the dataset; fix them (see 'medseg check {cfg.data.dataset}') "
                    "and train again"
                ]
            )
        )
    plan = None
    if cfg.data.plan is not None:
        plan = read_plan(cfg.data.plan)
    elif needs_plan(cfg):
        batch = cfg.train.batch_size * cfg.sampling.samples_per_volume
        plan = make_plan(fingerprint(ds, all_lesion_values(cfg.data)), cfg.model, batch)
    if plan is not None:
        cfg = apply_plan(cfg, plan)
    if cfg.preprocess.target_spacing is None:  # plan-less config with target_spacing: null
        spacing = median_spacing(ds.cases)
    else:
        spacing = cfg.preprocess.target_spacing
    cfg = with_topology(cfg, spacing)
    multiples = input_multiples(cfg.model)
    roi = cfg.inference.roi_size or cfg.sampling.patch_size
    for name, size in (("sampling.patch_size", cfg.sampling.patch_size), ("inference.roi_size", roi)):
        if any(s % m for s, m in zip(size, multiples)):
            raise MedsegError(
                f"{name}: {list(size)} must be multiples of {list(multiples)} (the product of the network's strides "
                "per axis)"
            )
    _warn_if_patch_exceeds(ds.cases, cfg.sampling.patch_size, spacing)
    channels = ds.channels or tuple(f"channel{i}" for i in range(rules_for(ds).n_channels))
    return Prepared(cfg, ds.cases, tuple(float(s) for s in spacing), channels, plan)


def with_topology(cfg: ExperimentConfig, spacing: Sequence[float]) -> ExperimentConfig:
    """dynunet without kernel_sizes/level_strides: plan them for the patch and spacing (stored in
    the run's config.yaml and checkpoint, so predict rebuilds the same network)."""
    m = cfg.model
    if m.name != "dynunet" or (m.kernel_sizes is not None and m.level_strides is not None):
        return cfg
    kernels, strides = plan_topology(cfg.sampling.patch_size, spacing)
    model = type(m).model_validate(
        {**m.model_dump(), "kernel_sizes": m.kernel_sizes or kernels, "level_strides": m.level_strides or strides}
    )
    return cfg.model_copy(update={"model": model})


def _warn_if_patch_exceeds(cases, patch, spacing) -> None:
    """A patch larger than every case (at the target spacing) is mostly padding: say so."""
    largest = np.zeros(3)
    for case in cases:  # headers only
        shape, affine = read_geometry(case.image)
        largest = np.maximum(
            largest, np.array(shape[:3])[ras_order(affine)] * np.array(ras_spacing(affine)) / np.array(spacing)
        )
    if any(p > s for p, s in zip(patch, largest)):
        fit = [int(s) for s in largest]
        print(
            f"warning: sampling.patch_size {list(patch)} is larger than every image at the target spacing (at most "
            f"{fit}); "
            "patches are mostly padding: use a smaller patch_size (or let 'medseg plan' choose it)",
            file=sys.stderr,
        )


def load_datasets(
    cfg: ExperimentConfig, train_cases: Sequence[Case], val_cases: Sequence[Case], spacing: Sequence[float]
) -> tuple[Dataset, Dataset]:
    """Preprocess and cache every case before anything is written; a file that cannot be read
    becomes a MedsegError naming it."""
    try:
        return make_datasets(cfg, train_cases, val_cases, spacing)
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError chains
        text = "".join(str(e) for e in _chain(exc))
        culprit = next((c for c in [*train_cases, *val_cases] for f in (c.image, c.label) if str(f) in text), None)
        where = f"{culprit.image} / {culprit.label}" if isinstance(culprit, Case) else "a case of the dataset"
        last = _chain(exc)[-1]
        raise MedsegError(
            f"{where}: cannot be loaded ({type(last).__name__}: {str(last).strip()[:160]}); re-export or remove the "
            "case"
        ) from None


def _chain(exc: BaseException) -> list[BaseException]:
    out = [exc]
    while out[-1].__cause__ is not None or out[-1].__context__ is not None:
        out.append(out[-1].__cause__ or out[-1].__context__)
    return out
