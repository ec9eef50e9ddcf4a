"""``medseg export``: a trained model as one ONNX file that carries its own preprocessing.

The network (one checkpoint, an MLflow model, or an ensemble of several: their mean probability)
is traced with PyTorch's TorchScript-based ONNX exporter on one window of the plan's size, with
the batch and the three spatial axes dynamic; the metadata of
:class:`medseg.inference.onnx_model.OnnxMetadata` is added to the file's ``metadata_props``; then
onnxruntime runs the file on a random window and the largest difference from torch is reported,
so an export that does not reproduce the network is never handed over silently.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError, missing_extra
from medseg.inference.model import LoadedModel, load_model
from medseg.inference.onnx_model import INPUT, OUTPUT, OnnxMetadata, OnnxWindows, open_session
from medseg.io.outputs import OutputPlan
from medseg.io.write import atomic_write

try:  # the optional extra medseg[onnx]; require_onnx() names it when missing
    import onnx
except ImportError:
    onnx = None

MODEL_FILE = "model.onnx"
OPSET = 17
SPATIAL_AXES = {0: "batch", 2: "x", 3: "y", 4: "z"}
AGREEMENT = 1e-3  # largest |onnxruntime - torch| logit on the check window before the export is refused


@dataclass(frozen=True)
class Exported:
    """What ``medseg export`` wrote: the file, the largest logit difference onnxruntime vs torch
    on a random window of ``window`` voxels, and the metadata stored."""

    path: Path
    max_difference: float
    window: tuple[int, ...]
    metadata: OnnxMetadata


def require_onnx(option: str = "medseg export") -> None:
    """Raise the one-line error naming the extra when onnx is missing.

    Raises:
        MedsegError: exit code 2.
    """
    if onnx is None:
        raise missing_extra(option, "onnx and onnxruntime", "onnx")


def onnx_bytes(model: torch.nn.Module, window: Sequence[int], opset: int = OPSET) -> bytes:
    """The ONNX graph of ``model`` (forward (B, C_in, X, Y, Z) -> logits (B, C, X, Y, Z)), traced
    on one zero window of shape ``window`` (1, C_in, X, Y, Z); batch and spatial axes dynamic."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's tracer and deprecation notices are not the user's
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.cpu().eval(),
            (torch.zeros(*window),),
            buffer,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: SPATIAL_AXES, OUTPUT: SPATIAL_AXES},
            opset_version=opset,
        )
    return buffer.getvalue()


def with_metadata(graph: bytes, metadata: OnnxMetadata) -> bytes:
    """The ONNX model ``graph`` with ``metadata`` in its ``metadata_props``, checked by onnx."""
    proto = onnx.load_from_string(graph)
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "medseg"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def max_difference(lm: LoadedModel, path: Path, window: Sequence[int]) -> float:
    """Largest |logit| difference between onnxruntime (the file at ``path``) and torch on one
    random window (seeded) of shape ``window``."""
    x = torch.randn(*window, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = lm.model.cpu().eval()(x).float()
        got = OnnxWindows(open_session(path, "cpu"))(x)
    return float(np.abs(got.numpy() - expected.numpy()).max())


def export_onnx(
    source: Path | str | Sequence[Path | str], out: Path, tracking_uri: str | None = None, opset: int = OPSET
) -> Exported:
    """Export the model of ``source`` (a checkpoint, an MLflow model URI, several of them or a folder
    of runs, as ``predict`` takes it) to ``out/model.onnx``.

    Raises:
        MedsegError: onnx missing, the model cannot be loaded, the output path is not ours to
            write, or onnxruntime and torch disagree by more than :data:`AGREEMENT` on the check window.
    """
    require_onnx()
    members = [source] if isinstance(source, (str, Path)) else list(source)
    path = OutputPlan(out, [Path(m) for m in members if Path(m).is_file()]).claim(MODEL_FILE, "the ONNX model")
    lm = load_model(source, "cpu", tracking_uri)
    window = (1, lm.preprocess.in_channels, *lm.plan.roi_size)
    metadata = OnnxMetadata(lm.plan, lm.operating_point, lm.icfg, lm.connectivity, lm.training_scans)
    data = with_metadata(onnx_bytes(lm.model, window, opset), metadata)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    difference = max_difference(lm, path, window)
    if difference > AGREEMENT:
        path.unlink()
        raise MedsegError(
            f"{source}: onnxruntime's logits differ from torch's by {difference:.3g} on a check window "
            f"(more than {AGREEMENT:g}); the network uses an operation the exporter does not reproduce, keep "
            "--engine torch for it"
        )
    return Exported(path, difference, window, metadata)
