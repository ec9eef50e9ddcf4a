"""medseg predict against plain MONAI calls, same volume, network and settings, one process.

    .venv/bin/python benchmarks/inference.py [--runs 3] [--extra]

Volume: the first BraTS FLAIR under $MEDSEG_REAL_DATA (240x240x155), else a synthetic one of that
size. Network: MONAI UNet 16-32-64-128-256, 2 residual units, random weights with the output bias
shifted so the mask covers a small share of the scan, as a trained model's would.
roi 96^3, overlap 0.25, Gaussian blending, sw_batch_size 4, no TTA.
Reference: LoadImaged, EnsureChannelFirstd, Orientationd, Spacingd, NormalizeIntensityd,
sliding_window_inference, Activationsd, Invertd, AsDiscreted, SaveImaged.
medseg: the whole ``predict`` (load -> preprocess -> window -> restore geometry -> write mask and
lesion table) with the preprocessing of configs/brats_*.yaml (background: min, so the head is cropped
before the window, as nnU-Net does), in bf16 where the CPU has it and in float32; and in float32
without the crop (background: zero: the whole volume, as the reference). Wall time, CPU seconds
(user + system, all threads: steadier than wall time on a shared machine) and peak RSS above the idle
process, medians of interleaved runs.
``--extra`` also times medseg with overlap 0.5 and with mirror TTA (one run each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    SaveImaged,
    Spacingd,
)
from report import add_markdown_option, table, write_markdown
from rss import rss_mb  # benchmarks/rss.py (the scripts run as python benchmarks/NAME.py)

from medseg.config.schema import ExperimentConfig
from medseg.data.synthetic import write_dataset
from medseg.inference.batch import PredictOptions, predict_files
from medseg.io.geometry import ras_spacing, read_geometry
from medseg.nn.checkpoint import write_payload
from medseg.nn.window import use_bf16

ROI, OVERLAP, SW_BATCH = (96, 96, 96), 0.25, 4


def measure(fn) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB above the RSS at the start, CPU seconds user + system of the
    process's threads), RSS sampled every 20 ms."""
    base, peak, done = rss_mb(), [0.0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    start, cpu0 = time.perf_counter(), os.times()
    fn()
    seconds, cpu1 = time.perf_counter() - start, os.times()
    done.set()
    thread.join()
    return seconds, max(peak[0], rss_mb()) - base, (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)


def volume(tmp: Path) -> Path:
    root = os.environ.get("MEDSEG_REAL_DATA")
    if root:
        found = sorted(Path(root).rglob("Flair_subtrMeanDivStd.nii.gz"))
        if found:
            return found[0]
    write_dataset(tmp / "synth", 1, seed=0, shape=(240, 240, 155), spacing=(1.0, 1.0, 1.0))
    return tmp / "synth" / "imagesTr" / "synth_000.nii.gz"


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    net = UNet(3, 1, 1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).eval()
    # random weights mark about half of the scan as lesion; shift the output bias so that, like a
    # trained model's, the mask is a small part of the scan (same network for both pipelines)
    last_bias = [p for name, p in net.named_parameters() if name.endswith("bias")][-1]
    with torch.no_grad():
        last_bias -= 2.5
    return net


def medseg_checkpoint(
    net: torch.nn.Module, spacing, tmp: Path, overlap: float, tta: bool, amp: str = "auto", background: str = "min"
) -> Path:
    """A medseg checkpoint of ``net``. ``background="min"`` as configs/brats_*.yaml: the scan's minimum is
    the background (z-scored BraTS scans), cropped away before the window (nnU-Net's crop); ``"zero"``
    keeps the whole z-scored volume, as the MONAI reference does."""
    cfg = ExperimentConfig.model_validate(
        {
            "data": {"dataset": str(tmp)},
            "model": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
            "sampling": {"patch_size": list(ROI)},
            "inference": {"roi_size": list(ROI), "overlap": overlap, "sw_batch_size": SW_BATCH, "tta": tta, "amp": amp},
        }
    )
    path = tmp / f"medseg_{overlap}_{tta}_{amp}_{background}.pt"
    write_payload(
        {
            "state_dict": net.state_dict(),
            "config": cfg.model_dump(mode="json"),
            "preprocess": {
                "spacing": list(spacing),
                "normalize": "zscore_nonzero",
                "in_channels": 1,
                "background": background,
            },
            "operating_point": {"threshold": 0.5, "min_lesion_mm3": 0.0},
        },
        path,
    )
    return path


def reference(net: torch.nn.Module, image: Path, spacing, out: Path) -> None:
    pre = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=spacing, mode="bilinear"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ]
    )
    data = pre({"image": str(image)})
    with torch.no_grad():
        data["pred"] = sliding_window_inference(
            data["image"][None], ROI, SW_BATCH, net, overlap=OVERLAP, mode="gaussian"
        )[0]
    post = Compose(
        [
            Activationsd("pred", sigmoid=True),
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", threshold=0.5),
            SaveImaged(
                "pred",
                output_dir=str(out),
                output_postfix="seg",
                separate_folder=False,
                output_dtype=np.uint8,
                print_log=False,
            ),
        ]
    )
    post(data)


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--extra", action="store_true")
    add_markdown_option(parser)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-"))
    image = volume(tmp)
    shape, affine = read_geometry(image)
    spacing = ras_spacing(affine)
    net = network()
    ckpts = {
        "medseg": medseg_checkpoint(net, spacing, tmp, OVERLAP, False),
        "medseg_fp32": medseg_checkpoint(net, spacing, tmp, OVERLAP, False, amp="off"),
        "medseg_fp32_nocrop": medseg_checkpoint(net, spacing, tmp, OVERLAP, False, amp="off", background="zero"),
    }
    print(
        f"volume {image.name} {shape}, spacing {spacing}, torch threads {torch.get_num_threads()}, "
        f"medseg amp auto -> bf16: {use_bf16(torch.device('cpu'), 'auto')}"
    )
    # same outputs as the reference (the mask only); the lesion table is timed separately below
    mask_only = PredictOptions(table=False)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in (*ckpts, "reference")}
    for i in range(args.runs + 1):  # run 0 warms caches up and is not counted
        line = []
        for name in results:
            if name == "reference":
                res = measure(lambda: reference(net, image, spacing, tmp / f"r{i}"))
            else:
                res = measure(
                    lambda: predict_files(ckpts[name], [str(image)], tmp / f"{name}{i}", "cpu", mask_only, False)
                )
            if i:
                results[name].append(res)
            line.append(f"{name} {res[0]:.1f} s (CPU {res[2]:.1f} s) {res[1]:.0f} MB")
        print(f"run {i}: " + " | ".join(line), flush=True)
    med = {k: tuple(statistics.median(r[j] for r in v) for j in range(3)) for k, v in results.items()}
    ref_s, ref_mb, ref_cpu = med["reference"]
    for name, (sec, mb, cpu) in med.items():
        print(
            f"{name:18s} {sec:6.2f} s  CPU {cpu:6.1f} s  peak +{mb:4.0f} MB   ratio to reference: time "
            f"{sec / ref_s:.2f}x, CPU seconds {cpu / ref_cpu:.2f}x, peak RSS {mb / ref_mb:.2f}x"
        )
    rows = [
        (name, f"{sec:.2f} s", f"{sec / ref_s:.2f}", f"{cpu / ref_cpu:.2f}", f"+{mb:.0f} MB", f"{mb / ref_mb:.2f}")
        for name, (sec, mb, cpu) in med.items()
    ]
    write_markdown(
        args.markdown,
        "Inference speed and memory",
        table(("pipeline", "wall time", "ratio", "CPU s ratio", "peak RSS", "ratio"), rows),
        [
            f"Volume {image.name} {shape}, spacing {spacing}, torch threads {torch.get_num_threads()}, medians of "
            f"{args.runs} "
            "interleaved runs; reference = plain MONAI (LoadImaged ... sliding_window_inference, Invertd, SaveImaged); "
            "medseg = the BraTS configs' preprocessing (background: min, the head cropped before the window), "
            "inference.amp auto; medseg_fp32 = amp off; medseg_fp32_nocrop = amp off, background zero (the whole "
            "volume, as the reference)."
        ],
    )
    s, _, _ = measure(
        lambda: predict_files(ckpts["medseg"], [str(image)], tmp / "table", "cpu", PredictOptions(), False)
    )
    print(f"medseg with the per-lesion table: {s:.2f} s")
    ours = np.asanyarray(nib.load(str(tmp / "medseg1" / image.name)).dataobj)
    print(f"mask voxels medseg {int(ours.sum())} of {ours.size}")
    if args.extra:
        for overlap, tta in ((0.5, False), (OVERLAP, True)):
            path = medseg_checkpoint(net, spacing, tmp, overlap, tta)
            s, m, _ = measure(
                lambda: predict_files(path, [str(image)], tmp / f"x{overlap}{tta}", "cpu", PredictOptions(), False)
            )
            print(f"medseg overlap {overlap} tta {tta}: {s:.1f} s, peak +{m:.0f} MB")


if __name__ == "__main__":
    main()
