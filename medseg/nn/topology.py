"""Network rules the plan needs: the topology nnU-Net plans for DynUNet, and the input sizes each
network accepts (multiples of the product of its strides).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medseg.config.schema import ModelConfig

DYNUNET_PATCH_MULTIPLE = 16  # a planned DynUNet patch leaves room for 4 poolings on every axis


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


def with_topology(model: ModelConfig, patch: Sequence[int], spacing: Sequence[float]) -> ModelConfig:
    """``model`` with a DynUNet's unset ``kernel_sizes`` / ``level_strides`` planned for the patch
    and spacing (:func:`plan_topology`); any other network unchanged."""
    if model.name != "dynunet" or (model.kernel_sizes is not None and model.level_strides is not None):
        return model
    kernels, strides = plan_topology(patch, spacing)
    return type(model).model_validate(
        {
            **model.model_dump(),
            "kernel_sizes": model.kernel_sizes or kernels,
            "level_strides": model.level_strides or strides,
        }
    )


def input_multiples(model: ModelConfig) -> tuple[int, int, int]:
    """Each spatial input size (x, y, z) must be a multiple of this: the product of the network's
    strides (a DynUNet whose strides are still to be planned: (1, 1, 1), they are planned to fit)."""
    if model.name == "dynunet" and model.level_strides:
        return tuple(int(math.prod(s[a] for s in model.level_strides)) for a in range(3))  # type: ignore[return-value]
    if model.name == "segresnet":
        return (2 ** (len(model.channels) - 1),) * 3
    if model.name == "dynunet":
        return (1, 1, 1)
    return (math.prod(model.strides),) * 3


def patch_multiple(model: ModelConfig) -> int:
    """What a planned patch size is a multiple of on every axis: DynUNet 16 (its strides are planned
    after the patch), else the largest of :func:`input_multiples`."""
    return DYNUNET_PATCH_MULTIPLE if model.name == "dynunet" else max(input_multiples(model))
