"""Lesion contrast as the network sees it: MS lesions and normal tissue after each standardisation.

    MEDSEG_REAL_DATA=../shared/data/real-lesions .venv/bin/python benchmarks/lesion_contrast.py \\
        [--markdown FILE]

For every case of configs/ms_flair.yaml's case list (both MS sites; no model involved), the scan
goes through medseg's own preprocessing (background step, crop to the body, normalisation; on the
scan's own grid) under each setting of :data:`SETTINGS`, and the table gives the mean value inside
the lesions and the median of the rest of the body (normal tissue, mostly white matter). A Tabriz
scan with a brain mask beside it is also shown skull-stripped by it (``stripped``: 0 outside the
brain, as benchmarks/site_shift.py's ``tabriz+stripped`` set): a normalisation that ties the scale to
the tissue gives the same lesion values with and without the skull.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from monai.transforms import Compose
from report import add_markdown_option, table, write_markdown
from site_shift import all_cases, brain_mask, stripped

from medseg.config.plan import Preprocessing
from medseg.data.case import Case
from medseg.transforms.preprocess import body_steps, normalisation

SETTINGS = {  # name: (normalize, background); the first is configs/ms_flair.yaml's
    "zscore_nonzero, min": ("zscore_nonzero", "min"),
    "robust, otsu": ("robust", "otsu"),
    "whitestripe, otsu": ("whitestripe", "otsu"),
}


def lesion_and_tissue(case: Case, normalize: str, background: str) -> tuple[float, float]:
    """(mean inside the lesions, median of the rest of the body) of ``case``'s first channel after
    the background step, the crop and the normalisation ``normalize``."""
    pre = Preprocessing(spacing=(1.0, 1.0, 1.0), normalize=normalize, background=background)
    body = Compose(body_steps(pre, ["image", "label"]))({"image": str(case.images[0]), "label": str(case.label)})
    inside = np.asarray(body["image"][0]) != 0
    x = np.asarray(Compose(normalisation(pre))(body)["image"][0])
    lesion = np.asarray(body["label"][0]) > 0
    return float(x[lesion & inside].mean()), float(np.median(x[inside & ~lesion]))


def variants(case: Case, work: Path) -> list[tuple[str, Case]]:
    """The scan as given, and skull-stripped by its brain mask where it has one."""
    out = [("as given", case)]
    if brain_mask(case).is_file():
        out.append(("stripped", stripped(case, work)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_markdown_option(parser)
    args = parser.parse_args()
    header = ["case", "scan", *[f"{name}: lesion / tissue" for name in SETTINGS]]
    body = []
    with tempfile.TemporaryDirectory() as work:
        for case in all_cases().values():
            for label, scan in variants(case, Path(work)):
                cells = [lesion_and_tissue(scan, *setting) for setting in SETTINGS.values()]
                body.append([case.case_id, label, *[f"{les:.2f} / {tissue:.2f}" for les, tissue in cells]])
                print(*body[-1], sep="  ", flush=True)
    text = table(header, body)
    print(text)
    write_markdown(
        args.markdown,
        "Lesion contrast after each standardisation",
        text,
        [
            "Mean inside the lesions / median of the rest of the body, on the scan's own grid (benchmarks/"
            "lesion_contrast.py)."
        ],
    )


if __name__ == "__main__":
    main()
