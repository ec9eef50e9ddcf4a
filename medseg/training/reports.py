"""Reports of the best epoch: per-case and per-lesion CSVs and overlays.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medseg.io.write import write_csv
from medseg.viz.overlays import overlays


def write_best_report(val, folder: Path) -> None:
    """Per-case and per-lesion CSVs and overlays of the best epoch so far (replacing older ones)."""
    shutil.rmtree(folder / "overlays", ignore_errors=True)
    write_csv(val.cases, folder / "val_best_cases.csv")
    if val.lesions:
        write_csv(val.lesions, folder / "val_best_lesions.csv")
    for case_id, image, pred, ref in val.worst:
        overlays(case_id, image, pred, ref, folder / "overlays")
