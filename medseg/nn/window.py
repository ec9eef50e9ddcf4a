"""Sliding-window inference of whole volumes: Gaussian blending, mirror TTA, bf16 autocast."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import SlidingWindowInfererAdapt, sliding_window_inference

from medseg.config.schema import InferenceConfig
from medseg.runtime.device import cpu_has_native_bf16

MIRRORS = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


class MirrorTTA(torch.nn.Module):
    """Mean logits of ``model`` over all 8 mirrorings of a (B, C, X, Y, Z) window (nnU-Net's TTA).
    MONAI's ``TestTimeAugmentation`` works on whole dict samples with random transforms, not on
    the windows of a sliding-window pass, hence this wrapper."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in MIRRORS:
            out = self.model(x.flip(axes) if axes else x)
            out = out.flip(axes) if axes else out
            total = out if total is None else total + out
        return total / len(MIRRORS)


def use_bf16(device: torch.device, amp: str) -> bool:
    """bf16 autocast for inference: forced on/off, or (auto) on CUDA and on CPUs whose oneDNN has
    native bf16 (about 2x faster there; masks agree with float32 to within a few boundary voxels)."""
    if amp != "auto":
        return amp == "on"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()


def sliding_window_probs(
    model: torch.nn.Module,
    image: torch.Tensor,
    icfg: InferenceConfig,
    roi: Sequence[int],
    device: torch.device,
    tta: bool | None = None,
) -> torch.Tensor:
    """Lesion probabilities of a batch of whole volumes.

    Args:
        image: (B, C, X, Y, Z) preprocessed volume(s).
        icfg: :class:`medseg.config.InferenceConfig` (overlap, sw_batch_size, blend, tta).
        tta: override ``icfg.tta``.

    Returns:
        (B, 1, X, Y, Z) float32 probabilities on the CPU.
    """
    x = image.as_tensor() if hasattr(image, "as_tensor") else image
    predictor = MirrorTTA(model) if (icfg.tta if tta is None else tta) else model
    bf16 = use_bf16(device, getattr(icfg, "amp", "auto"))
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if device.type == "cuda":
            # stitches on the GPU while it fits, falls back to CPU stitching (or buffered mode)
            # for volumes that do not (MONAI issue 6427)

            inferer = SlidingWindowInfererAdapt(
                roi_size=tuple(roi),
                sw_batch_size=icfg.sw_batch_size,
                overlap=icfg.overlap,
                mode=icfg.blend,
                sigma_scale=0.125,
                progress=False,
            )
            logits = inferer(x.to(device), predictor)
        else:
            logits = sliding_window_inference(
                x,
                roi_size=tuple(roi),
                sw_batch_size=icfg.sw_batch_size,
                predictor=predictor,
                overlap=icfg.overlap,
                mode=icfg.blend,
                sigma_scale=0.125,
            )
    return torch.sigmoid(logits.float()).cpu()
