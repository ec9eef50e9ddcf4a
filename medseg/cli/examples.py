"""The "Examples" section that ends each command's help: real command lines, kept in one place
(attached when ``medseg.cli.app`` registers the commands). ``\\b`` keeps Click from rewrapping them.
"""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "synth": ("medseg synth --out data", "medseg synth --out data --cases 8 --test-cases 4 --shape 64,64,48 --seed 1"),
    "train": (
        "medseg train configs/demo.yaml",
        "medseg train configs/brats_wt.yaml --set train.epochs=100 --device cuda --quiet",
        "medseg train configs/brats_wt.yaml --folds 5 --tracking-uri http://localhost:5000",
    ),
    "predict": (
        "medseg predict runs/20261123-101500/best.pt scans/ --out masks",
        "medseg predict runs/20261123-101500/best.pt --dataset configs/demo.yaml --split test --out masks --save-prob",
        "medseg predict models:/lesions/3 scan.nii.gz --out masks --tracking-uri http://localhost:5000",
    ),
    "evaluate": (
        "medseg evaluate masks/ data/labelsTs --out eval",
        "medseg evaluate masks/synth_020.nii.gz data/labelsTs/synth_020.nii.gz",
        "medseg evaluate masks/ configs/brats_wt.yaml --protocol brats2023 --out eval",
    ),
    "review": (
        "medseg review masks/ --images scans/ --ref labels/",
        "medseg review masks/ --images data/imagesTs --ref data/labelsTs --out review_site --serve",
    ),
    "tune": (
        "medseg tune runs/20261123-101500/best.pt",
        "medseg tune runs/cv5-s0 --min-recall 0.9",
        "medseg tune runs/20261123-101500/best.pt --protocol brats2023 --device cuda",
    ),
    "check": (
        "medseg check data",
        "medseg check scans/ --layout pattern --channel 'scans/{case}_flair.nii.gz' --label 'scans/{case}_seg.nii.gz'",
        "medseg check configs/brats_wt.yaml --set data.dataset=/data/BraTS2023 --quiet",
    ),
    "plan": (
        "medseg plan data",
        "medseg plan data --out plans --memory-gb 24",
        "medseg plan configs/brats_wt.yaml --set data.dataset=/data/BraTS2023 --out plans",
    ),
    "show": (
        "medseg show data/imagesTr/synth_000.nii.gz --ref data/labelsTr/synth_000.nii.gz",
        "medseg show scan.nii.gz --pred masks/scan.nii.gz --ref labels/scan.nii.gz --out pictures",
    ),
    "demo": ("medseg demo", "medseg demo --out demo_small --cases 12 --test-cases 4 --set train.epochs=2 --quiet"),
    "export": (
        "medseg export runs/20261123-101500/best.pt --out exported",
        "medseg export models:/lesions/3 --format onnx --out exported --tracking-uri http://localhost:5000",
        "medseg export runs/20261123-101500/best.pt --format mlflow --out served",
    ),
    "runs": (
        "medseg runs",
        "medseg runs --sort recall --limit 5",
        "medseg runs --tracking-uri sqlite:///runs/mlflow.db --sort fp",
    ),
}


def examples_section(command: str) -> str:
    """``Examples:`` and the command's lines, one per line (Click's ``\\b`` keeps the breaks).

    Raises:
        KeyError: a command without examples (a new command must add its own here).
    """
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])
