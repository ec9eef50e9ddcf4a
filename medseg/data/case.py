"""A case: its image files (one per channel) and label; MONAI data dicts of cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.geometry import read_geometry


@dataclass(frozen=True)
class Case:
    """One case: its image files (one per channel, or one 3D/4D file) and, for training and
    evaluation, its label file."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.images, (str, Path)):
            object.__setattr__(self, "images", (Path(self.images),))

    @property
    def image(self) -> Path:
        """The first channel's file: the reference grid of the case."""
        return self.images[0]


def check_pair(case: Case, atol: float = 1e-3) -> None:
    """Image and label must share shape and affine (within ``atol`` mm).

    Raises:
        MedsegError: naming the label file and the two geometries.
    """
    if case.label is None:
        return
    ishape, iaff = read_geometry(case.image)
    lshape, laff = read_geometry(case.label)
    if tuple(ishape[:3]) != tuple(lshape[:3]):
        raise MedsegError(
            f"{case.label}: label shape {lshape} differs from image shape {ishape} ({case.image.name}); use the "
            "label made for this image"
        )
    if not np.allclose(iaff, laff, atol=atol):
        raise MedsegError(
            f"{case.label}: label affine differs from the image's ({case.image.name}) by more than {atol} mm; "
            "resample the label onto the image grid (nearest neighbour)"
        )


def image_entry(images: Sequence[Path]) -> str | list[str]:
    """MONAI ``LoadImaged`` input: one path, or a list of per-channel paths it stacks as channels."""
    return str(images[0]) if len(images) == 1 else [str(p) for p in images]


def as_dicts(cases: Sequence[Case]) -> list[dict]:
    """MONAI data dicts ``{"image", "label", "case_id"}``."""
    return [{"image": image_entry(c.images), "label": str(c.label), "case_id": c.case_id} for c in cases]
