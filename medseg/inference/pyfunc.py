"""The trained model as an MLflow pyfunc model (models from code, see
:mod:`medseg.inference.pyfunc_entry`): ``mlflow.pyfunc.load_model("runs:/<id>/model")``
gives an object whose ``predict`` segments scans, so MLflow's own tooling (registry, model
serving, ``mlflow models predict``) can use medseg models. The medseg checkpoint travels inside as
an artifact (``model/artifacts/best.pt``), which is also what ``medseg predict runs:/...`` loads.

MLflow's ``mlflow.pytorch`` flavour would pickle the whole network object and lose the
preprocessing and operating point the checkpoint carries, hence a pyfunc wrapper.

A request is a table (``mlflow models serve``: ``dataframe_split`` or ``dataframe_records``), one
row per scan, holding the scan itself, never a place on the server:

* ``scan``: the scan file's bytes, base64-encoded: a NIfTI-1/2 (``.nii`` or ``.nii.gz``) or NRRD
  (``.nrrd`` with attached data) file, 3D, or 4D with the channels last; or, for a model with C > 1
  input channels, ``channel0`` ... ``channel<C-1>``: one 3D file per channel, in the model's
  channel order, all on one grid.
* ``mask`` (optional): a region mask on the scan's grid (e.g. its brain mask), base64 like the
  scan: lesions with more than half of their voxels outside it are removed, as ``predict --mask``.
* ``path`` (or ``path0`` ... ``path<C-1>``): a file on the server instead of its bytes, accepted
  only when the server was started with ``MEDSEG_SERVE_ROOT=/folder``: relative paths are taken
  inside that folder, and the path must resolve (symlinks followed) inside it. It is read, never
  written. Without that variable every path is refused (a plain list of strings is read as paths).

The response has one row per scan: ``mask``, the uint8 mask (X, Y, Z) on the scan's own grid and
with its header, base64-encoded in the scan's format (NIfTI in: gzipped NIfTI ``.nii.gz`` out;
NRRD in: NRRD out), and ``lesions``, the lesion table as JSON (a list of
:func:`medseg.inference.lesion_table.lesion_rows` rows). A model with several lesion classes
returns ``mask_<class>`` and ``lesions_<class>`` per class instead.

Uploaded bytes are written into a temporary folder of the request (``medseg-serve-*`` in the
system's temporary directory), where the masks are written too; it is removed when the request
ends, and nothing is written anywhere else. Request parameters (``params``) are the operating
point only, numbers checked here, as ``medseg predict``'s options: ``threshold``, ``min_lesion_mm3``,
``min_confidence`` and ``tta`` (absent or null: the model's own). No parameter names a file: a
client cannot choose where the server reads or writes. A bad request raises an ``MlflowException``
(HTTP 400) with one line naming the row and column, what is wrong and the fix.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
import shutil
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import nibabel as nib
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from medseg import __version__
from medseg.config.plan import Preprocessing
from medseg.errors import MedsegError
from medseg.inference.lesion_table import lesion_rows
from medseg.inference.model import LoadedModel, load_model
from medseg.inference.predictor import Prediction, predict_classes
from medseg.inference.region import read_region
from medseg.io.paths import data_files_in_header, output_suffix
from medseg.io.volumes import save_like
from medseg.nn.checkpoint import load_checkpoint

ROOT_ENV = "MEDSEG_SERVE_ROOT"  # the folder whose files clients may name by path (unset: no paths)
NIFTI1_MAGIC = b"n+1\0"  # single-file NIfTI-1 at byte 344 (the header/image pair "ni1" names a second file: refused)
NIFTI2_MAGIC = b"n+2\0\r\n\x1a\n"  # single-file NIfTI-2 at byte 4
MAX_NRRD_HEADER = 1 << 20  # bytes; a NRRD header ends at its first empty line, long before this
PARAMS = {  # request parameter -> (MLflow type, lowest, highest allowed): predict's operating-point options
    "threshold": (DataType.double, 0.0, 1.0),
    "min_lesion_mm3": (DataType.double, 0.0, 1e9),
    "min_confidence": (DataType.double, 0.0, 1.0),
    "tta": (DataType.boolean, None, None),
}
FIX_SEND = "send the scan file's bytes base64-encoded in 'scan' (a NIfTI .nii/.nii.gz or NRRD .nrrd file)"


class MedsegModel(mlflow.pyfunc.PythonModel):
    """pyfunc model: scans in (base64 NIfTI/NRRD bytes), masks in the same format and lesion tables
    out (see the module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.lm: LoadedModel = load_model(context.artifacts["checkpoint"], "auto")
        self.root = serve_root()

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Segment every row of ``model_input`` (see the module docstring).

        Returns:
            One row per scan: ``mask`` (base64 of the mask file) and ``lesions`` (JSON), or
            ``mask_<class>``/``lesions_<class>`` per class.

        Raises:
            MlflowException: a bad request (parameters given, a row without a scan, not base64, not
            a NIfTI/NRRD file, a path outside ``MEDSEG_SERVE_ROOT`` or without it, an unreadable scan).
        """
        try:
            options = request_options(params)
            table = request_table(model_input)
            if table.empty:  # also what MLflow leaves of a table without any column of the signature
                raise MedsegError(f"request: holds no row with a scan column; {FIX_SEND}, one row per scan")
            with tempfile.TemporaryDirectory(prefix="medseg-serve-") as tmp:
                rows = [
                    self._one(row, i, Path(tmp) / str(i), options) for i, row in enumerate(table.to_dict("records"))
                ]
        except MedsegError as exc:  # a request's mistake: HTTP 400 with the one line, not a 500 with a traceback
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame(rows, columns=output_columns(self.lm.preprocess.classes))

    def _one(self, row: dict[str, Any], index: int, folder: Path, options: dict[str, Any]) -> dict[str, str]:
        """The response row of one request row (``options``: :func:`request_options`); uploads are
        written into ``folder``."""
        folder.mkdir()
        files, names = [], {}
        for column in row_layout(row, index, self.lm.preprocess.in_channels):
            where, value = f"request row {index}, column {column!r}", row[column]
            files.append(
                server_file(value, where, self.root)
                if column.startswith("path")
                else write_upload(value, where, folder / column)
            )
            names[str(files[-1])] = where
        region = None
        try:
            if isinstance(row.get("mask"), str) and row["mask"]:
                upload = write_upload(row["mask"], f"request row {index}, column 'mask'", folder / "mask")
                names[str(upload)] = f"request row {index}, column 'mask'"
                region = read_region(upload, files[0])
            preds = predict_classes(self.lm, files[0] if len(files) == 1 else files, region=region, **options)
        except (
            MedsegError
        ) as exc:  # it names the file it read: the client knows the row and column, not our temporary path
            message = str(exc)
            for path, where in names.items():
                message = message.replace(path, where)
            raise MedsegError(message, exc.exit_code) from None
        return encode_outputs(preds, files[0], folder, self.lm)


def request_options(params: dict[str, Any] | None) -> dict[str, Any]:
    """``predict_classes`` keyword arguments from the request's ``params`` (:data:`PARAMS`; null or
    absent: the model's own setting).

    Raises:
        MedsegError: an unknown parameter (a path above all: never taken), a value of another type
            or out of its range.
    """
    options: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if name not in PARAMS:
            raise MedsegError(
                f"request parameter {str(name)[:40]!r}: not one of {', '.join(PARAMS)} (the operating point; this "
                f"model writes nothing where a client says); {FIX_SEND} and read the mask from the response"
            )
        if value is None:
            continue
        kind, low, high = PARAMS[name]
        if kind == DataType.boolean:
            ok = isinstance(value, (bool, np.bool_))
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= float(value) <= high
        if not ok:
            span = "true or false" if kind == DataType.boolean else f"a number from {low:g} to {high:g}"
            raise MedsegError(f"request parameter {name!r}: {str(value)[:40]!r} is not {span}")
        options[name] = bool(value) if kind == DataType.boolean else float(value)
    return options


def serve_root() -> Path | None:
    """The resolved folder of ``$MEDSEG_SERVE_ROOT``, or None when unset (no paths accepted).

    Raises:
        MedsegError: the variable names no folder.
    """
    value = os.environ.get(ROOT_ENV)
    if not value:
        return None
    root = Path(value).resolve()
    if not root.is_dir():
        raise MedsegError(
            f"{ROOT_ENV}={value}: not a folder; set it to the folder whose scans clients may name, or unset it"
        )
    return root


def request_table(model_input: Any) -> pd.DataFrame:
    """The request as a table: a DataFrame as is, a mapping of columns, a list of rows, or a list
    of strings (read as server paths: the input of earlier medseg models)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        return pd.DataFrame({k: v if isinstance(v, (list, tuple)) else [v] for k, v in model_input.items()})
    items = list(model_input)
    return pd.DataFrame({"path": items}) if all(isinstance(x, str) for x in items) else pd.DataFrame(items)


def row_layout(row: dict[str, Any], index: int, channels: int) -> list[str]:
    """The columns that hold the scan of ``row``: ``scan``, ``channel0..``, ``path`` or ``path0..``.

    Raises:
        MedsegError: none of these, or several kinds mixed.
    """
    per_channel = channels > 1
    layouts = [["scan"], ["path"]] + (
        [[f"channel{k}" for k in range(channels)], [f"path{k}" for k in range(channels)]] if per_channel else []
    )
    known = {c for layout in layouts for c in layout}
    given = sorted(c for c, v in row.items() if c in known and isinstance(v, str) and v)
    for layout in layouts:
        if set(layout) == set(given):
            return layout
    channels_fix = f", or one file per channel in channel0..channel{channels - 1}" if per_channel else ""
    raise MedsegError(
        f"request row {index}: holds {', '.join(given) or 'no scan column'}; {FIX_SEND}{channels_fix} "
        f"(paths in 'path' only on servers started with {ROOT_ENV})"
    )


def write_upload(text: str, where: str, stem: Path) -> Path:
    """Decode a base64 scan and write it as ``stem`` plus the suffix of its format (readers
    choose by suffix).

    Raises:
        MedsegError: not base64, or not a NIfTI/NRRD file.
    """
    try:
        data = base64.b64decode("".join(text.split()), validate=True)  # whitespace: encoders that wrap lines
    except (binascii.Error, ValueError):
        looks_like_path = "/" in text[:4096] or "\\" in text[:4096] or text.endswith((".nii", ".nii.gz", ".nrrd"))
        hint = (
            f" (it looks like a path: paths go in 'path', on servers started with {ROOT_ENV})"
            if looks_like_path
            else ""
        )
        raise MedsegError(f"{where}: is not base64{hint}; {FIX_SEND}") from None
    path = stem.with_name(stem.name + scan_format(data, where))
    path.write_bytes(data)
    return path


def server_file(value: str, where: str, root: Path | None) -> Path:
    """A scan named by path: inside ``root`` once resolved (symlinks followed), a file, its
    content of the format its suffix says.

    Raises:
        MedsegError: no root (paths refused), a path outside it, no such file, another format.
    """
    if root is None:
        raise MedsegError(
            f"{where}: paths are refused (this server reads no files a client names); {FIX_SEND}, "
            f"or start the server with {ROOT_ENV}=<folder> to allow paths inside that folder"
        )
    try:
        path = (root / value).resolve()
    except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
        path = None
    if path is None or not path.is_relative_to(root):
        raise MedsegError(
            f"{where}: {value[:80]!r} lies outside the folder this server reads ({ROOT_ENV}); "
            "pass a path inside it (relative paths are taken inside it), or send the file's bytes in 'scan'"
        )
    if not path.is_file():
        raise MedsegError(
            f"{where}: {value[:80]!r}: no such file in the folder this server reads; pass a file inside it"
        )
    with path.open("rb") as fh:
        fmt = scan_format(fh.read(MAX_NRRD_HEADER), where)
    if not path.name.endswith(fmt):
        raise MedsegError(f"{where}: {value[:80]!r} holds a {fmt} file under another suffix; rename it to end in {fmt}")
    return path


def scan_format(head: bytes, where: str) -> str:
    """``.nii``, ``.nii.gz`` or ``.nrrd`` from a file's first bytes. (nibabel and SimpleITK pick
    a reader by file name; an upload has none, so the format is told by its magic bytes.)

    Raises:
        MedsegError: none of these formats, or a NRRD whose voxels are in another file.
    """
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(wbits=31).decompress(head, 548)  # gzip: only the NIfTI header is inflated
        except zlib.error:
            inner = b""
        if _is_nifti(inner):
            return ".nii.gz"
    elif _is_nifti(head):
        return ".nii"
    elif head.startswith(b"NRRD"):
        _check_nrrd(head, where)
        return ".nrrd"
    raise MedsegError(f"{where}: is not a single-file NIfTI (.nii, .nii.gz) or a NRRD (.nrrd) file; {FIX_SEND}")


def _is_nifti(head: bytes) -> bool:
    return (len(head) >= 348 and head[344:348] == NIFTI1_MAGIC) or head[4:12] == NIFTI2_MAGIC


def _check_nrrd(head: bytes, where: str) -> None:
    """Refuse a NRRD header that points at other files (``data file``: detached voxels, which
    would have the server read a file the client names). (SimpleITK follows such fields without
    an option to refuse them, hence this reading of the header's text.)"""
    end = re.search(rb"\r?\n\r?\n", head[:MAX_NRRD_HEADER])
    if end is None:
        raise MedsegError(
            f"{where}: the NRRD header does not end (no empty line in its first {MAX_NRRD_HEADER} bytes); "
            "send a NRRD file with its data attached"
        )
    if data_files_in_header(head[: end.start()].decode("latin-1"), nrrd=True):
        raise MedsegError(
            f"{where}: is a NRRD header whose voxels are in another file ('data file'); "
            "send one .nrrd file with its data attached"
        )


def encode_outputs(preds: list[Prediction], reference: Path, folder: Path, lm: LoadedModel) -> dict[str, str]:
    """The response row: each class's mask written with ``reference``'s header into ``folder``
    (same format), base64-encoded, and its lesion table as JSON."""
    suffix = output_suffix(reference)
    names = output_names(lm.preprocess.classes)
    row = {}
    for k, (pred, name) in enumerate(zip(preds, names)):
        out = folder / f"mask{k}{suffix}"  # file names of our own: class names stay out of paths
        save_like(pred.mask, reference, out)
        row[f"mask{name}"] = base64.b64encode(out.read_bytes()).decode("ascii")
        row[f"lesions{name}"] = json.dumps(lesion_rows(pred.mask, pred.prob, pred.affine, lm.connectivity))
    return row


def output_names(classes: tuple[str, ...]) -> list[str]:
    """Column suffixes: ``""`` for a one-class model, ``_<class>`` per class otherwise."""
    return [""] if len(classes) == 1 else [f"_{c}" for c in classes]


def output_columns(classes: tuple[str, ...]) -> list[str]:
    """The response's columns, in order."""
    return [f"{kind}{name}" for name in output_names(classes) for kind in ("mask", "lesions")]


def signature(pre: Preprocessing) -> ModelSignature:
    """Inputs: ``scan`` (and ``channel0..`` for C > 1 channels), ``path`` (``path0..``), ``mask``,
    all optional strings (a row uses one layout); outputs: the mask and lesion columns; params:
    :data:`PARAMS`, null by default (the model's own)."""
    c = pre.in_channels
    names = ["scan", *(f"channel{k}" for k in range(c) if c > 1), "path", *(f"path{k}" for k in range(c) if c > 1)]
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, n, required=False) for n in [*names, "mask"]]),
        outputs=Schema([ColSpec(DataType.string, n) for n in output_columns(pre.classes)]),
        params=ParamSchema([ParamSpec(name, kind, None) for name, (kind, _, _) in PARAMS.items()]),
    )


def input_example(pre: Preprocessing) -> pd.DataFrame:
    """One request row: an 8x8x8 noise volume at the model's spacing, as base64 of a gzipped
    NIfTI (one per channel, ``channel0..``, for C > 1 channels)."""
    rng = np.random.default_rng(0)
    affine = np.diag([*pre.spacing, 1.0])
    columns = ["scan"] if pre.in_channels == 1 else [f"channel{k}" for k in range(pre.in_channels)]
    row = {}
    for column in columns:
        img = nib.Nifti1Image(rng.normal(100.0, 10.0, size=(8, 8, 8)).astype(np.float32), affine)
        row[column] = base64.b64encode(gzip.compress(img.to_bytes())).decode("ascii")
    return pd.DataFrame([row])


ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # models from code: no CloudPickle of MedsegModel


def save_pyfunc(checkpoint: Path, dest: Path) -> Path:
    """Write the MLflow model folder for ``checkpoint`` into ``dest`` (replacing it): the code of
    :data:`ENTRY`, the checkpoint as the ``checkpoint`` artifact, a signature (:func:`signature`)
    and an input example (:func:`input_example`); no pickled Python object.

    Raises:
        MedsegError: the checkpoint does not load (:func:`medseg.nn.checkpoint.load_checkpoint`).
    """
    pre = load_checkpoint(checkpoint).preprocess
    shutil.rmtree(dest, ignore_errors=True)
    mlflow.pyfunc.save_model(
        str(dest),
        python_model=str(ENTRY),
        artifacts={"checkpoint": str(checkpoint)},
        signature=signature(pre),
        input_example=input_example(pre),
        pip_requirements=[f"medseg=={__version__}"],
    )
    return dest


MLFLOW_FOLDER = "mlflow_model"  # the folder ``medseg export --format mlflow`` writes inside ``--out``


def export_pyfunc(checkpoint: Path, out: Path) -> Path:
    """``medseg export --format mlflow``: the MLflow model of one checkpoint as ``out/mlflow_model/``
    (:func:`save_pyfunc`), for ``mlflow models serve -m out/mlflow_model`` without a tracking
    store. Written beside and renamed into place; an earlier export there is replaced.

    Raises:
        MedsegError: not one checkpoint file, or ``out/mlflow_model`` is something else (not an
            MLflow model folder) or holds the checkpoint.
    """
    if not checkpoint.is_file():
        raise MedsegError(
            f"{checkpoint}: --format mlflow exports one checkpoint file (e.g. runs/<run>/best.pt); an MLflow URI "
            "already is an MLflow model (serve it as it is), and an ensemble has no MLflow model: pick one member"
        )
    dest = out / MLFLOW_FOLDER
    if dest.exists() and not (dest.is_dir() and (dest / "MLmodel").is_file()):
        raise MedsegError(f"{dest}: exists and is not an MLflow model folder; move it away or pick another --out")
    if checkpoint.resolve().is_relative_to(dest.resolve()):
        raise MedsegError(f"{checkpoint}: lies inside {dest}, which the export replaces; copy it elsewhere first")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{MLFLOW_FOLDER}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        save_pyfunc(checkpoint, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
