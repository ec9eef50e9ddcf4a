"""``medseg demo``: synth -> train (configs/demo.yaml) -> predict held-back cases -> evaluate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from medseg.config.load import load_config
from medseg.data.synthetic import write_dataset
from medseg.evaluation.evaluate import evaluate_dirs
from medseg.evaluation.tables import EvalOptions, size_bin_names
from medseg.inference.batch import predict_files
from medseg.tracking.records import append_note, record
from medseg.tracking.tracker import resolve_uri
from medseg.training.run import train

DEMO_CONFIG = Path(str(resources.files("medseg") / "configs" / "demo.yaml"))


@dataclass
class DemoResult:
    """Held-back figures of a demo run."""

    recall: float
    dice: float
    summary: dict
    run_id: str | None
    seconds: float
    ui_command: str | None = None


def run_demo(
    out: Path,
    cases: int = 40,
    test_cases: int = 16,
    seed: int = 0,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
) -> DemoResult:
    """Run the whole pipeline on fresh synthetic data in ``out`` and log the held-back figures."""
    start = time.perf_counter()
    data = out / "data"
    # the overrides are checked before anything is written: a mistyped --set costs no synthesis
    cfg = load_config(DEMO_CONFIG, [f"data.dataset={data}", f"train.output_dir={out / 'runs'}", *overrides])
    print(f"[1/4] synthesising {cases} training + {test_cases} held-back cases in {data}")
    write_dataset(data, cases, seed=seed, test_cases=test_cases)
    print(f"[2/4] training ({cfg.train.epochs} epochs, run folder under {cfg.train.output_dir})")
    result = train(cfg, progress=progress)
    print(f"[3/4] predicting {data / 'imagesTs'}")
    _, errors = predict_files(
        result.best_path, [str(data / "imagesTs")], out / "pred", device=cfg.train.device, progress=progress
    )
    for line in errors:
        print(f"error: {line}")
    print("[4/4] evaluating against labelsTs")
    opts = EvalOptions(cfg.eval)
    summary, _, errors = evaluate_dirs(out / "pred", data / "labelsTs", out / "eval", opts)
    for line in errors:
        print(f"error: {line}")
    if result.run_id and cfg.tracking.enabled:
        log_heldback(resolve_uri(cfg.tracking.uri, Path(cfg.train.output_dir)), result.run_id, summary, out)
    return DemoResult(
        summary["lesion_recall"],
        summary["dice"],
        summary,
        result.run_id,
        time.perf_counter() - start,
        result.ui_command,
    )


def log_heldback(uri: str, run_id: str, summary: dict, out: Path) -> None:
    """Held-back figures as ``heldback_*`` metrics (the prefix of their artifact folder
    ``heldback/``: cases.csv, lesions.csv, summary.json of ``<out>/eval``) and a section of the run
    description."""
    keys = ("dice", "lesion_recall", "lesion_precision", "lesion_f1", "fp_per_scan")
    metrics = {f"heldback_{key}": summary[key] for key in keys}
    for (name, _, _), size_bin in zip(size_bin_names(), summary["recall_by_size_mm3"].values()):
        if size_bin["recall"] is not None:  # same bins (SIZE_BINS_MM3) and names as val_lesion_recall_<bin>
            metrics[f"heldback_lesion_recall_{name}"] = size_bin["recall"]
    files = [out / "eval" / name for name in ("cases.csv", "lesions.csv", "summary.json")]
    record(uri, run_id, metrics, artifacts=[(path, "heldback") for path in files if path.exists()])
    table = "\n".join(f"| {k} | {summary[k]:.3f} |" for k in keys)
    section = (
        f"\n\n**Held-back cases** ({summary['cases']} scans, never used in training or selection; "
        f"`heldback_*` metrics, `heldback/` artifacts):\n\n| held-back | |\n|---|---|\n{table}"
    )
    append_note(uri, run_id, section)
