"""The review site of a training run: the worst validation cases of the best epoch (the cases of
``report/overlays``), in ``report/review/`` and, through the report, in the MLflow run.

At each new best epoch the worst cases' image, prediction and reference are kept as NIfTI files
in ``<run>/val_worst/`` (a few small files, replacing the previous best's: no re-prediction is
ever needed, and a resumed run still has them); at the end of training the site is written once
from them. The volumes are on the model's grid (target spacing, RAS axes, normalised intensities),
as the ``val_*`` metrics: world coordinates on the pages are that grid's, ``voxel * spacing`` mm
(:data:`SPACE`), not the scanner's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError
from medseg.evaluation.tables import EvalOptions
from medseg.io.volumes import save_nifti
from medseg.review.cases import ReviewCase
from medseg.review.logged import site_note
from medseg.review.site import SITE, SiteOptions, SiteResult, write_site
from medseg.training.validation import Validation

WORST = "val_worst"  # in the run folder: the best epoch's worst validation cases (not logged)
KINDS = ("image", "pred", "ref", "prob")
SPACE = "model grid: voxel x spacing from the corner of the preprocessed volume, axes RAS"


def keep_worst_volumes(val: Validation, folder: Path) -> None:
    """Write ``val.worst`` (image (X, Y, Z) float32, prediction and reference as uint8, the
    probability as float32) into ``folder/{image,pred,ref,prob}/<case>.nii.gz``, affine
    ``diag(val.spacing)``, replacing what an earlier best epoch left there."""
    shutil.rmtree(folder, ignore_errors=True)
    affine = np.diag([*val.spacing, 1.0])
    for case_id, image, pred, ref, prob in val.worst:
        arrays = [
            np.asarray(a, t) for a, t in zip((image, pred, ref, prob), (np.float32, np.uint8, np.uint8, np.float32))
        ]
        for kind, data in zip(KINDS, arrays):
            save_nifti(data, affine, folder / kind / f"{case_id}.nii.gz")


def worst_cases(folder: Path) -> list[ReviewCase]:
    """The cases :func:`keep_worst_volumes` left in ``folder`` ([] when there are none)."""
    masks = sorted((folder / "pred").glob("*.nii.gz")) if (folder / "pred").is_dir() else []
    return [
        ReviewCase(p.name[: -len(".nii.gz")], p, *[_kept(folder / kind / p.name) for kind in ("image", "ref", "prob")])
        for p in masks
    ]


def _kept(path: Path) -> Path | None:
    """``path`` when it exists (a run folder of an older medseg kept no probability maps)."""
    return path if path.exists() else None


def write_review_site(run_dir: Path, cfg: ExperimentConfig, best_epoch: int) -> SiteResult | None:
    """Write ``<run_dir>/report/review/`` from ``<run_dir>/val_worst/`` (matching rule: the
    config's ``eval`` section, as validation). None, with a warning on stderr, when there is
    nothing to show or the site cannot be written: training's results never depend on it."""
    cases = worst_cases(run_dir / WORST)
    if not cases:
        return None
    title = f"{run_dir.name}: worst validation cases at epoch {best_epoch}"
    try:
        site = write_site(cases, run_dir / "report", SiteOptions(EvalOptions(cfg.eval), title=title, space=SPACE))
    except (MedsegError, OSError) as err:
        print(f"warning: the review site of the validation was not written: {err}", file=sys.stderr)
        return None
    for line in site.errors:
        print(f"warning: review site: {line}", file=sys.stderr)
    return site


def review_note(site: SiteResult | None, run_dir: Path, run_id: str | None, uri: str | None) -> str:
    """The run description's section on the site ("" without a site or an MLflow run)."""
    if site is None or run_id is None:
        return ""
    what = f"the {site.scans} validation cases with the lowest Dice at the best epoch, on the model's grid"
    return site_note(run_id, f"report/{SITE}", (run_dir / "report" / SITE).absolute(), uri, what)
