"""CUDA paths (skipped without a GPU): SlidingWindowInfererAdapt with bf16 gives the same mask as
the CPU path for a network that outputs a fixed function of its input."""

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.inference.model import LoadedModel
from medseg.inference.predictor import predict_volume
from medseg.io.geometry import ras_spacing
from tests.test_inference_geometry import Threshold, loaded, scan

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_prediction_matches_cpu(tmp_path, affine):
    path, _ = scan(tmp_path, affine)
    spacing = ras_spacing(nib.load(str(path)).affine)
    cpu = predict_volume(loaded(spacing), path)
    gpu_model = loaded(spacing)
    gpu = LoadedModel(
        Threshold().cuda(),
        gpu_model.spacing,
        gpu_model.normalize,
        gpu_model.roi,
        gpu_model.icfg,
        0.5,
        0.0,
        26,
        torch.device("cuda"),
    )
    assert np.array_equal(predict_volume(gpu, path).mask, cpu.mask)
