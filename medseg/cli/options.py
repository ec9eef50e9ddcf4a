"""The command line's grammar: one name, one help text and one set of choices per meaning, defined
here once and used by every command that takes it (``tests/test_cli_grammar.py`` walks the commands
and fails on a second name for a meaning, or on one name with two help texts).

Choices are ``str`` enums, so ``--help`` lists them (``[auto|msd|...]``), shell completion offers
them and the parser refuses anything else before a command starts. Each factory returns a fresh
``typer.Option`` (a command's default value), so no two commands share one mutable object. The
options of one command only (``predict``'s ``--tta``, ``evaluate``'s ``--matching``, ...) have
their factories in that command's module, so that each signature is one line per option.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}  # -h everywhere, as --help


class Layout(str, Enum):
    """``--layout``: how a dataset folder or file is read."""

    auto = "auto"
    msd = "msd"
    nnunet = "nnunet"
    list = "list"
    pattern = "pattern"


class Split(str, Enum):
    """``--split``: which cases of a dataset or config."""

    training = "training"
    test = "test"
    test_labeled = "test_labeled"


class Matching(str, Enum):
    """``--matching``: the lesion matching rule (:class:`medseg.config.schema.EvalConfig`)."""

    overlap = "overlap"
    iou = "iou"
    dsc = "dsc"


class Connectivity(str, Enum):
    """``--connectivity``: the voxel neighbourhood that joins voxels into one lesion."""

    faces = "6"
    edges = "18"
    corners = "26"


class Protocol(str, Enum):
    """``--protocol``: medseg's rules or a BraTS 2023 lesion-wise protocol
    (:data:`medseg.evaluation.brats.PROTOCOLS`, listed here so that ``medseg --help`` imports no numpy)."""

    medseg = "medseg"
    brats2023 = "brats2023"
    brats2023_gli = "brats2023-gli"
    brats2023_ssa = "brats2023-ssa"
    brats2023_ped = "brats2023-ped"
    brats2023_men = "brats2023-men"
    brats2023_met = "brats2023-met"


class EmptyDice(str, Enum):
    """``--empty-dice``: the Dice of a case whose prediction and reference are both empty."""

    one = "1"
    nan = "nan"


class RunSort(str, Enum):
    """``--sort`` of ``medseg runs`` (:data:`medseg.tracking.runs.SORTS`)."""

    started = "started"
    name = "name"
    epoch = "epoch"
    recall = "recall"
    precision = "precision"
    fp = "fp"
    dice = "dice"
    heldback_recall = "heldback_recall"


class Engine(str, Enum):
    """``--engine`` of predict: what runs the network in the sliding window."""

    torch = "torch"
    onnxruntime = "onnxruntime"


class OutputFormat(str, Enum):
    """``--output-format`` of predict: the masks alone, or also a DICOM SEG per DICOM scan."""

    nifti = "nifti"
    dicom_seg = "dicom-seg"


class ExportFormat(str, Enum):
    """``--format`` of export: the model file format."""

    onnx = "onnx"
    mlflow = "mlflow"


DATASET_HELP = (
    "Dataset folder (MSD, nnU-Net raw), case list (.csv/.yaml), or an experiment config whose data: section is used."
)
LAYOUT_HELP = (
    "How the dataset is read: auto (detected), msd (dataset.json), nnunet (nnU-Net raw), list (a .csv/.yaml case list) "
    "or pattern (a folder of scans named by --channel and --label globs). Not for a config: its data: section says."
)
CHANNEL_HELP = "pattern layout: a glob per channel with {case}; other layouts: a channel name to keep (repeatable)."
LABEL_HELP = "pattern layout: the label glob with {case}, e.g. 'labels/{case}_seg.nii.gz'."
SPLIT_HELP = (
    "Cases of a dataset or config (predict --dataset, evaluate REF): test (a config's held-out cases: its "
    "data.exclude_cases, "
    "else the dataset's imagesTs / MSD test), training, or test_labeled. Default: the held-out cases where the source "
    "has them, else every case of a case list or pattern folder (which have no test split: asking for one is an error)."
)
SET_HELP = (
    "Override a config key, e.g. --set train.epochs=2 (repeatable); with a dataset argument only when it is an "
    "experiment config."
)
DEVICE_HELP = (
    "auto (CUDA when available), cpu, cuda or cuda:N (a GPU index). train and demo set it as the config's "
    "train.device, "
    "which takes auto, cpu or cuda: choose their GPU with CUDA_VISIBLE_DEVICES=N."
)
TRACKING_URI_HELP = (
    "MLflow tracking URI, e.g. sqlite:///runs/mlflow.db or http://host:5000 (default: $MLFLOW_TRACKING_URI). "
    "train, demo: where the run is logged (sets tracking.uri). predict, tune, export: where runs:/ and models:/ URIs "
    "are "
    "found; tune logs its tuning there (a checkpoint's own store is written to only when given here). "
    "evaluate: logs the evaluation (tables, metrics, the --review site) as a new run there, only when given. "
    "runs: the store listed (default: $MLFLOW_TRACKING_URI, else every store found under ./runs and ./demo_out)."
)
QUIET_HELP = "Print only the result and errors: no progress bars, no per-case or detail lines."
LESION_LABELS_HELP = (
    "Label values that are lesion, e.g. 1,2,3,4 (default: a config's data.lesion_labels, else every non-zero value)."
)
MIN_LESION_MM3_HELP = (
    "Lesion size filter in mm3: evaluate leaves out GT and predicted lesions below it; predict removes predicted "
    "lesions below it (predict's default: the model's operating point)."
)
MIN_LESION_VOXELS_HELP = (
    "Lesion size filter in voxels: evaluate leaves out GT and predicted lesions below it; predict removes "
    "predicted lesions below it. With --min-lesion-mm3: the larger of the two per scan."
)
PROTOCOL_HELP = (
    "medseg (evaluate: the matching options; tune: the run's eval: rules, max lesion F1) or a BraTS 2023 lesion-wise "
    "protocol: brats2023 (= brats2023-gli), brats2023-ssa, -ped (dilation 3, GT > 50 mm3), brats2023-men (1, 50), "
    "brats2023-met (1, 2); GT lesions merged by 18-connected dilation, lesion-wise Dice/HD95 with penalties 0/374 mm "
    "(tune: max mean lesion-wise Dice)."
)
SEED_HELP = "Random seed: the same seed writes the same files (demo: the same data and run)."
CASES_HELP = "Synthetic training cases (imagesTr/labelsTr)."
TEST_CASES_HELP = "Synthetic held-back cases (imagesTs/labelsTs)."
REF_HELP = (
    "Reference (ground-truth) label on the scan's grid, drawn green: a label file (show; review beside one mask "
    "file), or a folder of labels named as the masks (review)."
)
REVIEW_HELP = (
    "Also write the review site into --out: review/index.html, a page per scan with a 3D viewer, the lesion table "
    "and reviewer marks (see medseg review)."
)


def layout_option() -> Any:
    """``--layout`` (a :class:`Layout`, default auto)."""
    return typer.Option(Layout.auto, "--layout", help=LAYOUT_HELP)


def channel_option() -> Any:
    """``--channel`` (repeatable)."""
    return typer.Option(None, "--channel", help=CHANNEL_HELP)


def label_option() -> Any:
    """``--label``: the label glob of the pattern layout."""
    return typer.Option(None, "--label", help=LABEL_HELP)


def split_option() -> Any:
    """``--split`` (a :class:`Split`, default None: the source's held-out cases)."""
    return typer.Option(None, "--split", help=SPLIT_HELP)


def dataset_option() -> Any:
    """``--dataset`` of predict (cases to segment too) and tune (cases to choose the point on)."""
    return typer.Option(
        None,
        "--dataset",
        help="The cases of a dataset (multi-channel cases: one file per channel): predict segments them too (masks "
        "named <case_id>); tune chooses the operating point on them, with their labels, instead of on the run's "
        "validation cases (e.g. one site's validation scans). " + DATASET_HELP,
    )


def mask_option() -> Any:
    """``--mask MASKS``: region masks (:mod:`medseg.inference.region`) of predict and tune."""
    return typer.Option(
        None,
        "--mask",
        metavar="MASKS",
        help="Region masks (e.g. brain masks), each on its scan's grid: a folder, file or glob of masks named as the "
        "scans (case name or --dataset case id, any image suffix), or a path with {case}, e.g. "
        "'brain/{case}_mask.nii.gz'. Predicted lesions with more than half of their voxels outside the region "
        "(voxels > 0) are removed (tune: before it counts them).",
    )


def set_option() -> Any:
    """``--set KEY=VALUE`` (repeatable)."""
    return typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP)


def device_option(default: str | None = "auto") -> Any:
    """``--device`` (checked by :func:`medseg.cli.common.check_device`); train and demo: default
    None, the config's ``train.device``."""
    return typer.Option(default, "--device", help=DEVICE_HELP)


def tracking_uri_option() -> Any:
    """``--tracking-uri`` (default None: ``$MLFLOW_TRACKING_URI``)."""
    return typer.Option(None, "--tracking-uri", help=TRACKING_URI_HELP)


def quiet_option() -> Any:
    """``--quiet``."""
    return typer.Option(False, "--quiet", help=QUIET_HELP)


def lesion_labels_option() -> Any:
    """``--lesion-labels`` (parsed by :func:`medseg.cli.common.lesion_values`)."""
    return typer.Option(None, "--lesion-labels", help=LESION_LABELS_HELP)


def min_lesion_mm3_option(default: float | None) -> Any:
    """``--min-lesion-mm3`` with the command's ``default``."""
    return typer.Option(default, "--min-lesion-mm3", min=0, help=MIN_LESION_MM3_HELP)


def min_lesion_voxels_option(default: int | None) -> Any:
    """``--min-lesion-voxels`` with the command's ``default``."""
    return typer.Option(default, "--min-lesion-voxels", min=0, help=MIN_LESION_VOXELS_HELP)


def protocol_option() -> Any:
    """``--protocol`` (a :class:`Protocol`, default medseg)."""
    return typer.Option(Protocol.medseg, "--protocol", help=PROTOCOL_HELP)


def seed_option() -> Any:
    """``--seed``."""
    return typer.Option(0, "--seed", min=0, help=SEED_HELP)


def ref_option() -> Any:
    """``--ref``: a reference label file or folder (default None)."""
    return typer.Option(None, "--ref", help=REF_HELP)


def review_option() -> Any:
    """``--review`` of predict and evaluate."""
    return typer.Option(False, "--review", help=REVIEW_HELP)


def value(choice: Enum | None) -> str | None:
    """The plain string of a choice (None stays None): ``f"{Layout.msd}"`` would read ``Layout.msd``."""
    return None if choice is None else str(choice.value)
