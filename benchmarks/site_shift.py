"""Site shift: how MS lesion models hold on scans from another hospital, and under simulated shifts.

    MEDSEG_REAL_DATA=../shared/data/real-lesions .venv/bin/python benchmarks/site_shift.py --out /tmp/ss \\
        [--minutes 8 | --epochs 100] [--recipes today whitestripe site ...] [--directions msl tabriz both] \
        [--fp-budget 3] [--markdown FILE]
    # or score models already trained (a checkpoint, or a folder of runs = their ensemble), no training:
    ... benchmarks/site_shift.py --out /tmp/ss --models ensemble=runs/ms_flair/seeds3-s0 seed0=RUN/best.pt

Data: configs/cases/ms_two_sites.yaml (the case list of configs/ms_flair.yaml), MSLesSeg (3D FLAIR, MNI
space, skull-stripped) and Tabriz (axial 2D FLAIR, 6-8 mm slices, skull on). Held-out splits, fixed
before any training: MSLesSeg P39_T1 (its validation case P14_T3); Tabriz 107130, 110218, 111008 (its
validation case 106639), as configs/ms_flair.yaml. Directions: ``msl`` trains on MSLesSeg's training
cases, ``tabriz`` on Tabriz's, ``both`` on both (validated on both validation cases; configs/ms_flair.yaml).
Every model is scored on both sites' held-out cases and, for MSLesSeg's held-out patient, under each simulated shift:

  bias     a smooth multiplicative bias field (x0.7-1.4 across the head)
  contrast gamma 0.7 on the body's intensities
  thick    3 mm slices: every 3 axial slices averaged, on the same 1 mm grid
  mask     the brain mask eroded by 3 voxels (a tighter skull-stripping)
  noise    Gaussian noise, SD 5 % of the brain's median, inside the brain
  faint    lesions less conspicuous: their contrast to the tissue around them x0.5, which takes P39's
           mean lesion z-score (over the brain) from 2.3 to 1.5, as measured at an MS site where
           models trained here lose most lesions (1.3-1.5 there). It is the operation of
           ``augment.faint_prob`` (medseg.transforms.site.faint_lesions): a model trained with it has
           seen such lesions

and Tabriz's held-out patients (skull on) in two more ways, both with the brain masks shipped beside
their scans (``ID_brainmask.nii.gz``):

  brainmask  lesions outside the brain mask removed, as ``medseg predict --mask``
  stripped   the scan skull-stripped by that mask (0 outside the brain), as a skull-stripping
             pipeline at another site would deliver it: the same scan under another preprocessing

Recipes (overrides of configs/ms_flair.yaml, each trained ``--minutes`` on 2 CPU cores, or ``--epochs``
epochs whatever the time: the same work for every recipe on a machine shared with other jobs):
  today        the config as written (z-score inside the brain, nnunet augmentation)
  robust       preprocess.normalize=robust, background=otsu
  whitestripe  preprocess.normalize=whitestripe, background=otsu
  nyul         preprocess.normalize=nyul, background=otsu (landmarks fitted on the training cases)
  site         augment.preset=site
  ws_site      whitestripe + site
  faint        augment.faint_prob=0.25 (training patches with fainter lesions)
  monai        benchmarks/monai_recipe.py (MONAI tutorial recipe, same budget, split, patch and spacing)

With ``--models NAME=PATH`` nothing is trained: each model (``best.pt``, or a folder of training
runs, which ``medseg predict`` averages as an ensemble, e.g. ``medseg train --seeds 3``'s) is scored
on the same sets, in row ``NAME`` (a row already saved gets only the sets it lacks).

Rows are scored lesion-wise as ``medseg evaluate`` does (overlap matching, 26-connected lesions),
at the config's operating point; with ``--fp-budget K`` each medseg row also at the point
``medseg tune --max-fp-per-scan K`` picks on the row's validation cases (row ``... @KFP``). Rows
already in OUT/site_shift.json are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from heldout import evaluate_checkpoints, score
from monai_recipe import predict_recipe, train_recipe
from report import add_markdown_option, table, write_markdown
from scipy import ndimage

from medseg.calibration.tune import run_tune
from medseg.config.load import load_config
from medseg.data.case import Case
from medseg.data.sources.discover import from_config
from medseg.data.split import run_split
from medseg.inference.region import read_region
from medseg.training.run import train
from medseg.transforms.site import faint_lesions

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT.parent / "configs" / "ms_flair.yaml"
SITES = {"msl": "msl_", "tabriz": "tabriz_"}


def by_site(case_ids: list[str]) -> dict[str, list[str]]:
    """``case_ids`` grouped by their site prefix (:data:`SITES`)."""
    return {site: [c for c in case_ids if c.startswith(prefix)] for site, prefix in SITES.items()}


_SPLIT = load_config(CONFIG).data  # the held-out and validation cases are the config's, fixed before any training
HELD_OUT = by_site(list(_SPLIT.exclude_cases))
VALIDATION = by_site(list(_SPLIT.val_cases))
RECIPES: dict[str, list[str]] = {
    "today": [],
    "robust": ["preprocess.normalize=robust", "preprocess.background=otsu"],
    "whitestripe": ["preprocess.normalize=whitestripe", "preprocess.background=otsu"],
    "nyul": ["preprocess.normalize=nyul", "preprocess.background=otsu"],
    "site": ["augment.preset=site"],
    "ws_site": ["preprocess.normalize=whitestripe", "preprocess.background=otsu", "augment.preset=site"],
    "faint": ["augment.faint_prob=0.25"],
    "monai": [],
}
SHIFTS = ("bias", "contrast", "thick", "mask", "noise", "faint")
MASKED = "tabriz+brainmask"  # the set scored with the brain masks at predict time
STRIPPED = "tabriz+stripped"  # the set skull-stripped by them
TABRIZ_VARIANTS = (MASKED, STRIPPED)
FAINT = 0.5  # the share of the lesions' contrast the faint shift keeps


def direction_overrides(direction: str, out: Path, minutes: float | None, epochs: int | None = None) -> list[str]:
    """The config's data section for one direction: the two-site case list, the other site (or
    nothing, for ``both``) and every held-out case excluded, the direction's validation cases."""
    sites = ["msl", "tabriz"] if direction == "both" else [direction]
    excluded = [c for held in HELD_OUT.values() for c in held]
    if direction != "both":
        other = "tabriz" if direction == "msl" else "msl"
        excluded += [c for c in all_cases() if c.startswith(SITES[other]) and c not in excluded]
    return [
        "data.group_pattern=null",
        f"data.exclude_cases={json.dumps(excluded)}",
        f"data.val_cases={json.dumps([c for s in sites for c in VALIDATION[s]])}",
        f"train.output_dir={out}",
        *(["train.max_minutes=null", f"train.epochs={epochs}"] if epochs else [f"train.max_minutes={minutes}"]),
        "tracking.experiment=site-shift",
    ]


def all_cases() -> dict[str, Case]:
    """Every case of the two-site list by id."""
    cfg = load_config(CONFIG, ["data.exclude_cases=null"])
    return {c.case_id: c for c in from_config(cfg.data).cases}


def shifted(case: Case, shift: str, folder: Path) -> Case:
    """``case`` with its scan changed by ``shift`` (module docstring), written under ``folder``; same
    grid, same label."""
    img = nib.load(str(case.images[0]))
    x = np.asarray(img.dataobj, dtype=np.float32)
    body = x > x.min()
    rng = np.random.default_rng(0)
    if shift == "bias":
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in x.shape], indexing="ij"))
        field = np.exp(0.35 * (grid[0] * 0.8 + grid[1] ** 2 * 0.5 - grid[2] * 0.6 + grid[0] * grid[2] * 0.4))
        x = np.where(body, x * field, x)
    elif shift == "contrast":
        top = np.percentile(x[body], 99.5)
        x = np.where(body, top * np.clip(x / top, 0, None) ** 0.7, x)
    elif shift == "thick":
        n = x.shape[2] // 3 * 3
        block = x[:, :, :n].reshape(x.shape[0], x.shape[1], -1, 3).mean(-1)
        x[:, :, :n] = np.repeat(block, 3, axis=2)
    elif shift == "mask":
        x = np.where(ndimage.binary_erosion(body, iterations=3), x, x.min())
    elif shift == "noise":
        x = np.where(body, x + rng.normal(0, 0.05 * np.median(x[body]), x.shape), x)
    elif shift == "faint":
        lesion = torch.as_tensor(np.asarray(nib.load(str(case.label)).dataobj) > 0)
        x = faint_lesions(torch.as_tensor(x - x.min())[None], lesion, FAINT)[0].numpy() + x.min()
    return written(case, shift, x, img, folder)


def brain_mask(case: Case) -> Path:
    """The brain mask beside a Tabriz scan (``<id>_brainmask.nii.gz``, in the data's folder)."""
    scan = Path(case.images[0])
    return scan.parent / scan.name.replace("_FLAIR", "_brainmask")


def brain_region(case: Case) -> np.ndarray:
    """The brain mask of a Tabriz case on its scan's grid (X, Y, Z bool)."""
    return read_region(brain_mask(case), Path(case.images[0]))


def stripped(case: Case, folder: Path) -> Case:
    """``case`` skull-stripped by its :func:`brain_region` (0 outside the brain), written under ``folder``."""
    img = nib.load(str(case.images[0]))
    x = np.where(brain_region(case), np.asarray(img.dataobj, dtype=np.float32), 0)
    return written(case, "stripped", x, img, folder)


def written(case: Case, name: str, x: np.ndarray, img: nib.Nifti1Image, folder: Path) -> Case:
    """``case`` with its scan replaced by ``x`` (X, Y, Z) on the grid of ``img``, saved as float32
    (an int16 header would quantise ``x``) to ``folder/<case>_<name>.nii.gz``; same label."""
    out = nib.Nifti1Image(x.astype(np.float32), img.affine, img.header)
    out.set_data_dtype(np.float32)
    path = folder / f"{case.case_id}_{name}.nii.gz"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path))
    return Case(f"{case.case_id}_{name}", (path,), case.label)


def eval_sets(cases: dict[str, Case], work: Path) -> dict[str, list[Case]]:
    """Held-out sets: each site's held-out cases, MSLesSeg's under each shift, Tabriz's with its
    brain masks (:data:`TABRIZ_VARIANTS`)."""
    sets = {site: [cases[c] for c in ids] for site, ids in HELD_OUT.items()}
    for shift in SHIFTS:
        sets[f"msl+{shift}"] = [shifted(cases[c], shift, work / "shifted") for c in HELD_OUT["msl"]]
    sets[MASKED] = sets["tabriz"]
    sets[STRIPPED] = [stripped(c, work / "shifted") for c in sets["tabriz"]]
    return sets


def in_region(label: str, case: Case, mask: np.ndarray) -> np.ndarray:
    """``mask`` (X, Y, Z) of ``case`` in set ``label``: inside the brain mask for ``tabriz+brainmask``."""
    return mask & brain_region(case) if label == MASKED else mask


def scored(checkpoints: list[Path], label: str, cases: list[Case]) -> dict[str, float]:
    """:func:`evaluate_checkpoints` of set ``label``; ``tabriz+brainmask`` keeps lesions inside the brain mask."""
    region = brain_region if label == MASKED else None
    return evaluate_checkpoints(checkpoints, cases, region_of=region)


def run_medseg(direction: str, recipe: str, out: Path, budget: tuple, sets: dict[str, list[Case]]) -> dict:
    cfg = load_config(CONFIG, [*direction_overrides(direction, out, *budget), *RECIPES[recipe]])
    start = time.perf_counter()
    best = train(cfg, progress=False).best_path
    used = (time.perf_counter() - start) / 60
    return {name: scored([best], name, cs) | {"train_min": used} for name, cs in sets.items()}


def run_monai(direction: str, out: Path, minutes: float, sets: dict[str, list[Case]]) -> dict:
    """The MONAI tutorial recipe (wall-clock budget only: it has no epoch mode)."""
    cfg = load_config(CONFIG, direction_overrides(direction, out, minutes))
    train_cases, val_cases = run_split(from_config(cfg.data).require_clean(), cfg)
    spacing, patch = cfg.preprocess.target_spacing, cfg.sampling.patch_size
    net, info = train_recipe(train_cases, val_cases, spacing, patch, minutes, cfg.train.seed, cfg.train.batch_size)
    return {
        name: score([in_region(name, c, predict_recipe(net, c, spacing, patch)) for c in cs], cs)
        | {"train_min": info["train_min"]}
        for name, cs in sets.items()
    }


def run_fp_budget(folder: Path, budget: float, sets: dict[str, list[Case]]) -> dict:
    """The model trained in ``folder`` at the operating point ``medseg tune --max-fp-per-scan budget``
    chooses on its validation cases (a copy of its checkpoint is tuned: the row's own stays)."""
    best = max(folder.glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    tuned = best.parent / f"tuned_fp{budget:g}" / "best.pt"
    tuned.parent.mkdir(exist_ok=True)
    shutil.copy(best, tuned)
    chosen = run_tune(tuned, device="cpu", max_fp_per_scan=budget)["chosen"]
    point = {"threshold": float(chosen["threshold"]), "min_lesion_mm3": float(chosen["min_lesion_mm3"])}
    return {name: scored([tuned], name, cs) | point for name, cs in sets.items()}


def run_models(models: list[str], rows: dict[str, dict], sets: dict[str, list[Case]], save: Callable[[], None]) -> None:
    """Score each ``NAME=PATH`` of ``--models`` (module docstring) into ``rows[NAME]``: the sets
    that row does not hold yet."""
    for spec in models:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).exists():
            raise SystemExit(f"--models {spec}: give NAME=PATH, PATH a best.pt or a folder of training runs")
        row = rows.setdefault(name, {})
        for label in [label for label in sets if label not in row]:  # a shift added since: scored now
            row[label] = scored([Path(path)], label, sets[label])
            save()
        print(name, {s: round(r["lesion_f1"], 3) for s, r in rows[name].items()}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--epochs", type=int, default=None, help="train every medseg recipe this many epochs instead")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--directions", nargs="+", default=["msl", "tabriz", "both"], choices=["msl", "tabriz", "both"])
    parser.add_argument(
        "--fp-budget",
        type=float,
        default=None,
        help="also score each medseg row at the point 'medseg tune --max-fp-per-scan K' picks on its validation",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME=PATH",
        help="score these trained models (best.pt, or a folder of runs: their ensemble) instead of training",
    )
    add_markdown_option(parser)
    args = parser.parse_args()
    saved = args.out / "site_shift.json"
    rows: dict[str, dict] = json.loads(saved.read_text()) if saved.exists() else {}
    sets = eval_sets(all_cases(), args.out)

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(rows, indent=1, default=float))

    if args.models:
        run_models(args.models, rows, sets, save)
    for direction in [] if args.models else args.directions:
        for recipe in args.recipes:
            key = f"{direction}/{recipe}"
            if key in rows and (args.fp_budget is None or recipe == "monai" or f"{key} @{args.fp_budget:g}FP" in rows):
                continue
            folder = args.out / direction / recipe
            if key not in rows:
                rows[key] = (
                    run_monai(direction, folder, args.minutes, sets)
                    if recipe == "monai"
                    else run_medseg(direction, recipe, folder, (args.minutes, args.epochs), sets)
                )
            save()
            print(key, {s: round(r["lesion_f1"], 3) for s, r in rows[key].items()}, flush=True)
            if args.fp_budget is not None and recipe != "monai" and f"{key} @{args.fp_budget:g}FP" not in rows:
                rows[f"{key} @{args.fp_budget:g}FP"] = run_fp_budget(folder, args.fp_budget, sets)
                save()
    text = tables(rows)
    print(text)
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.minutes:g} min"
    trained = (
        f"Models scored as given ({', '.join(args.models)})."
        if args.models
        else f"Each model trained {budget} on 2 CPU cores (configs/ms_flair.yaml with the recipe's overrides), "
        "one seed."
    )
    write_markdown(
        args.markdown,
        "Site shift: MS lesions at another hospital and under simulated shifts",
        text,
        [
            f"{trained} Held-out: msl = MSLesSeg P39_T1 (31 lesions), tabriz = Tabriz 107130, 110218, 111008 (71 "
            "lesions); msl+SHIFT = P39_T1 under a simulated shift (benchmarks/site_shift.py). Lesion-wise, overlap "
            "matching, 26-connected lesions, at the config's operating point (threshold 0.5, lesions >= 3 mm3)."
        ],
    )


def tables(rows: dict[str, dict]) -> str:
    """Three Markdown tables: the held-out sites (recall, FP per scan, F1, Dice), the simulated
    shifts of MSLesSeg's held-out patient (F1 and FP per scan, and their means with the mean Dice) and
    Tabriz's held-out patients with their brain masks, a row per direction/recipe; "-" for a set a
    row was not scored on."""
    sites = [s for s in HELD_OUT if any(s in r for r in rows.values())]
    shifts = sorted(
        {s for r in rows.values() for s in r if s.startswith("msl+")}, key=lambda s: SHIFTS.index(s.split("+")[1])
    )
    variants = [v for v in TABRIZ_VARIANTS if any(v in r for r in rows.values())]
    header = ["trained on / recipe", *[f"{s} {c}" for s in sites for c in ("recall", "FP/scan", "F1", "Dice")]]
    body = [site_cells(key, r, sites) for key, r in rows.items()]
    header2 = ["trained on / recipe", *[f"{s.split('+')[1]} F1 (FP)" for s in shifts], "mean F1 (FP), Dice"]
    body2 = [
        [
            key,
            *[f"{r[s]['lesion_f1']:.2f} ({r[s]['fp_per_scan']:.0f})" if s in r else "-" for s in shifts],
            mean(r, shifts),
        ]
        for key, r in rows.items()
    ]
    text = table(header, body) + "\n\nMSLesSeg P39_T1 under simulated shifts:\n\n" + table(header2, body2)
    if variants:
        header3 = ["trained on / recipe", *[f"{v} {c}" for v in variants for c in ("recall", "FP/scan", "F1", "Dice")]]
        body3 = [site_cells(key, r, variants) for key, r in rows.items()]
        text += "\n\nTabriz's held-out patients with their brain masks (benchmarks/site_shift.py):\n\n"
        text += table(header3, body3)
    return text


def site_cells(key: str, row: dict, sets: list[str]) -> list[str]:
    """Table cells of ``row``: its name, then recall, FP per scan, F1 and Dice of each of ``sets``."""
    cells = ("lesion_recall", "fp_per_scan", "lesion_f1", "dice")
    return [key, *[f"{row[s][c]:.2f}" if s in row else "-" for s in sets for c in cells]]


def mean(row: dict, shifts: list[str]) -> str:
    """Mean F1 (FP per scan), Dice of ``row`` over the ``shifts`` it was scored on."""
    done = [row[s] for s in shifts if s in row]
    if not done:
        return "-"
    f1, fp, dice = (float(np.mean([r[k] for r in done])) for k in ("lesion_f1", "fp_per_scan", "dice"))
    return f"{f1:.2f} ({fp:.1f}), {dice:.2f}"


if __name__ == "__main__":
    main()
