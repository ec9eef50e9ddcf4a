"""Mixed precision policy of the training step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medseg.config.schema import TrainConfig


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and the GradScaler fp16 needs (None otherwise)."""

    dtype: torch.dtype | None = None
    scaler: object | None = None
    channels_last: bool = False

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in the memory format of the step (channels_last_3d or as it is)."""
        return model.to(memory_format=torch.channels_last_3d) if self.channels_last else model


def precision_for(train_cfg: TrainConfig, device: torch.device) -> Precision:
    """``train.amp``: auto = bf16 on CUDA GPUs that have it, else fp16 with a GradScaler; float32
    on CPU (bf16 training on CPU is slower than float32 on most CPUs). ``train.channels_last``:
    auto = channels_last_3d on CPU only."""
    mode = train_cfg.amp
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
    last = device.type == "cpu" if train_cfg.channels_last == "auto" else bool(train_cfg.channels_last)
    if mode == "off":
        return Precision(channels_last=last)
    if mode == "fp16":
        return Precision(torch.float16, torch.amp.GradScaler(device.type), last)
    return Precision(torch.bfloat16, None, last)
