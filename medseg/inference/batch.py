"""Batch prediction: inputs -> masks (+ probability map, lesion instance map, per-lesion table)
on each scan's own grid, a run summary, failures reported and skipped, atomic writes.
"""

from __future__ import annotations

import csv
import glob
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medseg.data.case import Case
from medseg.errors import MedsegError
from medseg.inference.lesion_table import lesion_rows, write_table
from medseg.inference.model import LoadedModel, load_model
from medseg.inference.onnx_model import load_onnx_model
from medseg.inference.predictor import Prediction, predict_classes
from medseg.inference.region import RegionMasks
from medseg.io.dicom import dicom_folders
from medseg.io.dicom_seg import write_dicom_seg
from medseg.io.geometry import voxel_volume
from medseg.io.outputs import OutputPlan, folder_lock, refuse_input_folder
from medseg.io.paths import IMAGE_SUFFIXES, output_suffix, strip_suffix
from medseg.io.volumes import save_like
from medseg.io.write import remove_partials, write_csv
from medseg.lesions import label_lesions
from medseg.runtime.distributed import finish, gather, rank_and_world

SUMMARY = "summary.csv"
SUMMARY_FIELDS = ("scan", "mask", "lesions", "lesion_volume_mm3", "seconds", "unlike_training")


@dataclass(frozen=True)
class PredictOptions:
    """Operating-point overrides (None = the checkpoint's) and what to write besides the mask."""

    threshold: float | None = None
    min_lesion_mm3: float | None = None
    min_lesion_voxels: int = 0  # also remove predicted lesions of fewer voxels (the larger minimum wins)
    tta: bool | None = None  # mirror TTA over 8 flips; None = the checkpoint's setting
    fill_holes: bool | None = None  # fill cavities enclosed by a lesion; None = the checkpoint's setting
    prob: bool = False  # <case>_prob: probabilities as uint8 (NIfTI: scale 1/255 in the header)
    instances: bool = False  # <case>_lesions: each lesion numbered 1..n
    table: bool = True  # <case>_lesions.csv / .json
    skip_existing: bool = False
    region: RegionMasks | None = None  # --mask: drop lesions mostly outside each scan's region mask
    min_confidence: float | None = None  # drop lesions whose maximum probability is below it
    output_format: str = "nifti"  # "dicom-seg": also <case>_seg.dcm, a DICOM SEG, per DICOM scan


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and globs -> image paths. A folder that holds
    DICOM files is one scan (its series, :func:`medseg.io.dicom.find_series`), and so is each
    subfolder of a folder that does (:func:`medseg.io.dicom.dicom_folders`).

    Raises:
        MedsegError: an input that matches nothing.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.endswith(IMAGE_SUFFIXES) and not f.name.startswith("."))
            found = [*dicom_folders(p), *found]
        elif p.exists():
            found = [p]
        else:
            found = [Path(f) for f in sorted(glob.glob(item)) if f.endswith(IMAGE_SUFFIXES)]
        if not found:
            raise MedsegError(
                f"{item}: no such file, or no .nii/.nii.gz/.nrrd/.mha scans or DICOM series in it; check the path"
            )
        paths.extend(found)
    return paths


def output_files(name: str, ext: str, opts: PredictOptions) -> dict[str, str]:
    """File names of one mask and what is written beside it (the one naming rule of predict):
    ``mask``, and as asked ``prob``, ``instances``, ``table_csv``, ``table_json``."""
    files = {"mask": f"{name}{ext}"}
    if opts.prob:
        files["prob"] = f"{name}_prob{ext}"
    if opts.instances:
        files["instances"] = f"{name}_lesions{ext}"
    if opts.table:
        files["table_csv"], files["table_json"] = f"{name}_lesions.csv", f"{name}_lesions.json"
    return files


def output_stem(item: Path | Case) -> tuple[str, Path]:
    """(output name without suffix, the file whose grid and header the outputs take); a DICOM
    folder is named as the folder."""
    if isinstance(item, Case):
        return item.case_id, item.image
    return (item.name if item.is_dir() else strip_suffix(item)), item


def claim_seg(plan: OutputPlan, item: Path | Case, stem: str, owner: str) -> Path:
    """``<case>_seg.dcm``: the DICOM SEG of a DICOM scan (``--output-format dicom-seg``).

    Raises:
        MedsegError: the scan is not a folder of DICOM files.
    """
    if isinstance(item, Case) or not item.is_dir():
        raise MedsegError(
            f"{owner}: --output-format dicom-seg needs DICOM input and this scan is not a folder of DICOM files; "
            "predict it without --output-format, or pass its DICOM series"
        )
    return plan.claim(f"{stem}_seg.dcm", f"the DICOM SEG of {owner}")


def plan_outputs(
    items: Sequence[Path | Case], classes: Sequence[str], out: Path, opts: PredictOptions, inputs: Sequence[Path]
) -> list[list[dict[str, Path]]]:
    """Claim every file the batch will write before the first write (see
    :class:`medseg.io.outputs.OutputPlan`): the summary, and per item one ``{kind: path}`` per
    lesion class (:func:`output_files`; masks ``<case>``, or ``<case>_<class>`` per class).

    Raises:
        MedsegError: a file outside ``out``, an input overwritten, or two outputs on one path.
    """
    plan = OutputPlan(out, inputs)
    plan.claim(SUMMARY, "the batch summary")
    planned = []
    for item in items:
        stem, first = output_stem(item)
        owner = f"{first} (case {stem})" if isinstance(item, Case) else str(first)
        names = [stem] if len(classes) == 1 else [f"{stem}_{cls}" for cls in classes]
        planned.append(
            [
                {
                    kind: plan.claim(name, f"the {kind.replace('_', ' ')} of {owner}")
                    for kind, name in output_files(mask, output_suffix(first), opts).items()
                }
                for mask in names
            ]
        )
        if opts.output_format == "dicom-seg":  # one SEG per scan, every class a segment
            planned[-1][0]["seg"] = claim_seg(plan, item, stem, owner)
    return planned


def input_files(items: Sequence[Path | Case]) -> list[Path]:
    """Every file the batch reads: scans, and each case's channel files and label."""
    files: list[Path] = []
    for item in items:
        files.extend([*item.images, *([item.label] if item.label else [])] if isinstance(item, Case) else [item])
    return files


def _write_one(lm: LoadedModel, item: Path | Case, out: Path, opts: PredictOptions) -> list[dict[str, Any]]:
    """Predict one scan file, or one case, into ``out`` (a batch of one: its outputs planned by
    :func:`plan_outputs`). Returns one summary row per mask written."""
    return _write_planned(
        lm, item, plan_outputs([item], lm.preprocess.classes, Path(out), opts, input_files([item]))[0], opts
    )


def _write_planned(
    lm: LoadedModel, item: Path | Case, files: list[dict[str, Path]], opts: PredictOptions
) -> list[dict[str, Any]]:
    """Predict one scan file, or one case (one file per channel), into its planned ``files`` (one
    dict per lesion class, see :func:`plan_outputs`). Returns one summary row per mask written."""
    start = time.perf_counter()
    images = item.images if isinstance(item, Case) else (item,)
    stem, reference = output_stem(item)  # the grid and header of every output
    region = opts.region.read(stem, reference) if opts.region is not None else None
    preds = predict_classes(
        lm,
        images,
        opts.threshold,
        opts.min_lesion_mm3,
        opts.tta,
        opts.fill_holes,
        opts.min_lesion_voxels,
        region=region,
        min_confidence=opts.min_confidence,
    )
    if "seg" in files[0]:  # before the masks: the last mask written marks a finished scan
        write_dicom_seg(
            [p.mask for p in preds], reference, lm.preprocess.classes, files[0]["seg"], seg_params(lm, opts)
        )
    rows = [_write_outputs(lm, pred, reference, paths, opts) for pred, paths in zip(preds, files)]
    unlike = "; ".join(preds[0].unlike_training)
    if unlike:  # one line per scan, however many classes
        print(
            f"warning: {reference}: unlike the model's training scans: {unlike}; expect missed and false lesions "
            "(docs/how-to/other-site.md)",
            file=sys.stderr,
        )
    for row in rows:
        row["seconds"] = round(time.perf_counter() - start, 3)
        row["unlike_training"] = unlike
    return rows


def seg_params(lm: LoadedModel, opts: PredictOptions) -> dict[str, str]:
    """The operating point a DICOM SEG records as its algorithm's parameters."""
    threshold = lm.operating_point.threshold if opts.threshold is None else opts.threshold
    min_mm3 = lm.operating_point.min_lesion_mm3 if opts.min_lesion_mm3 is None else opts.min_lesion_mm3
    return {"threshold": f"{threshold:g}", "min_lesion_mm3": f"{min_mm3:g}"}


def _write_outputs(
    lm: LoadedModel, pred: Prediction, reference: Path, files: dict[str, Path], opts: PredictOptions
) -> dict[str, Any]:
    """Mask (written last: its presence marks a finished scan), optional probability and lesion
    maps, per-lesion table, on the grid and header of ``reference``."""
    voxel_mm3 = voxel_volume(pred.affine)
    labels, count = label_lesions(pred.mask, lm.connectivity) if opts.instances or not opts.table else (None, 0)
    if opts.prob:
        save_like(np.rint(pred.prob * 255).astype(np.uint8), reference, files["prob"], scale=1 / 255)
    if opts.instances:
        save_like(labels.astype(np.uint16), reference, files["instances"])
    if opts.table:
        rows = lesion_rows(pred.mask, pred.prob, pred.affine, lm.connectivity)
        write_table(rows, files["table_csv"], files["table_json"])
        count = len(rows)
    save_like(pred.mask, reference, files["mask"])
    return {
        "scan": str(reference),
        "mask": str(files["mask"]),
        "lesions": count,
        "lesion_volume_mm3": round(float(pred.mask.sum()) * voxel_mm3, 3),
    }


def merge_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``summary.csv``: rows of earlier runs into the same folder (``--skip-existing``, or
    another process predicting there) are kept, this run's rows replace those of the same mask.
    Read and written under a lock on the folder, so two processes never drop each other's rows."""
    with folder_lock(path.parent):
        merged: dict[str, dict[str, Any]] = {}
        if path.is_file():
            with path.open(newline="") as fh:
                merged = {r["mask"]: r for r in csv.DictReader(fh) if r.get("mask")}
        merged.update({str(r["mask"]): r for r in rows})
        write_csv(sorted(merged.values(), key=lambda r: r["mask"]), path, SUMMARY_FIELDS)


def _predict_one(
    lm: LoadedModel, item: Path | Case, files: list[dict[str, Path]], opts: PredictOptions
) -> tuple[list[dict[str, Any]], str | None]:
    """:func:`_write_planned`, a failure turned into its error line (the batch goes on)."""
    first = output_stem(item)[1]
    try:
        return _write_planned(lm, item, files, opts), None
    except MedsegError as err:
        return [], str(err)
    except OSError as err:  # disk full, permissions: this scan fails, the batch goes on
        out = files[0]["mask"].parent
        return (
            [],
            f"{first}: cannot write its outputs to {out} ({err.strerror or err}); free space or pick another --out",
        )
    except Exception as err:  # anything unforeseen fails this scan only; the batch goes on
        cause = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        return [], f"{first}: failed ({type(err).__name__}: {cause}); rerun it alone with --debug and please report it"


def predict_files(
    checkpoint: Path | str | Sequence[Path | str],
    inputs: Sequence[str],
    out_dir: Path | str,
    device: str = "auto",
    opts: PredictOptions = PredictOptions(),
    progress: bool = True,
    tracking_uri: str | None = None,
    cases: Sequence[Case] = (),
    engine: str = "torch",
) -> tuple[list[dict[str, Any]], list[str]]:
    """Predict every input scan and every case (multi-channel: one file per channel, outputs named
    by case id) into ``out_dir`` and write ``out_dir/summary.csv``. ``engine``: ``torch``, or
    ``onnxruntime`` (:func:`medseg.inference.onnx_model.load_onnx_model`: an exported .onnx, or a
    checkpoint exported in memory).

    Under ``torchrun`` each rank takes every WORLD_SIZE-th scan and rank 0 merges the summary.

    Returns:
        (one summary row per scan done: scan, mask, lesions, lesion_volume_mm3, seconds, unlike_training;
        one error line per scan that failed) — on rank 0, for all ranks.
    """
    items = [*expand_inputs(inputs), *cases]
    out = Path(out_dir)
    refuse_input_folder(
        out, [*(i for i in inputs if Path(i).is_dir()), *(i for i in items if isinstance(i, Path) and i.is_dir())]
    )
    if engine == "onnxruntime":
        lm = load_onnx_model(checkpoint, device, tracking_uri)
    else:
        lm = load_model(checkpoint, device, tracking_uri)
    members = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    planned = plan_outputs(
        items,
        lm.preprocess.classes,
        out,
        opts,
        [
            *input_files(items),
            *(Path(m) for m in members if Path(m).is_file()),
            *(opts.region.files if opts.region is not None else ()),  # --mask files are inputs: never written
        ],
    )
    rank, world = rank_and_world(lm.device)
    if rank == 0:
        remove_partials(out)
    rows, errors = [], []
    for item, files in tqdm(
        list(zip(items, planned))[rank::world], desc="predict", unit="scan", disable=not progress or rank > 0
    ):
        if opts.skip_existing and files[-1]["mask"].exists():  # the last mask written marks a finished scan
            continue
        done, error = _predict_one(lm, item, files, opts)
        rows.extend(done)
        errors.extend([error] if error else [])
    rows, errors = gather(rows), gather(errors)
    if rows and rank == 0:
        merge_summary(rows, out / SUMMARY)
    finish()
    return rows, errors
