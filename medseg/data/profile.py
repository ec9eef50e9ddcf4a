"""A scan's profile, and the range of it a model was trained on.

Two numbers that change between sites and that intensity normalisation does not undo: the body's
volume (mL: the voxels preprocessing keeps, non-zero after its ``background`` step, as cropping
takes them) and the slice thickness (mm: the largest voxel spacing of the scan as stored). A
tighter or looser brain mask, the skull left on or taken off, partial coverage, thick 2D slices
for a model trained on 3D scans: each moves one of them outside the training scans' range, and
``medseg predict`` says so for that scan (a ``warning:`` line and the ``unlike_training`` column of
``summary.csv``). Intensity percentiles are not used: after z-scoring inside the body, a FLAIR and a
T1 scan of one patient, or a scan with fainter lesions, have nearly the same percentiles, so they
would warn about nothing that matters and miss nothing they could catch.

A checkpoint carries a :class:`ProfileRange` (untrusted: :meth:`ProfileRange.from_dict` checks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError

PROFILE_KEY = "scan_profile"  # where :class:`medseg.transforms.preprocess.ScanProfiled` puts a scan's profile
# a body from 0.8x the smallest to 1.25x the largest training body is in range: one MSLesSeg brain
# mask eroded by 4 voxels keeps 85 % of its volume and changes F1 little; the MS site the brain
# masks of which cover 15 % of the MNI box (58 % of MSLesSeg's) is outside
BODY_MARGIN = (0.8, 1.25)
SLICE_MARGIN = 1.5  # slices up to 1.5x the thickest training slice are in range


@dataclass(frozen=True)
class ScanProfile:
    """One scan: body volume (mL) and slice thickness (mm)."""

    body_ml: float
    slice_mm: float


def scan_profile(image: np.ndarray, affine: np.ndarray) -> ScanProfile:
    """The profile of ``image`` (C, X, Y, Z, background 0) on the grid of ``affine`` (4x4)."""
    columns = np.asarray(affine, dtype=float)[:3, :3]
    body = np.any(np.asarray(image) != 0, axis=0)
    voxel_ml = abs(float(np.linalg.det(columns))) / 1000.0
    return ScanProfile(round(float(body.sum()) * voxel_ml, 1), round(float(np.linalg.norm(columns, axis=0).max()), 2))


@dataclass(frozen=True)
class ProfileRange:
    """The training scans' range of each profile number, over ``cases`` scans."""

    cases: int
    body_ml: tuple[float, float]
    slice_mm: tuple[float, float]

    @classmethod
    def of(cls, profiles: Iterable[ScanProfile]) -> ProfileRange | None:
        """The range of ``profiles`` (None for none)."""
        items = list(profiles)
        if not items:
            return None
        body = [p.body_ml for p in items]
        slices = [p.slice_mm for p in items]
        return cls(len(items), (min(body), max(body)), (min(slices), max(slices)))

    def union(self, other: ProfileRange | None) -> ProfileRange:
        """Both ranges as one (the members of an ensemble)."""
        if other is None:
            return self
        return ProfileRange(
            self.cases + other.cases,
            (min(self.body_ml[0], other.body_ml[0]), max(self.body_ml[1], other.body_ml[1])),
            (min(self.slice_mm[0], other.slice_mm[0]), max(self.slice_mm[1], other.slice_mm[1])),
        )

    def unlike(self, p: ScanProfile) -> list[str]:
        """What in ``p`` lies outside this range (with the margins above), one phrase each."""
        out = []
        lo, hi = self.body_ml
        if not BODY_MARGIN[0] * lo <= p.body_ml <= BODY_MARGIN[1] * hi:
            out.append(
                f"body {p.body_ml:.0f} mL (training scans {lo:.0f}-{hi:.0f} mL: another brain mask, skull on or off, "
                "or partial coverage?)"
            )
        if p.slice_mm > SLICE_MARGIN * self.slice_mm[1]:
            out.append(f"slices {p.slice_mm:g} mm thick (training scans at most {self.slice_mm[1]:g} mm)")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The stored mapping."""
        return {"cases": self.cases, "body_ml": list(self.body_ml), "slice_mm": list(self.slice_mm)}

    @classmethod
    def from_dict(cls, raw: Any, source: Path | str) -> ProfileRange:
        """Read a stored mapping (untrusted).

        Raises:
            MedsegError: naming ``source``: not a mapping of a positive case count and two
                ranges of finite numbers >= 0 (low <= high).
        """
        cases = raw.get("cases") if isinstance(raw, Mapping) else None
        ok = isinstance(cases, int) and not isinstance(cases, bool) and cases > 0
        pairs = [raw.get(k) if ok else None for k in ("body_ml", "slice_mm")]
        for pair in pairs:
            ok = ok and isinstance(pair, list) and len(pair) == 2 and all(_non_negative(v) for v in pair)
            ok = ok and pair[0] <= pair[1]
        if not ok:
            raise MedsegError(
                f"{source}: training_scans is not a profile range (cases, body_ml [low, high], slice_mm [low, high]); "
                "use the best.pt or last.pt written by 'medseg train'"
            )
        return cls(raw["cases"], (float(pairs[0][0]), float(pairs[0][1])), (float(pairs[1][0]), float(pairs[1][1])))


def _non_negative(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
