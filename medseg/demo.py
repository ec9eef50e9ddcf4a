"""``medseg demo``: synth -> train (configs/demo.yaml) -> predict held-back cases -> evaluate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlflow.tracking import MlflowClient

from medseg.config.load import load_config
from medseg.data.synthetic import write_dataset
from medseg.evaluation.evaluate import evaluate_dirs
from medseg.evaluation.tables import EvalOptions
from medseg.inference.batch import predict_files
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


def run_demo(out: Path, cases: int = 40, test_cases: int = 16, seed: int = 0, overrides: tuple[str, ...] = (),
             progress: bool = True) -> DemoResult:
    """Run the whole pipeline on fresh synthetic data in ``out`` and log the held-back figures."""
    start = time.perf_counter()
    data = out / "data"
    print(f"[1/4] synthesising {cases} training + {test_cases} held-back cases in {data}")
    write_dataset(data, cases, seed=seed, test_cases=test_cases)
    cfg = load_config(DEMO_CONFIG, [f"data.dataset={data}", f"train.output_dir={out / 'runs'}", *overrides])
    print(f"[2/4] training ({cfg.train.epochs} epochs, run folder under {cfg.train.output_dir})")
    result = train(cfg, progress=progress)
    print(f"[3/4] predicting {data / 'imagesTs'}")
    _, errors = predict_files(result.best_path, [str(data / "imagesTs")], out / "pred", device=cfg.train.device, progress=progress)
    for line in errors:
        print(f"error: {line}")
    print("[4/4] evaluating against labelsTs")
    opts = EvalOptions(cfg.eval.matching, cfg.eval.match_threshold, cfg.eval.connectivity)
    summary, _, errors = evaluate_dirs(out / "pred", data / "labelsTs", out / "eval.csv", opts)
    for line in errors:
        print(f"error: {line}")
    if result.run_id and cfg.tracking.enabled:
        client = MlflowClient(resolve_uri(cfg.tracking.uri, Path(cfg.train.output_dir)))
        for key in ("dice", "lesion_recall", "lesion_precision", "lesion_f1", "fp_per_scan"):
            client.log_metric(result.run_id, f"test_{key}", float(summary[key]))
        for name in ("eval.csv", "eval_lesions.csv", "eval_summary.json"):
            if (out / name).exists():
                client.log_artifact(result.run_id, str(out / name), "heldback")
    return DemoResult(summary["lesion_recall"], summary["dice"], summary, result.run_id, time.perf_counter() - start)
