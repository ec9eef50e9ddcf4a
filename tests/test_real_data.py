"""Real scans from $MEDSEG_REAL_DATA (skipped when unset): every case reads, and a prediction
comes back on the scan's exact grid (NIfTI and NRRD, 1 mm BraTS to 6.5 mm-slice NRRD)."""

import csv

import numpy as np
import pytest
import torch

from medseg.config import InferenceConfig
from medseg.data import ras_spacing
from medseg.inference import LoadedModel
from medseg.io import read_geometry
from medseg.predict import PredictOptions, _write_one


class Bright(torch.nn.Module):
    def forward(self, x):
        return 10.0 * (x - 1.0)


def cases(root):
    with open(root / "manifest.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.real
def test_every_real_case_predicts_on_its_own_grid(real_data, tmp_path):
    rows = cases(real_data)
    assert len(rows) == 11
    icfg = InferenceConfig(overlap=0.0, sw_batch_size=2)
    for row in rows:
        image = real_data / row["images"].split(";")[0]
        shape, affine = read_geometry(image)
        lm = LoadedModel(Bright(), ras_spacing(affine), "zscore_nonzero", (64, 64, 32), icfg, 0.5, 0.0, 26, torch.device("cpu"))
        out = _write_one(lm, image, tmp_path / row["case"], PredictOptions())
        mask_shape, mask_affine = read_geometry(tmp_path / row["case"] / out["mask"].split("/")[-1])
        assert tuple(mask_shape) == tuple(shape[:3]), row["case"]
        assert np.allclose(mask_affine, affine, atol=1e-4), row["case"]
        label_shape, label_affine = read_geometry(real_data / row["label"])
        assert tuple(label_shape) == tuple(shape[:3]) and np.allclose(label_affine, affine, atol=1e-3), row["case"]
