"""A dataset fingerprint like nnU-Net's: the statistics planning starts from.

Headers and voxels of every case: spacing and shape (after cropping to the non-zero region, in RAS
axis order) median/min/max; per channel, intensity statistics of the voxels inside the lesion label
(up to 10,000 sampled per case, as nnU-Net does); lesion count per case and lesion volume
distribution in mm3 (26-connected components of the lesion label); for ``nyul`` normalisation, the
standard histogram landmarks fitted on the cases' bodies (:func:`medseg.transforms.standardize.fit_landmarks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.config.schema import PreprocessConfig
from medseg.data.case import Case
from medseg.data.sources.common import Dataset
from medseg.errors import MedsegError
from medseg.io.geometry import ras_order, ras_spacing
from medseg.io.volumes import read_array
from medseg.lesions import label_lesions, lesion_mask
from medseg.transforms.standardize import fit_landmarks, otsu_foreground, scan_landmarks

SAMPLES_PER_CASE = 10_000


def body_mask(channels: Sequence[np.ndarray], background: str) -> np.ndarray:
    """(X, Y, Z) bool: the body of a case's ``channels`` (each (X, Y, Z)) under ``preprocess.background``
    (``zero``: any non-zero channel; ``min``: above a channel's minimum; ``otsu``: the Otsu mask)."""
    if background == "otsu":
        return otsu_foreground(np.stack(channels))
    if background == "zero":
        return np.any([c != 0 for c in channels], axis=0)
    return np.any([c > c.min() for c in channels], axis=0)


def _case_stats(
    case: Case, lesion_labels: Sequence[int] | None, rng: np.random.Generator, background: str, landmarks: bool
) -> dict[str, Any]:
    channels = []
    affine = None
    for path in case.images:
        arr, affine_i = read_array(path)
        arr = arr.astype(np.float32)
        channels.extend([arr] if arr.ndim == 3 else [arr[..., c] for c in range(arr.shape[3])])
        affine = affine if affine is not None else affine_i
    order = ras_order(affine)
    spacing = np.array(ras_spacing(affine))
    nonzero = np.any([c > c.min() for c in channels], axis=0)  # the body: not the (zero or constant) background
    if landmarks:  # nyul: each channel's foreground percentiles (the body as preprocessing will see it)
        body = body_mask(channels, background)
        out_marks = [scan_landmarks(c[body & (c != 0)]) if (body & (c != 0)).any() else None for c in channels]
    if nonzero.any():
        idx = np.nonzero(nonzero)
        shape = np.array([idx[a].max() - idx[a].min() + 1 for a in range(3)])[order]
    else:
        shape = np.array(channels[0].shape[:3])[order]
    out: dict[str, Any] = {
        "spacing": spacing,
        "shape": shape,
        "samples": [np.zeros(0, np.float32)] * len(channels),
        "lesions_mm3": [],
        "landmarks": out_marks if landmarks else None,
    }
    if case.label is not None:
        label, _ = read_array(case.label)
        mask = lesion_mask(np.squeeze(label), lesion_labels)
        voxels = np.flatnonzero(mask)
        if voxels.size:
            pick = rng.choice(voxels, min(SAMPLES_PER_CASE, voxels.size), replace=False)
            out["samples"] = [c.ravel()[pick] for c in channels]
        labels, n = label_lesions(mask)
        voxel_mm3 = float(np.prod(spacing))
        out["lesions_mm3"] = (np.bincount(labels.ravel())[1:] * voxel_mm3).tolist() if n else []
    return out


def _summary(values: np.ndarray) -> dict[str, list[float]]:
    return {
        k: [round(float(v), 4) for v in f(values, axis=0)]
        for k, f in (("median", np.median), ("min", np.min), ("max", np.max))
    }


def _quantiles(
    values: Sequence[float], names=("min", "p10", "median", "p90", "max"), qs=(0, 10, 50, 90, 100)
) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {n: round(float(np.percentile(values, q)), 2) for n, q in zip(names, qs)}


def fingerprint(
    ds: Dataset,
    lesion_labels: Sequence[int] | None = None,
    seed: int = 0,
    preprocess: PreprocessConfig | None = None,
) -> dict[str, Any]:
    """Statistics of every case of ``ds`` (see module docstring); for a ``preprocess`` asking for
    ``nyul``, also each channel's standard landmarks fitted on them (the body found as its
    ``background`` says)."""
    if not ds.cases:
        raise MedsegError(f"{ds.root}: no cases to plan; run 'medseg check' on it")
    background = preprocess.background if preprocess is not None else "zero"
    landmarks = preprocess is not None and preprocess.normalize == "nyul"
    rng = np.random.default_rng(seed)
    stats = [_case_stats(c, lesion_labels, rng, background, landmarks) for c in ds.cases]
    names = list(ds.channels) or [f"channel{i}" for i in range(len(stats[0]["samples"]))]
    intensity = {}
    for c, name in enumerate(names):
        pooled = np.concatenate([s["samples"][c] for s in stats if c < len(s["samples"])])
        if pooled.size:
            intensity[name] = {
                "mean": round(float(pooled.mean()), 4),
                "std": round(float(pooled.std()), 4),
                "p00_5": round(float(np.percentile(pooled, 0.5)), 4),
                "median": round(float(np.median(pooled)), 4),
                "p99_5": round(float(np.percentile(pooled, 99.5)), 4),
                "min": round(float(pooled.min()), 4),
                "max": round(float(pooled.max()), 4),
            }
    fitted = None
    if landmarks:
        per_channel = [[s["landmarks"][c] for s in stats if s["landmarks"][c] is not None] for c in range(len(names))]
        fitted = [fit_landmarks(marks) if marks else None for marks in per_channel]
    counts = [len(s["lesions_mm3"]) for s in stats]
    volumes = [v for s in stats for v in s["lesions_mm3"]]
    return {
        "cases": len(stats),
        "channels": names,
        "spacing_mm": _summary(np.array([s["spacing"] for s in stats])),
        "spacing_p10_mm": [round(float(v), 4) for v in np.percentile([s["spacing"] for s in stats], 10, axis=0)],
        "shape_cropped": _summary(np.array([s["shape"] for s in stats])),
        "median_shape_mm": [round(float(v), 1) for v in np.median([s["shape"] * s["spacing"] for s in stats], axis=0)],
        "intensity_in_lesions": intensity,
        **({"landmarks": fitted} if landmarks else {}),
        "lesions": {
            "total": len(volumes),
            "per_case": _quantiles(counts, ("min", "median", "max"), (0, 50, 100)),
            "cases_without": int(sum(1 for n in counts if n == 0)),
            "volume_mm3": _quantiles(volumes),
        },
    }
