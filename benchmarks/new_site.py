"""A new site with a few labelled scans: an MS model trained at one hospital fine-tuned on N scans
of another, against a model trained on those N scans alone and the first model as it is.

    MEDSEG_REAL_DATA=../shared/data/real-lesions .venv/bin/python benchmarks/new_site.py --out /tmp/ns \\
        [--source RUN/best.pt | --source-minutes 20] [--scans 2] [--skip 0] [--minutes 5] [--markdown FILE]

Source: configs/ms_flair.yaml trained on MSLesSeg alone (benchmarks/site_shift.py's ``msl``
direction: its training cases, validated on P14_T3), for ``--source-minutes``, or the checkpoint
given with ``--source``. New site: Tabriz (1.5 T, axial 2D FLAIR, 6-8 mm slices, skull on). Its
labelled scans: N of its training patients in case-id order, after the first K with ``--skip K``
(fixed before any training); it validates on tabriz_106639, as configs/ms_flair.yaml. Rows:

  source       the MSLesSeg model as it is
  fine-tuned   train.init_from = the source, the N Tabriz scans, ``--minutes``
  rehearsed    the same, with MSLesSeg's training scans in the training set too (what the model
               keeps of the first site), validated on both sites' validation cases
  scratch      the same N scans from a random initialisation, ``--minutes``

Each is scored on Tabriz's held-out patients (107130, 110218, 111008) with their brain masks at
predict time (as ``medseg predict --mask``), and on MSLesSeg's held-out patient P39_T1 (what the
model keeps of the first site). Lesion-wise, overlap matching, 26-connected lesions, at the
config's operating point. Rows already in OUT/new_site.json are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from heldout import evaluate_checkpoints
from report import add_markdown_option, table, write_markdown
from site_shift import CONFIG, HELD_OUT, SITES, VALIDATION, all_cases, brain_region, direction_overrides

from medseg.config.load import load_config
from medseg.data.case import Case
from medseg.training.run import train

SOURCE = "source (MSLesSeg only)"
SHOWN = (("lesion_recall", "recall"), ("fp_per_scan", "FP/scan"), ("lesion_f1", "F1"), ("dice", "Dice"))


def new_site_overrides(scans: list[str], out: Path, minutes: float, rehearse: bool = False) -> list[str]:
    """configs/ms_flair.yaml trained on ``scans``, validated on Tabriz's validation case; with
    ``rehearse`` also on MSLesSeg's training cases, validated on both sites' validation cases."""
    sites = ["tabriz", "msl"] if rehearse else ["tabriz"]
    ids = list(all_cases())  # reads the case list once
    source_site = [c for c in ids if rehearse and c.startswith(SITES["msl"]) and c not in HELD_OUT["msl"]]
    keep = {*scans, *source_site, *VALIDATION["tabriz"]}
    return [
        "data.group_pattern=null",
        f"data.exclude_cases={json.dumps([c for c in ids if c not in keep])}",
        f"data.val_cases={json.dumps([c for site in sites for c in VALIDATION[site]])}",
        f"train.output_dir={out}",
        f"train.max_minutes={minutes}",
        "tracking.experiment=new-site",
    ]


def trained(overrides: list[str]) -> tuple[Path, float]:
    """Train configs/ms_flair.yaml with ``overrides``: its best.pt and the minutes it took."""
    start = time.perf_counter()
    best = train(load_config(CONFIG, overrides), progress=False).best_path
    return best, (time.perf_counter() - start) / 60


def run_rows(
    args: argparse.Namespace, scans: list[str], rows: dict[str, dict], held: dict[str, list[Case]], saved: Path
) -> None:
    """Train and score each row (module docstring) that ``rows`` lacks, saving ``rows`` to ``saved``
    after each."""
    source, source_minutes = args.source, 0.0
    if source is None and SOURCE in rows:  # trained by an earlier run of this script
        source = Path(rows[SOURCE]["checkpoint"])
    if source is None:
        source, source_minutes = trained(direction_overrides("msl", args.out / "source", args.source_minutes, None))
    n = len(scans)
    runs = {
        SOURCE: lambda: (source, source_minutes),
        f"fine-tuned on {n} Tabriz scans": lambda: trained(
            [*new_site_overrides(scans, args.out / "finetuned", args.minutes), f"train.init_from={source}"]
        ),
        f"fine-tuned on {n} Tabriz scans and MSLesSeg's": lambda: trained(
            [*new_site_overrides(scans, args.out / "rehearsed", args.minutes, True), f"train.init_from={source}"]
        ),
        f"scratch on {n} Tabriz scans": lambda: trained(new_site_overrides(scans, args.out / "scratch", args.minutes)),
    }
    for name, run in runs.items():
        if name in rows:
            continue
        best, minutes = run()
        rows[name] = {"checkpoint": str(best), "train_min": minutes} | {
            s: evaluate_checkpoints([best], cs, region_of=brain_region if s.startswith("tabriz") else None)
            for s, cs in held.items()
        }
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(rows, indent=1, default=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path, default=None, help="the MSLesSeg model (best.pt); default: train one")
    parser.add_argument("--source-minutes", type=float, default=20.0)
    parser.add_argument("--scans", type=int, default=2, help="labelled scans of the new site to train on")
    parser.add_argument("--skip", type=int, default=0, help="take them after the first K training patients by id")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of the fine-tuned and scratch rows")
    add_markdown_option(parser)
    args = parser.parse_args()
    saved = args.out / "new_site.json"
    rows: dict[str, dict] = json.loads(saved.read_text()) if saved.exists() else {}
    cases = all_cases()
    held = {"tabriz + brain masks": [cases[c] for c in HELD_OUT["tabriz"]], "msl": [cases[c] for c in HELD_OUT["msl"]]}
    pool = sorted(
        c for c in cases if c.startswith(SITES["tabriz"]) and c not in {*HELD_OUT["tabriz"], *VALIDATION["tabriz"]}
    )
    scans = pool[args.skip : args.skip + args.scans]

    run_rows(args, scans, rows, held, saved)
    header = ["model", *[f"{s} {label}" for s in held for _, label in SHOWN]]
    body = [
        [name, *[f"{r[s][k]:.2f}" if np.isfinite(r[s][k]) else "-" for s in held for k, _ in SHOWN]]
        for name, r in rows.items()
    ]
    text = table(header, body)
    print(text)
    write_markdown(
        args.markdown,
        "A new site with a few labelled scans",
        text,
        [
            f"Tabriz scans trained on: {', '.join(scans)}; {args.minutes:g} min per row on 2 CPU cores, one seed. "
            "Held-out: Tabriz 107130, 110218, 111008 (71 lesions, brain masks at predict time), MSLesSeg P39_T1 "
            "(31 lesions). Lesion-wise, overlap matching, 26-connected lesions, threshold 0.5, lesions >= 3 mm3."
        ],
    )


if __name__ == "__main__":
    main()
