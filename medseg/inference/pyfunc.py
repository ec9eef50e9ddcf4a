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
returns ``mask_<class>`` and ``lesions_<class>`` per class instead. ``unlike_training`` is empty, or
says how the scan lies outside the training scans' profile range (:mod:`medseg.data.profile`), as
``medseg predict``'s warning does.

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
import gzip
import json
import shutil
import tempfile
import uuid
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
from medseg.inference.uploads import (
    FIX_SEND,
    PARAMS,
    request_options,
    request_table,
    row_layout,
    serve_root,
    server_file,
    write_upload,
)
from medseg.io.paths import output_suffix
from medseg.io.volumes import save_like
from medseg.nn.checkpoint import load_checkpoint


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
    row["unlike_training"] = "; ".join(preds[0].unlike_training)
    return row


def output_names(classes: tuple[str, ...]) -> list[str]:
    """Column suffixes: ``""`` for a one-class model, ``_<class>`` per class otherwise."""
    return [""] if len(classes) == 1 else [f"_{c}" for c in classes]


def output_columns(classes: tuple[str, ...]) -> list[str]:
    """The response's columns, in order."""
    return [*(f"{kind}{name}" for name in output_names(classes) for kind in ("mask", "lesions")), "unlike_training"]


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
