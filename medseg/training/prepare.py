"""Before training: the dataset checked and planned, every case loaded once."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.data import Dataset

from medseg.config.plan import Plan, Preprocessing
from medseg.config.schema import ExperimentConfig, all_lesion_values
from medseg.data.case import Case
from medseg.data.check import check_dataset, rules_for
from medseg.data.sources.discover import from_config, rejected_scans
from medseg.errors import MedsegError
from medseg.io.geometry import ras_order, ras_spacing, read_geometry
from medseg.planning.resolve import resolve
from medseg.training.loaders import make_datasets


@dataclass(frozen=True)
class Prepared:
    """A checked dataset, the config completed by the plan, and the resolved plan."""

    cfg: ExperimentConfig
    cases: list[Case]
    plan: Plan
    proposal: dict[str, Any] | None  # the plan.yaml mapping the planned keys came from (None: all set by the config)


def prepare(cfg: ExperimentConfig, source: Preprocessing | None = None) -> Prepared:
    """List and check every case (all problems reported at once, as ``medseg check`` does), then
    resolve the plan (:func:`medseg.planning.resolve.resolve`: keys the config leaves null from
    ``data.plan`` or planned now; ``source``: the preprocessing of the ``train.init_from`` model).

    Raises:
        MedsegError: listing every problem of the dataset, or a config that does not fit it.
    """
    ds = from_config(cfg.data)
    rejected = sorted(rejected_scans(cfg.data))
    if rejected:
        shown = ", ".join(rejected[:10]) + (f" and {len(rejected) - 10} more" if len(rejected) > 10 else "")
        print(f"{cfg.data.review_marks}: {len(rejected)} scan(s) the reviewer rejected left out: {shown}")
    problems = check_dataset(ds, all_lesion_values(cfg.data))
    if problems:
        raise MedsegError(
            "\n".join(
                problems
                + [
                    f"{len(problems)} problem(s) in the dataset; fix them (see 'medseg check {cfg.data.dataset}') and "
                    "train again"
                ]
            )
        )
    channels = ds.channels or tuple(f"channel{i}" for i in range(rules_for(ds).n_channels))
    resolved = resolve(cfg, ds, channels, source)
    _warn_if_patch_exceeds(ds.cases, resolved.plan.patch_size, resolved.plan.preprocess.spacing)
    return Prepared(resolved.cfg, ds.cases, resolved.plan, resolved.proposal)


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
    cfg: ExperimentConfig, train_cases: Sequence[Case], val_cases: Sequence[Case], plan: Plan
) -> tuple[Dataset, Dataset]:
    """Preprocess and cache every case before anything is written; a file that cannot be read
    becomes a MedsegError naming it."""
    try:
        return make_datasets(cfg, train_cases, val_cases, plan)
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
