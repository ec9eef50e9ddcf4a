"""Synthetic MRI-like lesion dataset in the Medical Segmentation Decathlon layout.

Each case is a head-like ellipsoid (scalp, grey matter, white matter, ventricles), a smooth
multiplicative bias field and Rician noise, with 0-8 irregular hyperintense lesions of 3-30 mm
across (log-uniform, so small lesions are common) and varying contrast. Volumes are written with an
anisotropic spacing and a non-identity, slightly oblique, LAS-flipped affine, so geometry bugs show.
Everything is drawn from one ``numpy`` generator seeded per case: the same seed gives the same
files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.io.volumes import save_nifti
from medseg.io.write import write_text

SYNTH_NAME = "medseg-synthetic"  # dataset.json 'name' of what synth writes (it may write over its own datasets only)
SHAPE = (96, 96, 64)


SPACING = (1.5, 1.5, 2.0)


@dataclass(frozen=True)
class SynthCase:
    """One synthetic case.

    Attributes:
        image: float32 array (X, Y, Z), arbitrary MRI units (tissue around 500-900).
        label: uint8 array (X, Y, Z), 1 = lesion.
        affine: (4, 4) voxel-to-world (RAS mm) matrix.
        n_lesions: lesions placed (26-connected components of ``label``).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    n_lesions: int


def oblique_affine(rng: np.random.Generator, spacing: tuple[float, float, float], shape: tuple[int, ...]) -> np.ndarray:
    """A LAS-flipped affine rotated by 3-8 degrees about a random axis, centred near the origin."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(3.0, 8.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    linear = rot @ np.diag([-spacing[0], spacing[1], spacing[2]])
    affine = np.eye(4)
    affine[:3, :3] = linear
    centre = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = -linear @ centre + rng.uniform(-10, 10, size=3)
    return affine


def _grid_mm(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm relative to the volume centre, one sparse array per axis."""
    return [
        ((np.arange(n) - (n - 1) / 2.0) * s).reshape([-1 if i == a else 1 for i in range(3)])
        for a, (n, s) in enumerate(zip(shape, spacing))
    ]


def _ellipsoid(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _anatomy(rng: np.random.Generator, grid: list[np.ndarray], head_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue intensities (X, Y, Z) float32 and the brain mask (X, Y, Z) bool."""
    zero = np.zeros(3)
    head = _ellipsoid(grid, zero, head_r)
    brain = _ellipsoid(grid, zero, head_r * 0.86)
    white = _ellipsoid(grid, zero, head_r * 0.70)
    img = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=np.float32)
    img[head] = 350.0 * rng.uniform(0.9, 1.1)  # scalp / skull
    img[brain] = 600.0 * rng.uniform(0.9, 1.1)  # grey matter
    img[white] = 800.0 * rng.uniform(0.9, 1.1)  # white matter
    for side in (-1, 1):  # ventricles
        c = np.array([side * head_r[0] * 0.12, head_r[1] * 0.05, 0.0])
        img[_ellipsoid(grid, c, head_r * np.array([0.08, 0.3, 0.18]))] = 150.0
    return img, brain


def _bias_field(rng: np.random.Generator, grid: list[np.ndarray], head_r: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field exp(quadratic polynomial), about +/-20 %."""
    u = [g / r for g, r in zip(grid, head_r)]
    terms = [u[0], u[1], u[2], u[0] * u[1], u[1] * u[2], u[0] ** 2, u[2] ** 2]
    return np.exp(sum(rng.uniform(-0.08, 0.08) * t for t in terms)).astype(np.float32)


def _lesion_blob(rng: np.random.Generator, grid: list[np.ndarray], centre: np.ndarray, diameter: float) -> np.ndarray:
    """An irregular star-convex blob of about ``diameter`` mm across (X, Y, Z) bool."""
    radii = diameter / 2.0 * rng.uniform(0.75, 1.25, size=3)
    dist = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)))
    coarse = rng.normal(size=(4, 4, 4))
    shape = dist.shape
    wobble = ndimage.zoom(coarse, [n / 4.0 for n in shape], order=1)[: shape[0], : shape[1], : shape[2]]
    return dist <= 1.0 + 0.18 * np.clip(wobble, -1.5, 1.5)


def make_case(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = SHAPE,
    spacing: tuple[float, float, float] = SPACING,
    n_lesions: int | None = None,
) -> SynthCase:
    """Draw one synthetic case (see module docstring). ``n_lesions=None`` draws 0-8."""
    grid = _grid_mm(shape, spacing)
    extent = np.array(shape) * np.array(spacing) / 2.0
    head_r = extent * rng.uniform(0.80, 0.90, size=3)
    img, brain = _anatomy(rng, grid, head_r)
    label = np.zeros(shape, dtype=np.uint8)
    if n_lesions is None:
        n_lesions = 0 if rng.random() < 0.15 else int(rng.integers(1, 9))
    placed, tries = 0, 0
    keep_out = np.zeros(shape, dtype=bool)
    while placed < n_lesions and tries < 200:
        tries += 1
        diameter = float(np.exp(rng.uniform(np.log(3.0), np.log(30.0))))
        centre = rng.uniform(-0.6, 0.6, size=3) * head_r * 0.86
        blob = _lesion_blob(rng, grid, centre, diameter)
        if blob.sum() < 2 or (blob & ~brain).any() or (blob & keep_out).any():
            continue  # whole lesions only: a blob clipped by the brain edge would leave fragments
        # FLAIR-like: brighter than any brain tissue (white matter ~800), partial volume at the edge
        level = 800.0 * (1.0 + rng.uniform(0.30, 0.65))
        # lesion voxels at full level (the label marks what is visibly bright), soft rim outside
        soft = np.maximum(blob, ndimage.gaussian_filter(blob.astype(np.float32), 0.6))
        img = img * (1 - soft) + level * soft
        label[blob] = 1
        keep_out |= ndimage.binary_dilation(blob, iterations=2)
        placed += 1
    img *= _bias_field(rng, grid, head_r)
    noise = 25.0
    img = np.sqrt((img + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2).astype(np.float32)
    return SynthCase(img, label, oblique_affine(rng, spacing, shape), placed)


def refuse_foreign_folder(out: Path) -> None:
    """``synth`` writes into an empty (or new) folder, or over a synthetic dataset it wrote
    before (``make demo`` again); never into a folder holding anything else.

    Raises:
        MedsegError: naming the folder and the fix.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise MedsegError(f"{out}: is a file; give synth a folder to create")
    meta = out / "dataset.json"
    try:
        ours = meta.is_file() and json.loads(meta.read_text()).get("name") == SYNTH_NAME
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours and any(out.iterdir()):
        raise MedsegError(f"{out}: already holds files that 'medseg synth' did not write; pick an empty or new folder")


def write_dataset(
    out: Path | str,
    cases: int,
    seed: int = 0,
    test_cases: int = 0,
    shape: tuple[int, int, int] = SHAPE,
    spacing: tuple[float, float, float] = SPACING,
) -> Path:
    """Write ``cases`` training cases (imagesTr/labelsTr) and ``test_cases`` held-out ones
    (imagesTs/labelsTs) plus ``dataset.json``. Case ``i`` depends only on ``(seed, i)``.

    Returns:
        The path of ``dataset.json``.
    """
    out = Path(out)
    refuse_foreign_folder(out)
    entries: dict[str, list] = {"training": [], "test": []}
    for split, sub, count, offset in (("training", "Tr", cases, 0), ("test", "Ts", test_cases, cases)):
        if count:
            (out / f"images{sub}").mkdir(parents=True, exist_ok=True)
            (out / f"labels{sub}").mkdir(parents=True, exist_ok=True)
        for i in range(offset, offset + count):
            case = make_case(np.random.default_rng([seed, i]), shape, spacing)
            name = f"synth_{i:03d}.nii.gz"
            save_nifti(case.image, case.affine, out / f"images{sub}" / name)
            save_nifti(case.label, case.affine, out / f"labels{sub}" / name)
            entries[split].append({"image": f"./images{sub}/{name}", "label": f"./labels{sub}/{name}"})
    meta = {
        "name": SYNTH_NAME,
        "description": f"Synthetic MRI-like lesions (seed {seed})",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": cases,
        "numTest": test_cases,
        "training": entries["training"],
        "test": [e["image"] for e in entries["test"]],
        "test_labeled": entries["test"],  # medseg extension: held-back cases with their labels
    }
    path = out / "dataset.json"
    write_text(json.dumps(meta, indent=2), path)
    return path
