"""Reports of the best epoch: per-case and per-lesion CSVs and overlays."""

from __future__ import annotations

import shutil
from pathlib import Path

from medseg.config.schema import ExperimentConfig
from medseg.evaluation.tables import size_bin_names
from medseg.io.write import write_csv
from medseg.training.validation import SMALL_MM3, Validation
from medseg.viz.overlays import overlays

DESCRIBED = (
    "val_dice",
    "val_lesion_recall",
    "val_lesion_precision",
    "val_lesion_f1",
    "val_fp_per_scan",
    "val_hd95_mm_median",
)


def write_best_report(val: Validation, folder: Path) -> None:
    """Per-case and per-lesion CSVs and overlays of the best epoch so far (replacing older ones)."""
    shutil.rmtree(folder / "overlays", ignore_errors=True)
    write_csv(val.cases, folder / "val_best_cases.csv")
    if val.lesions:
        write_csv(val.lesions, folder / "val_best_lesions.csv")
    for case_id, image, pred, ref, _ in val.worst:
        overlays(case_id, image, pred, ref, folder / "overlays", val.spacing)


def best_metrics(epoch: int, val: dict[str, float], select: str) -> dict[str, float]:
    """What a new best epoch logs besides ``val_*``: ``best_epoch`` and ``best_<metric>`` for the
    selection metric and the headline figures (their last value is the best checkpoint's)."""
    keys = dict.fromkeys([select, *DESCRIBED])
    return {"best_epoch": float(epoch), **{f"best_{k}": val[k] for k in keys if k in val}}


def run_description(cfg: ExperimentConfig, best_epoch: int, best: dict[str, float], run_id: str | None) -> str:
    """Markdown for the MLflow run page: selection, best epoch and its figures, the size bins,
    how to predict with the model, and the model a fine-tuned run started from."""
    rows = [f"| {k} | {best[k]:.3f} |" for k in DESCRIBED if k in best]
    bins = [
        f"| recall {name} | {best[f'val_lesion_recall_{name}']:.3f} |"
        for name, _, _ in size_bin_names()
        if f"val_lesion_recall_{name}" in best
    ]
    edges = ", ".join(f"[{lo:g}, {hi:g}) mm³" for _, lo, hi in size_bin_names())
    model = f"runs:/{run_id}/model" if run_id else "best.pt"
    return "\n".join(
        [
            f"**{cfg.model.name}** network, **{cfg.loss.name}** loss, **{cfg.sampling.strategy}** patch sampling, "
            f"seed {cfg.train.seed}.",
            "",
            f"Best checkpoint: epoch **{best_epoch}** of {cfg.train.epochs}, selected by `{cfg.train.select_metric}` "
            f"(the `val_*` charts show every validation; `best_*` metrics hold the kept epoch's values).",
            "",
            "| validation at the best epoch | |",
            "|---|---|",
            *rows,
            *bins,
            "",
            f"Lesion-size bins (GT lesion volume): {edges}; `val_lesion_recall_small` is recall below {SMALL_MM3:g} "
            "mm³. "
            f"Lesions matched by the `{cfg.eval.matching}` rule, {cfg.eval.connectivity}-connected.",
            "",
            f"Predict: `medseg predict {model} SCANS... --out masks/` (add `--tracking-uri` for an MLflow URI).",
            *(
                [
                    "",
                    f"Fine-tuned from `{cfg.train.init_from}` (`train.init_from`; details: init_report.txt).",
                ]
                if cfg.train.init_from
                else []
            ),
        ]
    )
