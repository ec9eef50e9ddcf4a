"""The trained model as an MLflow pyfunc model (models from code, see :mod:`medseg.inference.pyfunc_entry`): ``mlflow.pyfunc.load_model("runs:/<id>/model")``
gives an object whose ``predict`` segments scans, so MLflow's own tooling (registry, model
serving, ``mlflow models predict``) can use medseg models. The medseg checkpoint travels inside as
an artifact (``model/artifacts/best.pt``), which is also what ``medseg predict runs:/...`` loads.

MLflow's ``mlflow.pytorch`` flavour would pickle the whole network object and lose the
preprocessing and operating point the checkpoint carries, hence a pyfunc wrapper.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import mlflow.pyfunc
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

from medseg import __version__
from medseg.inference.model import load_model
from medseg.inference.predictor import predict_classes
from medseg.io.paths import strip_suffix
from medseg.io.volumes import save_like


class MedsegModel(mlflow.pyfunc.PythonModel):
    """pyfunc model: input = scan paths (a list, or a table with a ``scan`` column); output = one
    uint8 mask (X, Y, Z) per scan, on the scan's own grid ((C, X, Y, Z) for C lesion classes). ``params={"out_dir": DIR}`` also writes
    the masks there, with the scans' headers."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.lm = load_model(context.artifacts["checkpoint"], "auto")

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: list[str], params: Optional[dict[str, Any]] = None):  # no return hint: MLflow has no schema for arrays
        scans = list(model_input["scan"]) if hasattr(model_input, "columns") else list(model_input)
        out_dir = (params or {}).get("out_dir")
        masks = []
        for scan in scans:
            preds = predict_classes(self.lm, Path(scan))
            names = [""] if len(preds) == 1 else [f"_{cls}" for cls in self.lm.classes]
            if out_dir:
                for pred, suffix in zip(preds, names):
                    save_like(pred.mask, Path(scan), Path(out_dir) / f"{strip_suffix(scan)}{suffix}.nii.gz")
            masks.append(preds[0].mask if len(preds) == 1 else np.stack([p.mask for p in preds]))
        return masks


ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # models from code: no CloudPickle of MedsegModel
INPUT_EXAMPLE = ["/data/scans/case_001.nii.gz"]  # a list of scan paths
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.string)]), outputs=Schema([ColSpec(AnyType())]))


def save_pyfunc(checkpoint: Path, dest: Path) -> Path:
    """Write the MLflow model folder for ``checkpoint`` into ``dest`` (replacing it): the code of
    :data:`ENTRY`, the checkpoint as the ``checkpoint`` artifact, a signature (a list of scan
    paths in) and an input example; no pickled Python object."""
    shutil.rmtree(dest, ignore_errors=True)
    signature_log = logging.getLogger("mlflow.models.signature")
    level = signature_log.level
    signature_log.setLevel(logging.ERROR)  # MLflow runs predict on the placeholder example path and warns that it failed
    try:
        mlflow.pyfunc.save_model(str(dest), python_model=str(ENTRY), artifacts={"checkpoint": str(checkpoint)},
                                 signature=SIGNATURE, input_example=INPUT_EXAMPLE, pip_requirements=[f"medseg=={__version__}"])
    finally:
        signature_log.setLevel(level)
    return dest
