"""Running an exported model with onnxruntime (the optional extra ``medseg[onnx]``).

An ONNX model written by ``medseg export`` (:mod:`medseg.inference.export`) maps float32 windows
``image`` (B, C_in, X, Y, Z) to ``logits`` (B, C, X, Y, Z), batch and spatial sizes free (each a
multiple of the plan's ``input_multiples``). Its ``metadata_props`` carry everything else
``predict`` needs (:class:`OnnxMetadata`): the plan (preprocessing: spacing, normalisation,
channels, classes; the window size), the operating point, the sliding-window settings, the
lesion connectivity and the training scans' profile range, as JSON under ``medseg.*`` keys, with
the class names and the spacing also under keys of their own for other readers.

``predict --engine onnxruntime`` wraps the session in :class:`OnnxWindows`, a torch module, so
MONAI's sliding window, the Gaussian blending, mirror TTA and the way back to the scan's grid are
the same code as with torch; only the network's forward pass runs in onnxruntime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from medseg import __version__
from medseg.config.plan import Plan
from medseg.config.schema import InferenceConfig
from medseg.data.profile import ProfileRange
from medseg.errors import MedsegError, missing_extra, shorten
from medseg.inference.model import LoadedModel
from medseg.nn.checkpoint import OperatingPoint
from medseg.runtime.device import pick_device

try:  # the optional extra medseg[onnx]; require_onnxruntime() names it when missing
    import onnxruntime as ort
except ImportError:
    ort = None

FORMAT = "medseg-onnx/1"
INPUT, OUTPUT = "image", "logits"
MAX_ONNX_BYTES = 2**31  # protobuf's limit on one file; larger models need external data, which is refused
CONNECTIVITIES = (6, 18, 26)


def require_onnxruntime(option: str = "--engine onnxruntime") -> None:
    """Raise the one-line error naming the extra when onnxruntime is missing.

    Raises:
        MedsegError: exit code 2.
    """
    if ort is None:
        raise missing_extra(option, "onnxruntime", "onnx")


def _refuse(source: Path | str, key: str, problem: str) -> NoReturn:
    raise MedsegError(f"{source}: ONNX metadata {key} {problem}; export the model again with 'medseg export'")


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported model carries besides its network (see the module docstring)."""

    plan: Plan
    operating_point: OperatingPoint
    inference: InferenceConfig
    connectivity: int
    training_scans: ProfileRange | None = None

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` of the ONNX file (every value a string)."""
        pre = self.plan.preprocess
        return {
            "medseg.format": FORMAT,
            "medseg.version": __version__,
            "medseg.plan": json.dumps(self.plan.to_dict()),
            "medseg.operating_point": json.dumps(self.operating_point.to_dict()),
            "medseg.inference": json.dumps(self.inference.model_dump(mode="json")),
            "medseg.connectivity": str(self.connectivity),
            "medseg.classes": json.dumps(list(pre.classes)),
            "medseg.spacing": json.dumps(list(pre.spacing)),
            "medseg.normalize": pre.normalize,
            "medseg.input": f"{INPUT}: float32 (batch, {pre.in_channels} channel(s), x, y, z), RAS at medseg.spacing "
            "mm, normalised as medseg.plan preprocess says",
            "medseg.output": f"{OUTPUT}: float32 (batch, class, x, y, z), one channel per medseg.classes; "
            "sigmoid = probability",
            **(
                {"medseg.training_scans": json.dumps(self.training_scans.to_dict())}
                if self.training_scans is not None
                else {}
            ),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: Path | str) -> OnnxMetadata:
        """Read and check the metadata of an ONNX file (untrusted: every value is validated).

        Raises:
            MedsegError: naming ``source`` and the key: not a medseg export, a value that does not
                parse or is out of range, class names or spacing unlike the plan's.
        """
        if props.get("medseg.format") != FORMAT:
            raise MedsegError(
                f"{source}: not an ONNX model exported by medseg (no medseg.format {FORMAT!r} in its metadata); "
                "export it with 'medseg export MODEL --out FOLDER'"
            )
        raw = {key: _json(props, key, source) for key in ("plan", "operating_point", "inference", "classes", "spacing")}
        try:
            plan = Plan.from_dict(raw["plan"], source)
            point = OperatingPoint.from_dict(raw["operating_point"], source)
            inference = InferenceConfig.model_validate(raw["inference"])
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            _refuse(source, "medseg.plan/operating_point/inference", f"do not validate ({type(exc).__name__})")
        if raw["classes"] != list(plan.preprocess.classes) or raw["spacing"] != list(plan.preprocess.spacing):
            _refuse(source, "medseg.classes/medseg.spacing", "differ from the plan's")
        connectivity = props.get("medseg.connectivity", "")
        if connectivity not in {str(c) for c in CONNECTIVITIES}:
            _refuse(source, "medseg.connectivity", f"{shorten(connectivity, 20)!r} is not 6, 18 or 26")
        scans = _json(props, "training_scans", source) if "medseg.training_scans" in props else None
        return cls(
            plan,
            point,
            inference,
            int(connectivity),
            ProfileRange.from_dict(scans, source) if scans is not None else None,
        )


def _json(props: Mapping[str, str], key: str, source: Path | str) -> Any:
    """The JSON value of ``medseg.<key>``.

    Raises:
        MedsegError: missing or not JSON.
    """
    text = props.get(f"medseg.{key}")
    if text is None:
        _refuse(source, f"medseg.{key}", "is missing")
    try:
        return json.loads(text)
    except ValueError:
        _refuse(source, f"medseg.{key}", "is not JSON")


class OnnxWindows(torch.nn.Module):
    """The network of an onnxruntime session as a torch module for the sliding window: forward
    (B, C_in, X, Y, Z) float32 -> logits (B, C, X, Y, Z) float32 on the input's device."""

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__()
        self.session = session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run([OUTPUT], {INPUT: window})[0]
        return torch.from_numpy(logits).to(x.device)


def providers(device: str) -> list[str]:
    """onnxruntime's execution providers for ``--device``: CUDA first where onnxruntime has it and
    the device is (or, with ``auto``, may be) a GPU; always the CPU.

    Raises:
        MedsegError: ``cuda`` asked for and this onnxruntime has no CUDA provider.
    """
    have_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and not have_cuda:
        raise MedsegError(
            f"--device {device}: this onnxruntime has no CUDA provider (the onnxruntime package runs on the CPU); "
            "install onnxruntime-gpu instead, or use --device cpu"
        )
    gpu = have_cuda and pick_device("cuda" if device.startswith("cuda") else device).type == "cuda"
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]


def open_session(path: Path, device: str = "auto") -> ort.InferenceSession:
    """An onnxruntime session of the ONNX file ``path``, read from its bytes (so a model that
    points at external data files is refused, never followed).

    Raises:
        MedsegError: onnxruntime missing, no such file, too large, or not a loadable ONNX model.
    """
    require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: no such ONNX model; pass the model.onnx written by 'medseg export'")
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise MedsegError(f"{path}: larger than 2 GiB, more than an ONNX file holds; export the model again")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    try:
        return ort.InferenceSession(path.read_bytes(), options, providers=providers(device))
    except MedsegError:
        raise
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MedsegError(
            f"{path}: not a loadable ONNX model ({shorten(first, 160)}); export it with 'medseg export'"
        ) from None


def load_onnx_model(
    source: Path | str | list[Path | str], device: str = "auto", tracking_uri: str | None = None
) -> LoadedModel:
    """An exported ONNX model ready for :func:`medseg.inference.predictor.predict_classes`: its
    session as the network, its metadata as the plan and operating point. The sliding window
    stitches on the CPU and runs float32 (``inference.amp`` off: bf16 autocast is torch's).

    Args:
        source: the ``model.onnx`` of ``medseg export`` (one file).
        tracking_uri: unused (an MLflow model is exported first); for the signature of
            :func:`medseg.inference.model.load_model`.

    Raises:
        MedsegError: not one .onnx file, or see :func:`open_session`, :meth:`OnnxMetadata.from_props`.
    """
    if isinstance(source, (list, tuple)) or not str(source).endswith(".onnx"):
        raise MedsegError(
            f"{shorten(str(source), 120)}: --engine onnxruntime runs one exported model.onnx; export the model "
            "first (medseg export MODEL --out FOLDER) and pass FOLDER/model.onnx"
        )
    session = open_session(Path(source), device)
    meta = OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map, source)
    _check_signature(session, meta, source)
    icfg = meta.inference.model_copy(update={"amp": "off"})
    return LoadedModel(
        OnnxWindows(session),
        meta.plan,
        meta.operating_point,
        icfg,
        meta.connectivity,
        torch.device("cpu"),
        meta.training_scans,
    )


def _check_signature(session: ort.InferenceSession, meta: OnnxMetadata, source: Path | str) -> None:
    """The session takes ``image`` (B, C_in, X, Y, Z) with the plan's channel count and gives ``logits``.

    Raises:
        MedsegError: another input or output, or another channel count than the metadata's.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    channels = meta.plan.preprocess.in_channels
    if [i.name for i in inputs] != [INPUT] or OUTPUT not in [o.name for o in outputs] or len(inputs[0].shape) != 5:
        raise MedsegError(
            f"{source}: its graph does not take one 5D '{INPUT}' to '{OUTPUT}' as medseg's exports do; "
            "export the model again with 'medseg export'"
        )
    if inputs[0].shape[1] != channels:
        raise MedsegError(
            f"{source}: its graph takes {inputs[0].shape[1]} channel(s), its metadata says {channels}; "
            "export the model again with 'medseg export'"
        )
