"""The plan proposal (``medseg plan``, ``plan.yaml``): spacing, patch and normalisation from a
dataset fingerprint, as nnU-Net's experiment planning does.

- target spacing: the median spacing; when the median is anisotropic (largest / smallest > 3) the
  coarse axis takes the 10th percentile instead (nnU-Net's rule), so thin-slice cases are not
  blurred to the thickest slices;
- patch size: the median shape at the target spacing, a multiple of the network's down-sampling
  (:func:`medseg.nn.topology.patch_multiple`), shrunk along the axis that is largest relative to the
  median shape until the estimated training memory (UNet activations for one batch, forward +
  backward) fits ``sampling.memory_gb``;
- normalisation: CT channels (named "CT") clip to the foreground 0.5-99.5 percentiles and z-score
  with the foreground mean/std; anything else is MRI-like: z-score over non-zero voxels; a config
  asking for ``nyul`` gets the standard landmarks fitted on the dataset's cases.

The proposal's keys mirror the config's (``preprocess.*``, ``sampling.*``); :func:`apply_plan`
fills in the keys a config leaves null, so any part of it can be overridden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.config.schema import ExperimentConfig, ModelConfig
from medseg.errors import MedsegError
from medseg.io.outputs import OutputPlan
from medseg.io.write import write_text
from medseg.nn.topology import patch_multiple, plan_topology

ANISOTROPY = 3.0
PLAN_FILE = "plan.yaml"  # the file `medseg plan --out DIR` writes into DIR
PLANNED = {"preprocess": ("target_spacing", "normalize", "ct_stats", "landmarks"), "sampling": ("patch_size",)}
# planned keys that only matter for one normalisation
NORMALIZATION_KEYS = {"ct_stats": "ct", "landmarks": "nyul"}


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


def make_plan(fp: dict[str, Any], model_cfg: ModelConfig, batch: int, memory_gb: float) -> dict[str, Any]:
    """Plan in config terms (``preprocess``/``sampling`` keys) from a fingerprint, for ``batch``
    patches per step within ``memory_gb``; the fingerprint's nyul landmarks when it has them.

    Raises:
        MedsegError: a CT plan without lesion voxels, or nyul landmarks for a channel without body.
    """
    spacing = target_spacing(fp)
    median_voxels = [mm / sp for mm, sp in zip(fp["median_shape_mm"], spacing)]
    patch = patch_size(
        median_voxels, patch_multiple(model_cfg), model_cfg.channels, batch, memory_gb, len(fp["channels"])
    )
    is_ct = bool(fp["channels"]) and all(str(n).strip().upper() == "CT" for n in fp["channels"])
    preprocess: dict[str, Any] = {"target_spacing": spacing, "normalize": "ct" if is_ct else "zscore_nonzero"}
    if is_ct:
        stats = fp["intensity_in_lesions"]
        if len(stats) != len(fp["channels"]):
            raise MedsegError(
                "CT plan: no lesion voxels to take the intensity statistics from; set preprocess.ct_stats by hand"
            )
        preprocess["ct_stats"] = [[s["p00_5"], s["p99_5"], s["mean"], max(s["std"], 1e-3)] for s in stats.values()]
    if fp.get("landmarks") is not None:
        if any(m is None for m in fp["landmarks"]):
            raise MedsegError("nyul plan: a channel has no body voxels in any case; check preprocess.background")
        preprocess["landmarks"] = fp["landmarks"]
    kernels, strides = plan_topology(patch, spacing)
    network = {
        "dynunet": {
            "kernel_sizes": kernels,
            "level_strides": strides,
            "filters": [min(model_cfg.channels[0] * 2**i, 320) for i in range(len(strides))],
        }
    }
    memory = training_memory_gb(patch, model_cfg.channels, batch, len(fp["channels"]))
    return {
        "preprocess": preprocess,
        "sampling": {"patch_size": patch},
        "network": network,
        "estimated_training_memory_gb": round(memory, 2),
        "memory_budget_gb": memory_gb,
    }


def apply_plan(cfg: ExperimentConfig, plan: dict[str, Any]) -> ExperimentConfig:
    """The config with every planned key it leaves null taken from ``plan`` (keys it sets win)."""
    updates = {}
    for section, keys in PLANNED.items():
        current = getattr(cfg, section)
        given = plan.get(section, {})
        values = {k: given[k] for k in keys if k in given and getattr(current, k) is None}
        if values:
            updates[section] = type(current).model_validate({**current.model_dump(), **values})
    return cfg.model_copy(update=updates)


def needs_plan(cfg: ExperimentConfig) -> bool:
    """Whether a config leaves some planned key null (``ct_stats`` only matters for ``ct``,
    ``landmarks`` only for ``nyul``)."""
    for section, keys in PLANNED.items():
        current = getattr(cfg, section)
        for k in keys:
            if k in NORMALIZATION_KEYS and current.normalize not in (NORMALIZATION_KEYS[k], None):
                continue
            if getattr(current, k) is None:
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
