"""Batch prediction: inputs -> masks (+ probability map, lesion instance map, per-lesion table)
on each scan's own grid, a run summary, failures reported and skipped, atomic writes.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from medseg.data.case import Case
from medseg.errors import MedsegError
from medseg.inference.lesion_table import lesion_rows, write_table
from medseg.inference.model import LoadedModel, load_model
from medseg.inference.predictor import predict_classes
from medseg.io.geometry import voxel_volume
from medseg.io.paths import IMAGE_SUFFIXES, output_suffix, strip_suffix
from medseg.io.volumes import save_like
from medseg.io.write import remove_partials, write_csv
from medseg.lesions import label_lesions
from medseg.runtime.distributed import finish, gather, rank_and_world

SUMMARY_FIELDS = ("scan", "mask", "lesions", "lesion_volume_mm3", "seconds")


@dataclass(frozen=True)
class PredictOptions:
    """Operating-point overrides (None = the checkpoint's) and what to write besides the mask."""

    threshold: float | None = None
    min_lesion_mm3: float | None = None
    tta: bool | None = None  # mirror TTA over 8 flips; None = the checkpoint's setting
    fill_holes: bool | None = None  # fill cavities enclosed by a lesion; None = the checkpoint's setting
    prob: bool = False  # <case>_prob: probabilities as uint8 (NIfTI: scale 1/255 in the header)
    instances: bool = False  # <case>_lesions: each lesion numbered 1..n
    table: bool = True  # <case>_lesions.csv / .json
    skip_existing: bool = False


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and globs -> image paths.

    Raises:
        MedsegError: an input that matches nothing.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.endswith(IMAGE_SUFFIXES) and not f.name.startswith("."))
        elif p.exists():
            found = [p]
        else:
            found = [Path(f) for f in sorted(glob.glob(item)) if f.endswith(IMAGE_SUFFIXES)]
        if not found:
            raise MedsegError(f"{item}: no such file, or no .nii/.nii.gz/.nrrd/.mha scans in it; check the path")
        paths.extend(found)
    return paths


def _write_one(lm: LoadedModel, path: Path | Case, out: Path, opts: PredictOptions) -> list[dict[str, Any]]:
    """Predict one scan file, or one case (one file per channel; outputs named by its case id).
    A model with several lesion classes writes ``<case>_<class>.*`` per class. Returns one summary
    row per mask written."""
    start = time.perf_counter()
    files = path.images if isinstance(path, Case) else (path,)
    stem, path = output_stem(path)  # path: the reference grid and header of every output
    preds = predict_classes(lm, files, opts.threshold, opts.min_lesion_mm3, opts.tta, opts.fill_holes)
    names = [stem] if len(preds) == 1 else [f"{stem}_{cls}" for cls in lm.classes]
    rows = [_write_outputs(lm, pred, path, out, name, opts) for pred, name in zip(preds, names)]
    for row in rows:
        row["seconds"] = round(time.perf_counter() - start, 3)
    return rows


def _write_outputs(lm, pred, path: Path, out: Path, name: str, opts: PredictOptions) -> dict[str, Any]:
    """Mask (written last: its presence marks a finished scan), optional probability and lesion
    maps, per-lesion table, on the grid and header of ``path``."""
    ext = output_suffix(path)
    voxel_mm3 = voxel_volume(pred.affine)
    labels, count = (label_lesions(pred.mask, lm.connectivity) if opts.instances or not opts.table else (None, 0))
    if opts.prob:
        save_like(np.rint(pred.prob * 255).astype(np.uint8), path, out / f"{name}_prob{ext}", scale=1 / 255)
    if opts.instances:
        save_like(labels.astype(np.uint16), path, out / f"{name}_lesions{ext}")
    if opts.table:
        rows = lesion_rows(pred.mask, pred.prob, pred.affine, lm.connectivity)
        write_table(rows, out / f"{name}_lesions")
        count = len(rows)
    save_like(pred.mask, path, out / f"{name}{ext}")
    return {"scan": str(path), "mask": str(out / f"{name}{ext}"), "lesions": count,
            "lesion_volume_mm3": round(float(pred.mask.sum()) * voxel_mm3, 3)}


def output_stem(item: Path | Case) -> tuple[str, Path]:
    """(output name without suffix, the file whose grid and header the outputs take)."""
    return (item.case_id, item.image) if isinstance(item, Case) else (strip_suffix(item), item)


def refuse_shared_outputs(items: Sequence[Path | Case]) -> None:
    """Two inputs must never write one output (``twin.nii`` and ``twin.nii.gz`` both give
    ``twin.nii.gz``): refuse the batch before anything is written, naming both.

    Raises:
        MedsegError: naming the two inputs and the shared output.
    """
    seen: dict[str, Path] = {}
    for item in items:
        stem, first = output_stem(item)
        key = f"{stem}{output_suffix(first)}"
        if key in seen and seen[key] != first:
            raise MedsegError(f"{seen[key]} and {first}: both would be written as {key}; rename one of them "
                              "(or predict them into different --out folders)")
        seen[key] = first


def predict_files(checkpoint: Path | str | Sequence[Path | str], inputs: Sequence[str], out_dir: Path | str, device: str = "auto",
                  opts: PredictOptions = PredictOptions(), progress: bool = True,
                  tracking_uri: str | None = None, cases: Sequence[Case] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """Predict every input scan and every case (multi-channel: one file per channel, outputs named
    by case id) into ``out_dir`` and write ``out_dir/summary.csv``.

    Under ``torchrun`` each rank takes every WORLD_SIZE-th scan and rank 0 merges the summary.

    Returns:
        (one summary row per scan done: scan, mask, lesions, lesion_volume_mm3, seconds;
        one error line per scan that failed) — on rank 0, for all ranks.
    """
    paths = [*expand_inputs(inputs), *cases]
    refuse_shared_outputs(paths)
    lm = load_model(checkpoint, device, tracking_uri)
    rank, world = rank_and_world(lm.device)
    out = Path(out_dir)
    if rank == 0:
        remove_partials(out)
    rows, errors = [], []
    for path in tqdm(paths[rank::world], desc="predict", unit="scan", disable=not progress or rank > 0):
        name, first = output_stem(path)
        last = name if len(lm.classes) == 1 else f"{name}_{lm.classes[-1]}"  # the last mask written
        if opts.skip_existing and (out / f"{last}{output_suffix(first)}").exists():
            continue
        try:
            rows.extend(_write_one(lm, path, out, opts))
        except MedsegError as err:
            errors.append(str(err))
        except OSError as err:  # disk full, permissions: this scan fails, the batch goes on
            errors.append(f"{first}: cannot write its outputs to {out} ({err.strerror or err}); free space or pick another --out")
        except Exception as err:  # anything unforeseen fails this scan only; the batch goes on
            errors.append(f"{first}: failed ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); please report it")
    rows, errors = gather(rows), gather(errors)
    if rows and rank == 0:
        write_csv(sorted(rows, key=lambda r: r["mask"]), out / "summary.csv", SUMMARY_FIELDS)
    finish()
    return rows, errors
