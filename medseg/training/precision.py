"""Mixed precision policy of the training step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medseg.config.schema import TrainConfig
from medseg.nn.norms import layout_instance_norms
from medseg.runtime.device import cpu_has_native_bf16


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and the GradScaler fp16 needs (None otherwise)."""

    dtype: torch.dtype | None = None
    scaler: object | None = None
    channels_last: bool = False

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in the memory format of the step: channels_last_3d, with instance norms that keep
        that layout (:mod:`medseg.nn.norms`: the same function and state dict), or as it is."""
        if not self.channels_last:
            return model
        return layout_instance_norms(model).to(memory_format=torch.channels_last_3d)


def precision_for(train_cfg: TrainConfig, device: torch.device) -> Precision:
    """``train.amp``: auto = bf16 on CUDA GPUs that have it, else fp16 with a GradScaler; on the
    CPU bf16 where oneDNN runs it natively (a step in about two thirds of float32's time), else float32
    (emulated bf16 is slower than float32). ``train.channels_last``: auto = channels_last_3d on
    the CPU only."""
    mode = train_cfg.amp
    if mode == "auto" and device.type == "cuda":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif mode == "auto":
        mode = "bf16" if cpu_has_native_bf16() else "off"
    last = device.type == "cpu" if train_cfg.channels_last == "auto" else bool(train_cfg.channels_last)
    if mode == "off":
        return Precision(channels_last=last)
    if mode == "fp16":
        return Precision(torch.float16, torch.amp.GradScaler(device.type), last)
    return Precision(torch.bfloat16, None, last)
