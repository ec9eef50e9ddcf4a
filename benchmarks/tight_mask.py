"""What a tighter brain mask costs, and whether predict flags it.

MSLesSeg's held-out patient (configs/ms_flair.yaml's data.exclude_cases) with its brain mask eroded
by 0, 3, 5, 8 and 12 voxels (the scan's background value outside), as a skull-stripping tool tighter
than the training site's would leave it; each predicted with ``medseg predict MODEL`` and scored
with ``medseg evaluate``, as a user would. Prints one row per erosion: the share of the body kept,
Dice, lesion recall, FP per scan, F1, and predict's ``unlike_training`` column.

    MEDSEG_REAL_DATA=... python benchmarks/tight_mask.py --model runs/ms_flair/seeds3-s0 --out /tmp/tight
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medseg.config.load import load_config
from medseg.data.sources.discover import from_config

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ms_flair.yaml"
CASE = "msl_P39_T1"


def eroded_scans(out: Path, erosions: list[int]) -> dict[str, float]:
    """``out/scans/<case>_eNN.nii.gz`` and its label under ``out/labels``; returns the share of the
    body each keeps."""
    case = {c.case_id: c for c in from_config(load_config(CONFIG, ["data.exclude_cases=null"]).data).cases}[CASE]
    img = nib.load(str(case.images[0]))
    x = np.asarray(img.dataobj, dtype=np.float32)
    body = x > x.min()
    label = nib.load(str(case.label))
    kept = {}
    for n in erosions:
        name = f"{CASE}_e{n:02d}.nii.gz"
        inside = ndimage.binary_erosion(body, iterations=n) if n else body
        for folder, image in (
            ("scans", nib.Nifti1Image(np.where(inside, x, x.min()), img.affine, img.header)),
            ("labels", label),
        ):
            (out / folder).mkdir(parents=True, exist_ok=True)
            nib.save(image, str(out / folder / name))
        kept[name] = float(inside.sum() / body.sum())
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint or a folder of runs (an ensemble)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--erode", type=int, nargs="+", default=[0, 3, 5, 8, 12])
    args = parser.parse_args()
    kept = eroded_scans(args.out, args.erode)
    medseg = [sys.executable, "-m", "medseg"]
    subprocess.run(
        [*medseg, "predict", args.model, str(args.out / "scans"), "--out", str(args.out / "pred"), "--quiet"],
        check=False,
    )
    subprocess.run(
        [
            *medseg,
            "evaluate",
            str(args.out / "pred"),
            str(args.out / "labels"),
            "--out",
            str(args.out / "eval"),
            "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with (args.out / "pred" / "summary.csv").open() as fh:
        flags = {Path(r["scan"]).name: r["unlike_training"] for r in csv.DictReader(fh)}
    print("| erosion (voxels) | body kept | Dice | lesion recall | FP/scan | F1 | unlike_training |")
    print("|---|---|---|---|---|---|---|")
    with (args.out / "eval" / "cases.csv").open() as fh:
        for r in csv.DictReader(fh):
            name = f"{r['case']}.nii.gz"
            cells = [float(r[k]) for k in ("dice", "lesion_recall", "fp_per_scan", "lesion_f1")]
            flag = flags.get(name, "").split(" (")[0] or "-"
            print(
                f"| {int(name.split('_e')[1][:2])} | {kept[name]:.0%} | {cells[0]:.2f} | {cells[1]:.2f} | "
                f"{cells[2]:.0f} | {cells[3]:.2f} | {flag} |"
            )


if __name__ == "__main__":
    main()
