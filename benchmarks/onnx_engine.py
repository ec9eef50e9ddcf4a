"""onnxruntime against torch in medseg predict: same checkpoint, volume and settings, one process.

    .venv/bin/python benchmarks/onnx_engine.py [--runs 5] [--markdown FILE]

(Not named onnx.py: run as a script, that name would shadow the onnx package for the export.)

Volume: the first BraTS FLAIR under $MEDSEG_REAL_DATA (240x240x155), else a synthetic one of that
size. Network: MONAI UNet 16-32-64-128-256, 2 residual units, random weights with the output bias
shifted so the mask covers a small share of the scan (as benchmarks/inference.py), roi 96^3,
overlap 0.25, Gaussian blending, sw_batch_size 4, no TTA, float32 on both sides (``inference.amp:
off``; bf16 autocast is torch's only). The ONNX file is the checkpoint exported by
:func:`medseg.inference.export.export_onnx` (what ``medseg export`` writes).

Two timings per engine, interleaved, one warm-up run left out, medians: the whole ``predict`` of
the scan (read, preprocess, sliding window, back to the scan's grid, write the mask) and the
sliding window alone on the preprocessed volume (the network's forward passes plus blending). The
ratio is onnxruntime / torch: below 1, onnxruntime is faster. Also printed: the largest
probability difference and the masks' agreement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime
import torch
from monai.networks.nets import UNet
from monai.transforms import Compose
from report import add_markdown_option, table, write_markdown

from medseg.config.schema import ExperimentConfig
from medseg.data.case import image_entry
from medseg.data.synthetic import write_dataset
from medseg.inference.batch import PredictOptions, predict_files
from medseg.inference.export import export_onnx
from medseg.inference.model import LoadedModel, load_model
from medseg.inference.onnx_model import load_onnx_model
from medseg.io.geometry import ras_spacing, read_geometry
from medseg.nn.checkpoint import write_payload
from medseg.nn.window import sliding_window_probs
from medseg.transforms.preprocess import preprocess

ROI, OVERLAP, SW_BATCH = (96, 96, 96), 0.25, 4
ENGINES = ("torch", "onnxruntime")


def volume(tmp: Path) -> Path:
    """The first BraTS FLAIR under $MEDSEG_REAL_DATA, else a synthetic 240x240x155 scan."""
    root = os.environ.get("MEDSEG_REAL_DATA")
    found = sorted(Path(root).rglob("Flair_subtrMeanDivStd.nii.gz")) if root else []
    if found:
        return found[0]
    write_dataset(tmp / "synth", 1, seed=0, shape=(240, 240, 155), spacing=(1.0, 1.0, 1.0))
    return tmp / "synth" / "imagesTr" / "synth_000.nii.gz"


def checkpoint(spacing: tuple[float, float, float], tmp: Path) -> Path:
    """A medseg checkpoint of the benchmark's UNet (random weights, output bias shifted by -2.5)."""
    torch.manual_seed(0)
    net = UNet(3, 1, 1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    with torch.no_grad():
        [p for name, p in net.named_parameters() if name.endswith("bias")][-1].sub_(2.5)
    cfg = ExperimentConfig.model_validate(
        {
            "data": {"dataset": str(tmp)},
            "model": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
            "sampling": {"patch_size": list(ROI)},
            "inference": {"roi_size": list(ROI), "overlap": OVERLAP, "sw_batch_size": SW_BATCH, "amp": "off"},
        }
    )
    payload = {
        "state_dict": net.state_dict(),
        "config": cfg.model_dump(mode="json"),
        "preprocess": {"spacing": list(spacing), "normalize": "zscore_nonzero", "in_channels": 1},
        "operating_point": {"threshold": 0.5, "min_lesion_mm3": 0.0},
    }
    write_payload(payload, tmp / "best.pt")
    return tmp / "best.pt"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def window_probs(lm: LoadedModel, image: torch.Tensor) -> torch.Tensor:
    """The sliding window alone: (1, 1, X, Y, Z) probabilities of the preprocessed volume."""
    return sliding_window_probs(lm.model, image[None], lm.icfg, lm.plan.roi_size, lm.device)


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    add_markdown_option(parser)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="medseg-onnx-bench-"))
    image = volume(tmp)
    shape, affine = read_geometry(image)
    ckpt = checkpoint(ras_spacing(affine), tmp)
    model = {"torch": str(ckpt), "onnxruntime": str(export_onnx(ckpt, tmp / "exported").path)}
    loaded = {"torch": load_model(ckpt, "cpu"), "onnxruntime": load_onnx_model(model["onnxruntime"], "cpu")}
    pre = loaded["torch"].plan.preprocess
    pre_image = Compose(preprocess(pre, with_label=False))({"image": image_entry([image])})["image"]
    print(
        f"volume {image.name} {shape} -> window input {tuple(pre_image.shape[1:])}; torch {torch.__version__} "
        f"threads {torch.get_num_threads()}; onnxruntime {onnxruntime.__version__} "
        f"({onnxruntime.get_device()}, {os.cpu_count()} cores)"
    )
    times: dict[str, dict[str, list[float]]] = {e: {"predict": [], "window": []} for e in ENGINES}
    opts = PredictOptions(table=False)
    for run in range(args.runs + 1):  # run 0 warms up and is not counted
        for engine in ENGINES:
            out = tmp / f"{engine}{run}"
            total = timed(lambda: predict_files(model[engine], [str(image)], out, "cpu", opts, False, engine=engine))
            window = timed(lambda: window_probs(loaded[engine], pre_image))
            if run:
                times[engine]["predict"].append(total)
                times[engine]["window"].append(window)
            print(f"run {run} {engine:12s} predict {total:6.2f} s  window {window:6.2f} s", flush=True)
    med = {e: {k: statistics.median(v) for k, v in times[e].items()} for e in ENGINES}
    probs = [window_probs(loaded[e], pre_image) for e in ENGINES]
    masks = [np.asanyarray(nib.load(str(tmp / f"{e}1" / image.name)).dataobj) > 0 for e in ENGINES]
    agree = float((masks[0] == masks[1]).mean())
    diff = float((probs[0] - probs[1]).abs().max())
    rows = [
        (
            f"`predict --engine {e}`",
            f"{med[e]['predict']:.2f} s",
            f"{med[e]['predict'] / med['torch']['predict']:.2f}",
            f"{med[e]['window']:.2f} s",
            f"{med[e]['window'] / med['torch']['window']:.2f}",
        )
        for e in ENGINES
    ]
    for row in rows:
        print("  ".join(row))
    print(f"largest probability difference {diff:.2g}; masks agree on {agree:.6%} of the voxels")
    write_markdown(
        args.markdown,
        "onnxruntime against torch",
        table(("engine", "predict", "ratio", "sliding window", "ratio"), rows),
        [
            f"Volume {image.name} {shape}, UNet 16-32-64-128-256 (2 residual units), roi 96³, overlap 0.25, "
            f"Gaussian, sw_batch_size 4, float32; torch threads {torch.get_num_threads()}, onnxruntime "
            f"{onnxruntime.__version__} CPU; medians of {args.runs} interleaved runs; ratio = onnxruntime / torch. "
            f"Largest probability difference {diff:.2g}; masks agree on {agree:.4%} of the voxels."
        ],
    )


if __name__ == "__main__":
    main()
