"""Real-data quality: medseg's real configs against the plain MONAI tutorial recipe, same CPU budget,
same split, scored lesion-wise on held-out patients medseg never trained or tuned on.

    MEDSEG_REAL_DATA=../shared/data/real-lesions .venv/bin/python benchmarks/real_quality.py --out /tmp/rq \\
        [--minutes 10] [--ablation-minutes 6] [--only brats_flair brats4 ms] [--no-ablation] [--ensemble-folds 3] \\
        [--seed-ensemble 3] [--no-reference] [--rows REGEX] [--tag "[60 min]"]

Rows already in OUT/real_quality.json are kept and not run again, so the groups can be run one
``--only`` at a time (on a quiet machine each) into the same OUT; the table printed at the end has
every row of the file.

Groups (config, held-out cases = its data.exclude_cases):
  brats_flair  configs/brats_wt_flair.yaml; also scored on deepmedic_brats2015 (BraTS 2015, z-scored:
               another release and intensity scale, never seen in training)
  brats4       configs/brats_wt.yaml (FLAIR, T1, T1ce, T2)
  ms           configs/ms_flair.yaml (held-out MSLesSeg patient P39; its Tabriz held-out patients, skull
               on, in a row of their own)
  brats_flair_2rel  configs/brats_wt_flair.yaml on two releases (benchmarks/cases/brats_flair_two_releases.yaml):
               BraTS 2015's train/validation folders train and validate beside the raw cases; held out: the
               raw held-out cases and BraTS 2015's test folder (pat0001, pat0002), scored apart
Rows: medseg (the config as written, train.max_minutes = --minutes), monai_tutorial
(benchmarks/monai_recipe.py at the same budget), for ms "medseg + medseg tune" (the medseg row's
model at the threshold and minimum lesion volume ``medseg tune`` picks on the validation case, max
lesion F1; no further training), for brats_flair "medseg + mirror TTA" (the medseg row's model
predicting with the mean over the 8 flips, as nnU-Net predicts by default), for the BraTS groups
"medseg + fill holes" or, where the checkpoint fills them, "medseg, holes not filled" (the medseg
row's model with ``inference.fill_holes`` the other way round) and, last, "medseg + medseg tune
brats2023" (the medseg row's model at the point ``medseg tune --protocol brats2023`` picks on the
validation case: max BraTS lesion-wise Dice), and the ablations at
--ablation-minutes: the config as written, then one change each (augment light instead of nnunet;
unet or segresnet instead of dynunet; intensity standardisation robust or nyul instead of z-score,
background by Otsu; augment site instead of nnunet), and with
--ensemble-folds N one model vs the N-fold ensemble. With --seed-ensemble N, also "medseg, N-seed
ensemble" (``medseg train CONFIG --seeds N``: the config as written trained N times, seeds
0..N-1, --minutes each, probabilities averaged, at the config's operating point), "monai_tutorial,
N x minutes" (the MONAI recipe given the ensemble's whole budget; --no-reference leaves it out)
and for ms "medseg, N-seed ensemble + medseg tune" (the ensemble at the point ``medseg tune``
picks for it on the shared validation case). Prints one Markdown table (Dice, lesion recall
overall and by volume, precision, F1, FP per scan, training minutes; for the BraTS groups also the
BraTS 2023 glioma protocol's lesion-wise Dice, tumour recall and FP per scan, as
``medseg evaluate --protocol brats2023`` counts them) and medseg's ratios to the MONAI recipe;
writes OUT/real_quality.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from heldout import BRATS_COLUMNS, COLUMNS, evaluate_checkpoints, heldout_cases, markdown, score
from monai_recipe import predict_recipe, train_recipe
from report import add_markdown_option, write_markdown

from medseg.calibration.tune import run_tune
from medseg.config.load import load_config
from medseg.config.schema import ExperimentConfig, all_lesion_values
from medseg.data.case import Case
from medseg.data.sources.discover import from_config
from medseg.data.split import run_split
from medseg.ensembles.cv import train_folds, train_seeds
from medseg.inference.model import ensemble_members
from medseg.nn.checkpoint import load_checkpoint
from medseg.training.run import train

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "brats_flair": ROOT / "configs/brats_wt_flair.yaml",
    "brats4": ROOT / "configs/brats_wt.yaml",
    "ms": ROOT / "configs/ms_flair.yaml",
    "brats_flair_2rel": ROOT / "configs/brats_wt_flair.yaml",
}
# brats_flair_2rel: the FLAIR config trained on two releases (benchmarks/cases/brats_flair_two_releases.yaml):
# BraTS 2015's DeepMedic train/validation folders join training and validation, its test folder is held out
# beside the raw BraTS 2021 held-out cases (split fixed before its first run)
BRATS2015_TEST = ["brats_2013_pat0001_1", "brats_2013_pat0002_1"]
TABRIZ_TEST = [c for c in load_config(GROUPS["ms"]).data.exclude_cases if c.startswith("tabriz_")]  # second site
SCORED_APART = {  # held-out cases with a row of their own
    "brats_flair_2rel": {"BraTS2015 test pair": BRATS2015_TEST},
    "ms": {"Tabriz": TABRIZ_TEST},
}
EXTERNAL = {"brats_flair": ROOT / "configs/brats_flair.yaml"}  # BraTS 2015 (z-scored) cases, FLAIR
BRATS_GROUPS = {"brats_flair", "brats4", "brats_flair_2rel"}  # also scored under the BraTS 2023 glioma protocol
# medseg tune under the run's overlap rule counts every GT speck as a lesion: right for MS lesions,
# wrong for whole tumours: the BraTS groups are tuned with ``--protocol brats2023`` (as BraTS counts),
# as the plan's last row (tuning rewrites the checkpoint's point in place)
TUNED_GROUPS = {"ms"}
ABLATIONS = {
    "config as written": [],  # nnunet augmentation, dynunet + deep supervision: the others change one thing
    "augment light": ["augment.preset=light"],
    "unet": ["model.name=unet", "model.channels=[16,32,64,128]", "model.deep_supervision=false"],
    "segresnet": ["model.name=segresnet"],
    # site-robust standardisations and the site-shift augmentation (docs/how-to/other-site.md); whitestripe is
    # not among them: it refuses BraTS 2015's z-scored scans (no positive normal-tissue peak), which this group
    # scores on
    "normalize robust": ["preprocess.normalize=robust", "preprocess.background=otsu"],
    "normalize nyul": ["preprocess.normalize=nyul", "preprocess.background=otsu"],
    "augment site": ["augment.preset=site"],
}


def reference_row(name: str) -> str | None:
    """The MONAI recipe row at the same budget as the medseg row ``name`` (an N-seed ensemble's: N x --minutes;
    a ``--tag``ged row's: the reference row with the same tag, e.g. "medseg [60 min]" -> "monai_tutorial [60 min]")."""
    base, tag = re.fullmatch(r"(.*?)((?: \[[^]]*\])?)", name).groups()
    if base == "medseg":
        return f"monai_tutorial{tag}"
    m = re.fullmatch(r"medseg, (\d+)-seed ensemble", base)
    return f"monai_tutorial, {m.group(1)} x minutes{tag}" if m else None


def group_overrides(group: str) -> list[str]:
    """``--set`` overrides of the group's config: for brats_flair_2rel the two-release case list,
    the FLAIR config's held-out and validation cases plus BraTS 2015's test folder and pat0003."""
    if group != "brats_flair_2rel":
        return []
    data = load_config(GROUPS[group]).data
    held, val = [*data.exclude_cases, *BRATS2015_TEST], [*data.val_cases, "brats_2013_pat0003_1"]
    return [
        f"data.dataset={ROOT / 'benchmarks/cases/brats_flair_two_releases.yaml'}",
        "data.layout=list",
        "data.channels=null",
        "data.label=null",
        f"data.exclude_cases=[{','.join(held)}]",
        f"data.val_cases=[{','.join(val)}]",
    ]


def eval_sets(group: str, cfg: ExperimentConfig) -> dict[str, list[Case]]:
    """The case sets the group's rows are scored on: its held-out cases (those of SCORED_APART in
    rows of their own) and the external release's cases."""
    held, parts = heldout_cases(cfg), SCORED_APART.get(group, {})
    apart = {i for ids in parts.values() for i in ids}
    evals = {"held-out": [c for c in held if c.case_id not in apart]}
    evals |= {name: [c for c in held if c.case_id in ids] for name, ids in parts.items()}
    external = external_cases(group)
    if external:
        evals["BraTS2015 z-scored"] = external
    return evals


def external_cases(group: str) -> list[Case]:
    """Every case of the external release's dataset (none of them trains anything)."""
    if group not in EXTERNAL:
        return []
    return from_config(load_config(EXTERNAL[group]).data).require_clean()


def run_medseg(
    config: Path,
    out: Path,
    minutes: float,
    overrides: list[str],
    evals: dict[str, list[Case]],
    lesion_labels,
    brats: bool,
    folds: int | None = None,
    seeds: int | None = None,
) -> dict[str, dict]:
    """Train the config (``folds``: ``--folds N`` in ``minutes`` in all; ``seeds``: ``--seeds N`` at
    ``minutes`` each) and score it, an ensemble as the one model averaging its members'
    probabilities, at the config's threshold and minimum lesion volume."""
    cfg = load_config(
        config,
        [
            f"train.output_dir={out}",
            f"train.max_minutes={minutes / (folds or 1)}",
            "tracking.experiment=real-quality",
            *overrides,
        ],
    )
    start = time.perf_counter()
    if folds:
        checkpoints = [r.best_path for r in train_folds(cfg, folds, progress=False).results.values()]
    elif seeds:
        checkpoints = [r.best_path for r in train_seeds(cfg, seeds, progress=False).results.values()]
    else:
        checkpoints = [train(cfg, progress=False).best_path]
    minutes_used = (time.perf_counter() - start) / 60
    return {
        name: evaluate_checkpoints(checkpoints, cases, lesion_labels, brats) | {"train_min": minutes_used}
        for name, cases in evals.items()
    }


def run_again(
    run_folder: Path,
    evals: dict[str, list[Case]],
    lesion_labels,
    brats: bool,
    tune: bool = False,
    tta: bool | None = None,
    ensemble: bool = False,
    fill_holes: bool | None = None,
    protocol: str | None = None,
) -> dict[str, dict]:
    """A row's model scored again, no further training: the latest best.pt in ``run_folder`` (with
    ``ensemble``: every run below it, as one model averaging their probabilities); with ``tune`` at
    the operating point ``medseg tune`` picks on the validation cases (max lesion F1, with
    ``protocol`` the protocol's max lesion-wise Dice; the checkpoints are tuned in place, as a user
    would); ``tta`` and ``fill_holes`` True/False override the checkpoint's mirror TTA and
    ``inference.fill_holes``."""
    checkpoints = ensemble_members(run_folder) if ensemble else [sorted(run_folder.glob("*/best.pt"))[-1]]
    point = {}
    if tune:
        chosen = run_tune(run_folder if ensemble else checkpoints[0], protocol=protocol)["chosen"]
        point = {"tuned_threshold": chosen["threshold"], "tuned_min_lesion_mm3": chosen["min_lesion_mm3"]}
    return {
        name: evaluate_checkpoints(checkpoints, cases, lesion_labels, brats, tta, fill_holes) | point
        for name, cases in evals.items()
    }


def run_filled(
    run_folder: Path, fill: bool, evals: dict[str, list[Case]], lesion_labels, brats: bool
) -> dict[str, dict]:
    """:func:`run_again` with ``inference.fill_holes`` set to ``fill``; no rows when the row's
    checkpoint already has that setting (its own row is that one)."""
    if load_checkpoint(sorted(run_folder.glob("*/best.pt"))[-1]).config.inference.fill_holes == fill:
        return {}
    return run_again(run_folder, evals, lesion_labels, brats, fill_holes=fill)


def run_monai(
    config: Path, minutes: float, evals: dict[str, list[Case]], lesion_labels, brats: bool, overrides: list[str]
) -> dict[str, dict]:
    cfg = load_config(config, overrides)
    cases = from_config(cfg.data).require_clean()
    train_cases, val_cases = run_split(cases, cfg)
    spacing, patch = cfg.preprocess.target_spacing, cfg.sampling.patch_size
    net, info = train_recipe(train_cases, val_cases, spacing, patch, minutes, cfg.train.seed, cfg.train.batch_size)
    return {
        name: score([predict_recipe(net, c, spacing, patch) for c in cs], cs, lesion_labels, brats)
        | {"train_min": info["train_min"]}
        for name, cs in evals.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ablation-minutes", type=float, default=6.0)
    parser.add_argument("--only", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--ensemble-folds", type=int, default=None)
    parser.add_argument("--seed-ensemble", type=int, default=None)
    parser.add_argument("--no-reference", action="store_true", help="leave out the MONAI recipe rows not yet in OUT")
    parser.add_argument(
        "--rows",
        default=None,
        metavar="REGEX",
        help="run only the rows whose name matches, e.g. 'ablation: (config|normalize|augment site)'",
    )
    add_markdown_option(parser)
    parser.add_argument(
        "--tag",
        default="",
        help="appended to this run's row names, e.g. '[60 min]' beside rows at another budget; its runs train in "
        "OUT/<group>/<tag>/",
    )
    args = parser.parse_args()
    saved = args.out / "real_quality.json"
    rows: dict[str, dict] = json.loads(saved.read_text()) if saved.exists() else {}
    for group in args.only:
        base = group_overrides(group)
        cfg = load_config(GROUPS[group], base)
        evals, brats, values = eval_sets(group, cfg), group in BRATS_GROUPS, all_lesion_values(cfg.data)
        root = (
            args.out / group / re.sub(r"\W+", "_", args.tag).strip("_") if args.tag else args.out / group
        )  # tagged runs apart
        plan = [
            ("medseg", lambda: run_medseg(GROUPS[group], root / "medseg", args.minutes, base, evals, values, brats)),
            ("monai_tutorial", lambda: run_monai(GROUPS[group], args.minutes, evals, values, brats, base)),
        ]
        if group in TUNED_GROUPS:
            plan.append(("medseg + medseg tune", lambda: run_again(root / "medseg", evals, values, brats, tune=True)))
        if brats:  # the medseg row's model with inference.fill_holes the other way round (one of the two rows)
            plan += [
                (name, lambda fill=fill: run_filled(root / "medseg", fill, evals, values, brats))
                for name, fill in (("medseg + fill holes", True), ("medseg, holes not filled", False))
            ]
        if args.seed_ensemble:
            n = args.seed_ensemble
            plan += [
                (
                    f"medseg, {n}-seed ensemble",
                    lambda: run_medseg(
                        GROUPS[group], root / "seeds", args.minutes, base, evals, values, brats, seeds=n
                    ),
                ),
                (
                    f"monai_tutorial, {n} x minutes",
                    lambda: run_monai(GROUPS[group], n * args.minutes, evals, values, brats, base),
                ),
            ]
            if group in TUNED_GROUPS:  # after the row at the config's point: tuning rewrites the members' point
                plan.append(
                    (
                        f"medseg, {n}-seed ensemble + medseg tune",
                        lambda: run_again(root / "seeds", evals, values, brats, tune=True, ensemble=True),
                    )
                )
        if group == "brats_flair" and not args.no_ablation:
            plan.append(("medseg + mirror TTA", lambda: run_again(root / "medseg", evals, values, brats, tta=True)))
            plan += [
                (
                    f"ablation: {name}",
                    lambda o=o, name=name: run_medseg(
                        GROUPS[group],
                        root / name.replace(" ", "_"),
                        args.ablation_minutes,
                        [*base, *o],
                        evals,
                        values,
                        brats,
                    ),
                )
                for name, o in ABLATIONS.items()
            ]
            if args.ensemble_folds:
                plan += [
                    (
                        f"ablation: {args.ensemble_folds}-fold ensemble",
                        lambda: run_medseg(
                            GROUPS[group],
                            root / "folds",
                            args.ablation_minutes,
                            base,
                            evals,
                            values,
                            brats,
                            args.ensemble_folds,
                        ),
                    )
                ]
        if brats:  # last: tuning rewrites the medseg row's point, which the rows above use
            plan.append(
                (
                    "medseg + medseg tune brats2023",
                    lambda: run_again(root / "medseg", evals, values, brats, tune=True, protocol="brats2023"),
                )
            )
        if args.no_reference:
            plan = [(name, fn) for name, fn in plan if not name.startswith("monai_tutorial")]
        if args.rows:
            plan = [(name, fn) for name, fn in plan if re.search(args.rows, name)]
        for name, fn in plan:
            name = f"{name} {args.tag}" if args.tag else name
            if f"{group} / held-out / {name}" in rows:
                print(f"{group} / {name}: in {saved}, not run again", flush=True)
                continue
            for eval_name, row in fn().items():
                rows[f"{group} / {eval_name} / {name}"] = row
                print(f"{group} / {eval_name} / {name}", json.dumps(row), flush=True)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(rows, indent=1))
    table = markdown(rows, extra=(*BRATS_COLUMNS, "train_min"))
    ratios = "\n".join(ratio_lines(rows))
    columns = (
        f"columns: {', '.join(COLUMNS)}: lesions matched by overlap, every 26-connected GT component a lesion; "
        f"{', '.join(BRATS_COLUMNS)}: BraTS 2023 glioma protocol (GT merged by 3-voxel dilation, GT <= 50 mm3 unscored)"
    )
    print(f"{table}\n\n{ratios}\n{columns}")
    write_markdown(args.markdown, "Real scans, held-out patients", f"{table}\n\n```text\n{ratios}\n```", [columns])


def ratio_lines(rows: dict[str, dict[str, float]]) -> list[str]:
    """medseg against the MONAI recipe row of the same group, budget and split: Dice and F1 ratios, FP per scan."""
    lines = [
        "medseg / MONAI tutorial recipe, same budget and split (Dice ratio, lesion F1 ratio, FP per scan medseg vs "
        "MONAI):"
    ]
    for key, row in rows.items():
        group_eval, name = key.rsplit(" / ", 1)
        ref = rows.get(f"{group_eval} / {reference_row(name)}")
        if ref:
            label = group_eval if name == "medseg" else key
            lines.append(
                f"  {label}: Dice x{row['dice'] / max(ref['dice'], 1e-9):.2f}, "
                f"F1 x{row['lesion_f1'] / max(ref['lesion_f1'], 1e-9):.2f}, FP/scan {row['fp_per_scan']:.2f} vs "
                f"{ref['fp_per_scan']:.2f}"
            )
    return lines


if __name__ == "__main__":
    main()
