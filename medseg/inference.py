"""Sliding-window prediction of one volume and of many files.

``predict_volume`` preprocesses a scan exactly as in training, runs Gaussian-blended sliding-window
inference, resamples the probability map back onto the scan's own grid (one affine resampling of
probabilities; labels are never interpolated) and thresholds it there, so the mask has the scan's
exact shape, affine and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from medseg.errors import MedsegError


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MedsegError("device 'cuda' requested but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


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
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def sliding_window_probs(model: torch.nn.Module, image: torch.Tensor, icfg, roi: Sequence[int],
                         device: torch.device, tta: bool | None = None) -> torch.Tensor:
    """Lesion probabilities of a batch of whole volumes.

    Args:
        image: (B, C, X, Y, Z) preprocessed volume(s).
        icfg: :class:`medseg.config.InferenceConfig` (overlap, sw_batch_size, blend, tta).
        tta: override ``icfg.tta``.

    Returns:
        (B, 1, X, Y, Z) float32 probabilities on the CPU.
    """
    from monai.inferers import sliding_window_inference

    x = image.as_tensor() if hasattr(image, "as_tensor") else image
    predictor = MirrorTTA(model) if (icfg.tta if tta is None else tta) else model
    bf16 = use_bf16(device, getattr(icfg, "amp", "auto"))
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if device.type == "cuda":
            # stitches on the GPU while it fits, falls back to CPU stitching (or buffered mode)
            # for volumes that do not (MONAI issue 6427)
            from monai.inferers import SlidingWindowInfererAdapt

            inferer = SlidingWindowInfererAdapt(roi_size=tuple(roi), sw_batch_size=icfg.sw_batch_size, overlap=icfg.overlap,
                                                mode=icfg.blend, sigma_scale=0.125, progress=False)
            logits = inferer(x.to(device), predictor)
        else:
            logits = sliding_window_inference(x, roi_size=tuple(roi), sw_batch_size=icfg.sw_batch_size,
                                              predictor=predictor, overlap=icfg.overlap, mode=icfg.blend,
                                              sigma_scale=0.125)
    return torch.sigmoid(logits.float()).cpu()


@dataclass
class LoadedModel:
    """A network ready for prediction with the settings its checkpoint carries."""

    model: torch.nn.Module
    spacing: tuple[float, float, float]
    normalize: str
    roi: tuple[int, int, int]
    icfg: Any
    threshold: float
    min_lesion_mm3: float
    connectivity: int
    device: torch.device
    in_channels: int = 1
    channels: tuple[str, ...] = ()
    ct_stats: Optional[list] = None
    background: str = "zero"
    classes: tuple[str, ...] = ("lesion",)


def load_model(checkpoint: Path | str, device: str = "auto", tracking_uri: str | None = None) -> LoadedModel:
    """Build the network of a checkpoint and load its weights (``weights_only=True``).

    Args:
        checkpoint: a .pt file, or an MLflow URI ``runs:/<id>/model`` / ``models:/<name>/<version>``.
    """
    import tempfile

    from medseg.checkpoint import load_checkpoint
    from medseg.config import ExperimentConfig
    from medseg.models import build_model

    if str(checkpoint).startswith(("runs:/", "models:/")):
        from medseg.tracking import fetch_model

        with tempfile.TemporaryDirectory(prefix="medseg-model-") as tmp:
            ckpt = load_checkpoint(fetch_model(str(checkpoint), tracking_uri, Path(tmp)))
    else:
        ckpt = load_checkpoint(checkpoint)
    missing = [k for k in ("config", "preprocess", "state_dict", "operating_point") if k not in ckpt]
    if missing:
        raise MedsegError(f"{checkpoint}: not a complete medseg checkpoint (no {', '.join(missing)}); use best.pt or last.pt of a training run")
    cfg = ExperimentConfig.model_validate(ckpt["config"])
    pre = ckpt["preprocess"]
    classes = tuple(pre.get("classes") or ("lesion",))
    model = build_model(cfg.model, in_channels=int(pre["in_channels"]), out_channels=len(classes))
    model.load_state_dict(ckpt["state_dict"])
    dev = pick_device(device)
    model.to(dev).eval()
    op = ckpt["operating_point"]
    return LoadedModel(model, tuple(pre["spacing"]), pre["normalize"],
                       tuple(cfg.inference.roi_size or cfg.sampling.patch_size), cfg.inference,
                       float(op["threshold"]), float(op["min_lesion_mm3"]), cfg.eval.connectivity, dev,
                       int(pre["in_channels"]), tuple(pre.get("channels") or ()), pre.get("ct_stats") or None,
                       pre.get("background", "zero"), classes)


@dataclass
class Prediction:
    """Outputs on the scan's own grid: ``prob`` float32 (X, Y, Z), ``mask`` uint8 (X, Y, Z)."""

    prob: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


def predict_classes(lm: LoadedModel, image_path: Path | str | Sequence[Path], threshold: float | None = None,
                    min_lesion_mm3: float | None = None, tta: bool | None = None) -> list[Prediction]:
    """Predict one scan: a file (3D, or 4D with the channels last) or one file per channel, in
    the model's channel order. One :class:`Prediction` per lesion class (``lm.classes``), each on
    the (first) file's own voxel grid."""
    from monai.transforms import Compose

    from medseg.metrics import remove_small
    from medseg.data import image_entry
    from medseg.transforms import preprocess

    try:
        files = [Path(image_path)] if isinstance(image_path, (str, Path)) else [Path(p) for p in image_path]
        image_path = files[0]
        _same_grid(files)
        steps = preprocess(lm.spacing, lm.normalize, with_label=False, check_finite=True, ct_stats=lm.ct_stats,
                           background=lm.background)
        data = Compose(steps)({"image": image_entry(files)})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError with the whole chain
        root = _root(exc)
        if isinstance(root, MedsegError):
            raise root from None
        raise MedsegError(f"{image_path}: cannot be read as a 3D scan ({_last_line(exc)}); check the file") from None
    img = data["image"]
    if img.ndim != 4:
        raise MedsegError(f"{image_path}: has {img.ndim - 1} spatial dimension(s) (shape {tuple(img.shape[1:])}); medseg segments 3D scans")
    if img.shape[0] != lm.in_channels:
        names = f" ({', '.join(lm.channels)})" if lm.channels else ""
        raise MedsegError(f"{image_path}: has {img.shape[0]} channel(s), the model expects {lm.in_channels}{names}; "
                          "pass one file per channel in that order (or a 4D file)")

    probs = sliding_window_probs(lm.model, img[None], lm.icfg, lm.roi, lm.device, tta)[0]
    affine = np.asarray(img.meta["original_affine"], dtype=float)
    shape = [int(s) for s in img.meta["spatial_shape"]][:3]
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    thr = lm.threshold if threshold is None else threshold
    min_mm3 = lm.min_lesion_mm3 if min_lesion_mm3 is None else min_lesion_mm3
    out = []
    for c in range(probs.shape[0]):
        prob_np = restore_grid(probs[c:c + 1], np.asarray(img.affine, dtype=float), affine, shape)
        mask = remove_small(prob_np >= thr, min_mm3 / voxel_mm3, lm.connectivity).astype(np.uint8)
        out.append(Prediction(prob_np, mask, affine))
    return out


def predict_volume(lm: LoadedModel, image_path: Path | str | Sequence[Path], threshold: float | None = None,
                   min_lesion_mm3: float | None = None, tta: bool | None = None) -> Prediction:
    """:func:`predict_classes` for a one-class model (the common case).

    Raises:
        MedsegError: a model with several lesion classes (use :func:`predict_classes`).
    """
    if len(lm.classes) > 1:
        raise MedsegError(f"this model predicts {len(lm.classes)} lesion classes ({', '.join(lm.classes)}); "
                          "use medseg predict (one mask per class) or medseg.inference.predict_classes")
    return predict_classes(lm, image_path, threshold, min_lesion_mm3, tta)[0]


def _same_grid(files: Sequence[Path], atol: float = 1e-3) -> None:
    """Per-channel files must share one grid (MONAI would stack them without looking)."""
    from medseg.io import read_geometry

    shape0, affine0 = read_geometry(files[0])
    for path in files:  # each header read once
        shape, affine = (shape0, affine0) if path == files[0] else read_geometry(path)
        if len(shape) < 3 or len(shape) > 4:
            raise MedsegError(f"{path}: shape {tuple(shape)} has {len(shape)} dimensions; medseg segments 3D scans "
                              "(a 4th axis only for channels)")
        if tuple(shape[:3]) != tuple(shape0[:3]) or not np.allclose(affine, affine0, atol=atol):
            raise MedsegError(f"{path}: is on a different grid (shape {tuple(shape[:3])}) than {files[0].name} (shape {tuple(shape0[:3])}); "
                              "resample every channel onto the first one's grid")


def _axis_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """If model-grid voxels map onto scan-grid voxels by axis permutation, flips and an integer
    shift (orientation change and crop, no resampling), return (signed permutation R, shift t)
    with ``dst_index = R @ src_index + t``; else None."""
    transform = np.linalg.inv(dst_affine) @ src_affine
    r, t = transform[:3, :3], transform[:3, 3]
    r_int, t_int = np.rint(r), np.rint(t)
    ok = np.allclose(r, r_int, atol=1e-4) and np.allclose(t, t_int, atol=1e-3)
    if not ok or not all(np.count_nonzero(row) == 1 for row in r_int) or abs(abs(np.linalg.det(r_int)) - 1) > 1e-6:
        return None
    return r_int.astype(int), t_int.astype(int)


def restore_grid(prob: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int]) -> np.ndarray:
    """Put a (1, X', Y', Z') probability map on the model grid back onto the scan grid (X, Y, Z).

    Orientation changes and crops are undone exactly by transposing, flipping and pasting (zeros
    outside the crop); anything else (a spacing change) by one bilinear affine resampling with
    MONAI's ``SpatialResample``. Probabilities only: masks are thresholded afterwards.
    """
    mapping = _axis_map(src_affine, dst_affine)
    if mapping is None:
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        back = SpatialResample(mode="bilinear", padding_mode="zeros")(
            MetaTensor(prob, affine=torch.as_tensor(src_affine)), dst_affine=torch.as_tensor(dst_affine),
            spatial_size=list(dst_shape))
        return np.asarray(back[0], dtype=np.float32)
    r, t = mapping
    arr = prob[0].numpy()
    src_axes = [int(np.nonzero(r[d])[0][0]) for d in range(3)]
    arr = arr.transpose(src_axes)
    offsets = []
    for d in range(3):
        if r[d, src_axes[d]] < 0:
            arr = np.flip(arr, d)
            offsets.append(t[d] - (arr.shape[d] - 1))
        else:
            offsets.append(t[d])
    out = np.zeros(tuple(dst_shape), dtype=np.float32)
    dst = tuple(slice(max(o, 0), min(o + n, size)) for o, n, size in zip(offsets, arr.shape, dst_shape))
    src = tuple(slice(s.start - o, s.stop - o) for s, o in zip(dst, offsets))
    out[dst] = arr[src]
    return out


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _last_line(exc: BaseException) -> str:
    exc = _root(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:160]}" if text else type(exc).__name__
