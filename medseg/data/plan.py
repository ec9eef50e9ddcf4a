"""``medseg plan``: a dataset fingerprint like nnU-Net's and the preprocessing/patch plan it implies.

Fingerprint (headers and voxels of every case): spacing and shape (after cropping to the non-zero
region, in RAS axis order) median/min/max; per channel, intensity statistics of the voxels inside
the lesion label (up to 10,000 sampled per case, as nnU-Net does); lesion count per case and lesion
volume distribution in mm3 (26-connected components of the lesion label).

Plan:
- target spacing: the median spacing; when the median is anisotropic (largest / smallest > 3) the
  coarse axis takes the 10th percentile instead (nnU-Net's rule), so thin-slice cases are not
  blurred to the thickest slices;
- patch size: the median shape at the target spacing, a multiple of the network's down-sampling,
  shrunk along the axis that is largest relative to the median shape until the estimated training
  memory (UNet activations for one batch, forward + backward) fits ``memory_gb``;
- normalisation: CT channels (named "CT") clip to the foreground 0.5-99.5 percentiles and z-score
  with the foreground mean/std; anything else is MRI-like: z-score over non-zero voxels.

The plan's keys mirror the config's (``preprocess.*``, ``sampling.*``); :func:`apply_plan` fills
in the keys a config leaves unset, so any part of the plan can be overridden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.config.schema import ExperimentConfig, ModelConfig, min_input_multiple
from medseg.data.case import Case
from medseg.data.sources.common import Dataset
from medseg.errors import MedsegError
from medseg.io.geometry import ras_order, ras_spacing
from medseg.io.outputs import OutputPlan
from medseg.io.volumes import read_array
from medseg.io.write import write_text
from medseg.lesions import label_lesions, lesion_mask

SAMPLES_PER_CASE = 10_000


ANISOTROPY = 3.0
PLAN_FILE = "plan.yaml"  # the file `medseg plan --out DIR` writes into DIR


PLANNED = {"preprocess": ("target_spacing", "normalize", "ct_stats"), "sampling": ("patch_size",)}


def _case_stats(case: Case, lesion_labels: Sequence[int] | None, rng: np.random.Generator) -> dict[str, Any]:
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


def fingerprint(ds: Dataset, lesion_labels: Sequence[int] | None = None, seed: int = 0) -> dict[str, Any]:
    """Statistics of every case of ``ds`` (see module docstring)."""
    if not ds.cases:
        raise MedsegError(f"{ds.root}: no cases to plan; run 'medseg check' on it")
    rng = np.random.default_rng(seed)
    stats = [_case_stats(c, lesion_labels, rng) for c in ds.cases]
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
        "lesions": {
            "total": len(volumes),
            "per_case": _quantiles(counts, ("min", "median", "max"), (0, 50, 100)),
            "cases_without": int(sum(1 for n in counts if n == 0)),
            "volume_mm3": _quantiles(volumes),
        },
    }


def target_spacing(fp: dict[str, Any]) -> list[float]:
    """Median spacing; a coarse axis of an anisotropic median takes the 10th percentile."""
    median = np.array(fp["spacing_mm"]["median"], dtype=float)
    target = median.copy()
    coarse = int(np.argmax(median))
    if median[coarse] / median.min() > ANISOTROPY:
        target[coarse] = max(fp["spacing_p10_mm"][coarse], median.min())
    return [round(float(v), 4) for v in target]


def training_memory_gb(patch: Sequence[int], channels: Sequence[int], batch: int, in_channels: int = 1) -> float:
    """Rough activation memory (GB) of one MONAI UNet training step: per level, feature maps of
    ``channels[l]`` at ``patch / 2**l`` voxels, about 24 float32 tensors of them kept for backward
    in the encoder and decoder blocks (conv, norm, activation, residual); measured within a factor
    of ~1.5 on CPU for UNet 16-256."""
    voxels = float(np.prod(patch))
    floats = sum(voxels / 8**level * ch for level, ch in enumerate(channels)) * 24 + voxels * in_channels * 4
    return batch * floats * 4 / 1e9


def patch_size(
    median_shape: Sequence[float],
    multiple: int,
    channels: Sequence[int],
    batch: int,
    memory_gb: float,
    in_channels: int = 1,
    max_side: int = 192,
) -> list[int]:
    """Largest patch (multiples of ``multiple``) no bigger than the median shape (rounded up) and
    ``max_side``, shrunk along the axis largest relative to the median shape until it fits."""

    def round_up(v: float) -> int:
        return max(multiple, int(math.ceil(v / multiple)) * multiple)

    patch = [min(round_up(s), round_up(max_side)) for s in median_shape]
    while training_memory_gb(patch, channels, batch, in_channels) > memory_gb:
        ratios = [p / max(s, 1.0) for p, s in zip(patch, median_shape)]
        axis = max((a for a in range(3) if patch[a] > multiple), key=lambda a: ratios[a], default=None)
        if axis is None:
            break
        patch[axis] -= multiple
    return patch


def plan_topology(
    patch: Sequence[int], spacing: Sequence[float], max_downsamplings: int = 5
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's network topology for a patch (voxels) at a spacing (mm): (kernel sizes, strides)
    per level, the first stride [1, 1, 1]. An axis is halved while its spacing is within 2x of the
    finest axis and its size stays >= 4 (so anisotropic scans first pool in-plane only); an axis
    much coarser than the finest gets kernel 1 (in-plane convolutions) until pooling catches up.
    """
    sizes, sp = [int(v) for v in patch], [float(v) for v in spacing]
    kernels, strides = [], [[1, 1, 1]]
    while len(strides) <= max_downsamplings:
        ratio = [v / min(sp) for v in sp]
        stride = [2 if r <= 2 and n >= 8 and n % 2 == 0 else 1 for r, n in zip(ratio, sizes)]
        if all(v == 1 for v in stride):
            break
        kernels.append([3 if r <= 2 else 1 for r in ratio])
        strides.append(stride)
        sizes = [n // v for n, v in zip(sizes, stride)]
        sp = [a * v for a, v in zip(sp, stride)]
    kernels.append([3, 3, 3])
    return kernels, strides


def make_plan(fp: dict[str, Any], model_cfg: ModelConfig, batch: int, memory_gb: float = 8.0) -> dict[str, Any]:
    """Plan in config terms (``preprocess``/``sampling`` keys) from a fingerprint."""
    spacing = target_spacing(fp)
    median_voxels = [mm / sp for mm, sp in zip(fp["median_shape_mm"], spacing)]
    multiple = 16 if model_cfg.name == "dynunet" else min_input_multiple(model_cfg)  # dynunet: room for 4 poolings
    patch = patch_size(median_voxels, multiple, model_cfg.channels, batch, memory_gb, len(fp["channels"]))
    is_ct = bool(fp["channels"]) and all(str(n).strip().upper() == "CT" for n in fp["channels"])
    preprocess: dict[str, Any] = {"target_spacing": spacing, "normalize": "ct" if is_ct else "zscore_nonzero"}
    if is_ct:
        stats = fp["intensity_in_lesions"]
        if len(stats) != len(fp["channels"]):
            raise MedsegError(
                "CT plan: no lesion voxels to take the intensity statistics from; set preprocess.ct_stats by hand"
            )
        preprocess["ct_stats"] = [[s["p00_5"], s["p99_5"], s["mean"], max(s["std"], 1e-3)] for s in stats.values()]
    kernels, strides = plan_topology(patch, spacing)
    network = {
        "dynunet": {
            "kernel_sizes": kernels,
            "level_strides": strides,
            "filters": [min(model_cfg.channels[0] * 2**i, 320) for i in range(len(strides))],
        }
    }
    return {
        "preprocess": preprocess,
        "sampling": {"patch_size": patch},
        "network": network,
        "estimated_training_memory_gb": round(
            training_memory_gb(patch, model_cfg.channels, batch, len(fp["channels"])), 2
        ),
        "memory_budget_gb": memory_gb,
    }


def apply_plan(cfg: ExperimentConfig, plan: dict[str, Any]) -> ExperimentConfig:
    """The config with every planned key it does not set itself taken from ``plan``."""
    updates = {}
    for section, keys in PLANNED.items():
        current = getattr(cfg, section)
        values = {
            k: plan.get(section, {})[k]
            for k in keys
            if k in plan.get(section, {}) and (k not in current.model_fields_set or getattr(current, k) is None)
        }
        if values:
            updates[section] = type(current).model_validate({**current.model_dump(), **values})
    return cfg.model_copy(update=updates)


def needs_plan(cfg: ExperimentConfig) -> bool:
    """Whether a config leaves some planned key to the plan."""
    for section, keys in PLANNED.items():
        current = getattr(cfg, section)
        for k in keys:
            if k == "ct_stats" and current.normalize != "ct":
                continue
            if k not in current.model_fields_set or getattr(current, k) is None:
                return True
    return False


def write_plan(out: Path, fp: dict[str, Any], plan: dict[str, Any], source: str, inputs: Sequence[Path] = ()) -> Path:
    """``<out>/plan.yaml``: the plan first (what training uses), then the fingerprint it came from;
    the path passes the output rule (:class:`medseg.io.outputs.OutputPlan`): never one of ``inputs``.

    Returns:
        The path written.

    Raises:
        MedsegError: ``<out>/plan.yaml`` is one of the files the plan was made from, or leaves ``out``.
    """
    path = OutputPlan(Path(out), inputs).claim(PLAN_FILE, "the plan")
    text = (
        f"# medseg plan of {source}\n# Use it with data.plan: {path.name} (keys set in the config win).\n"
        + yaml.safe_dump({"plan": plan, "fingerprint": fp}, sort_keys=False, default_flow_style=None)
    )
    write_text(text, path)
    return path


def read_plan(path: Path) -> dict[str, Any]:
    """The ``plan`` mapping of a plan.yaml."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MedsegError(
            f"{path}: cannot read the plan ({exc}); rerun 'medseg plan DATASET --out {Path(path).parent}'"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("plan"), dict):
        raise MedsegError(f"{path}: not a medseg plan (no 'plan:' mapping); rerun 'medseg plan'")
    return raw["plan"]
