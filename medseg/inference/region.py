"""Region masks of ``medseg predict --mask``: one mask per scan (e.g. its brain mask), found by the
scan's case name and read on the scan's own grid.

Grammar of ``--mask MASKS`` (one rule, the one of labels beside predictions):

* a folder, a file or a glob: the mask of a scan is the file among them named as the scan (its
  case name, the scan's file name without its image suffix, or the case id of a ``--dataset``
  case) with any image suffix, e.g. ``brain/case7.nii.gz`` for ``scans/case7.nrrd``;
* a path with ``{case}``: the case name put in, e.g. ``brain/{case}_mask.nii.gz``.

A mask must be on its scan's grid (the same shape and affine, as a label is); it is never
resampled, since nearest-neighbour resampling done silently could move the brain's edge by a voxel.
Voxels > 0 are inside. Masks are inputs: the batch plans its outputs so that none is written to
(:class:`medseg.io.outputs.OutputPlan`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.geometry import read_geometry
from medseg.io.paths import IMAGE_SUFFIXES, strip_suffix
from medseg.io.volumes import read_array

CASE = "{case}"
GRID_ATOL_MM = 1e-3  # the tolerance of the per-channel grid check of predict


@dataclass(frozen=True)
class RegionMasks:
    """The masks ``--mask`` names: ``spec`` as given, ``files`` every mask file found (inputs of
    the batch), ``by_name`` case name -> file (a folder, file or glob), empty for a ``{case}`` path."""

    spec: str
    files: tuple[Path, ...]
    by_name: dict[str, Path] = field(default_factory=dict)

    def path_for(self, case: str, scan: Path) -> Path:
        """The mask file of ``case`` (whose scan is ``scan``).

        Raises:
            MedsegError: naming the scan: no mask for it.
        """
        if CASE in self.spec:
            path = Path(self.spec.replace(CASE, case))
            if path.is_file():
                return path
            missing = f"no region mask {path}"
        else:
            found = self.by_name.get(case)
            if found is not None:
                return found
            missing = f"no region mask named {case} (e.g. {case}.nii.gz) in --mask {self.spec}"
        raise MedsegError(f"{scan}: {missing}; add its mask on the scan's grid, or run without --mask")

    def read(self, case: str, scan: Path) -> np.ndarray:
        """The region of ``case``: bool (X, Y, Z), True where its mask is > 0, on ``scan``'s grid.

        Raises:
            MedsegError: no mask (:meth:`path_for`), a mask on another grid or without any voxel inside.
        """
        return read_region(self.path_for(case, scan), scan)


def read_region(path: Path, scan: Path) -> np.ndarray:
    """The region mask file ``path`` as bool (X, Y, Z), True where > 0, on ``scan``'s grid.

    Raises:
        MedsegError: naming the mask: on another grid than ``scan`` or without any voxel inside.
    """
    shape, affine = read_geometry(path)
    check_grid(path, shape, affine, scan)
    data, _ = read_array(path)
    region = np.asarray(data).reshape(shape[:3]) > 0
    if not region.any():
        raise MedsegError(
            f"{path}: region mask has no voxel > 0, so every lesion of {scan} would be removed; pass the scan's "
            "brain mask (voxels > 0 inside)"
        )
    return region


def check_grid(path: Path, shape: tuple[int, ...], affine: np.ndarray, scan: Path) -> None:
    """The mask ``path`` (its header's ``shape``, ``affine`` (4, 4)) lies on the grid of ``scan``.

    Raises:
        MedsegError: naming the mask: another shape or affine (by more than :data:`GRID_ATOL_MM`).
    """
    scan_shape, scan_affine = read_geometry(scan)
    extra = [int(s) for s in shape[3:]]
    same_shape = tuple(shape[:3]) == tuple(scan_shape[:3]) and all(s == 1 for s in extra)
    if same_shape and np.allclose(affine, scan_affine, atol=GRID_ATOL_MM):
        return
    what = (
        f"shape {tuple(shape)}, the scan {tuple(scan_shape[:3])}"
        if not same_shape
        else f"affine differs from the scan's by up to {np.abs(affine - scan_affine).max():.3g} mm"
    )
    raise MedsegError(
        f"{path}: region mask is not on the grid of {scan} ({what}); resample the mask onto the scan's grid with "
        "nearest-neighbour interpolation (medseg does not resample masks) and pass it again"
    )


def find_region_masks(spec: str) -> RegionMasks:
    """Resolve ``--mask`` (see the module docstring) once, before the batch starts.

    Raises:
        MedsegError: naming ``--mask``: it matches no mask file, or two files have one case name.
    """
    path = Path(spec)
    if CASE in spec:
        files = sorted(Path(f) for f in glob.glob(spec.replace(CASE, "*")) if f.endswith(IMAGE_SUFFIXES))
    elif path.is_dir():
        files = sorted(f for f in path.iterdir() if f.name.endswith(IMAGE_SUFFIXES) and not f.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(f) for f in glob.glob(spec) if f.endswith(IMAGE_SUFFIXES))
    if not files:
        raise MedsegError(
            f"--mask {spec}: no mask files (.nii, .nii.gz, .nrrd, .mha) found; pass a folder of masks named as the "
            "scans, or a path with {case}, e.g. 'brain/{case}_mask.nii.gz'"
        )
    if CASE in spec:
        return RegionMasks(spec, tuple(files))
    by_name: dict[str, Path] = {}
    for f in files:
        other = by_name.setdefault(strip_suffix(f), f)
        if other != f:
            raise MedsegError(
                f"--mask {spec}: {other.name} and {f.name} are both the mask of case {strip_suffix(f)}; keep one"
            )
    return RegionMasks(spec, tuple(files), by_name)
