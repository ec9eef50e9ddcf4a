"""Geometry from headers alone: shape and RAS affine, sanity of the header, RAS axis order and spacing;
and the one rule on scan size (:func:`check_scan_size`), checked on the header before any voxel is read.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.spatialimages import HeaderDataError

from medseg.errors import MedsegError, shorten
from medseg.io.dicom import DicomSeries, find_series
from medseg.io.paths import check_data_files

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# The one cap on scan size, in GB (10^9 bytes) of memory needed to process it; $MEDSEG_MAX_SCAN_GB overrides it.
# The default lets a 512x512x1000 CT (8.4 GB by the rule below) or a 240x240x155x4 BraTS case
# (1.1 GB) through on a 24 GB machine, leaving the rest for Python, torch and the model.
MAX_SCAN_GB_ENV = "MEDSEG_MAX_SCAN_GB"
DEFAULT_MAX_SCAN_GB = 16.0
# Memory per voxel (channels included) while one scan is processed, the most any command needs:
# predict holds about eight float32 copies of the scan at once (the loaded array, the cropped and
# reoriented one, Spacingd's output and the resampling grid it builds, the probability map and the
# window-count map, the map resampled back onto the scan's grid, the mask). Measured: peak RSS of
# predict_classes on oblique float32 NIfTI scans grows by 30-33 bytes per voxel (4.7M -> 12.6M voxels).
# Voxels are counted on the scan's own grid: a target spacing much finer than the scan's needs more.
WORKING_BYTES_PER_VOXEL = 32

# NIfTI header extensions (between the 352-byte header and the voxels) are read whole by nibabel:
# real ones (DICOM, AFNI, JSON sidecars) are kilobytes; more than this is a corrupt or hostile header.
MAX_NIFTI_EXTENSION_BYTES = 64 * 2**20
MAX_NIFTI_EXTENSIONS = 256


_WARNED: set[str] = set()


def max_scan_gb() -> float:
    """The scan-size cap in GB: ``$MEDSEG_MAX_SCAN_GB``, else :data:`DEFAULT_MAX_SCAN_GB`.

    Raises:
        MedsegError: the variable is set to something other than a positive number.
    """
    raw = os.environ.get(MAX_SCAN_GB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_SCAN_GB
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise MedsegError(
            f"{MAX_SCAN_GB_ENV}={shorten(raw, 40)}: not a positive number of GB; "
            f"set it to e.g. {MAX_SCAN_GB_ENV}=32, or unset it for the default {DEFAULT_MAX_SCAN_GB:g}"
        )
    return value


def check_scan_size(path: Path | str, shape: Sequence[int], components: int = 1) -> None:
    """Refuse, from the header alone, a scan whose axes are empty or negative, or which needs more
    than :func:`max_scan_gb` to process (``voxels x components x`` :data:`WORKING_BYTES_PER_VOXEL`).
    Sizes are Python integers: no header value can overflow them.

    Raises:
        MedsegError: naming the file, the size it needs and the cap.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape) or components <= 0:
        raise MedsegError(f"{path}: the header gives an empty axis (shape {shape}); re-export the file")
    need = math.prod(shape) * int(components) * WORKING_BYTES_PER_VOXEL
    limit = max_scan_gb()
    if need > limit * 1e9:
        dims = "×".join(str(s) for s in (*shape, *([components] if components > 1 else [])))
        raise MedsegError(
            f"{path}: needs about {_gb(need)} GB to process ({dims} voxels), over the {_gb(limit * 1e9)} GB limit; "
            f"crop or resample the scan, or raise {MAX_SCAN_GB_ENV}"
        )


def _gb(n_bytes: float) -> str:
    """GB with one decimal (``17.2``); three significant digits below 1 GB or above 100000 GB."""
    gb = float(n_bytes) / 1e9
    return f"{gb:.1f}" if 1 <= gb < 1e5 else f"{gb:.3g}"


def read_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and (4, 4) voxel-to-RAS affine from the header only (a folder: its DICOM series,
    :func:`series_geometry`); the scan's size is checked
    (:func:`check_scan_size`) so that a caller may read its voxels next.

    Raises:
        MedsegError: unreadable or corrupt file, or a scan over the size cap.
    """
    if Path(path).is_symlink() and not Path(path).exists():
        raise MedsegError(f"{path}: is a symbolic link that points nowhere or loops; point it at the scan file")
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise MedsegError(f"{path}: is empty (0 bytes); copy or export the scan again")
    if Path(path).is_dir():  # a folder of DICOM files (medseg.io.dicom)
        return series_geometry(path)[:2]
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            _raw_nifti_spacing(path, nifti_header(path))
            img = nib.load(str(path))
            return _sane(path, tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float))
        reader = open_sitk(path)
        return _sane(path, tuple(reader.GetSize()), sitk_affine(reader), reader.GetNumberOfComponents())
    except MedsegError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise MedsegError(
            f"{path}: cannot read the image header ({type(exc).__name__}: {shorten(first)}); re-export the file"
        ) from None


def open_sitk(path: Path | str) -> sitk.ImageFileReader:
    """A SimpleITK reader of ``path`` with the header read (no voxels) and the size checked:
    ``.Execute()`` then reads the voxels.

    Raises:
        MedsegError: a scan over the size cap, or a detached header whose data file lies outside
            its folder (SimpleITK's own errors pass through).
    """
    check_data_files(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    check_scan_size(path, reader.GetSize(), reader.GetNumberOfComponents())
    return reader


def sitk_affine(image: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """(4, 4) voxel-to-RAS affine of a SimpleITK image or read header (first three dimensions)."""
    dim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing()[:3])
    affine[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ affine


def nifti_header(path: Path | str) -> nib.Nifti1Header:
    """The NIfTI-1/-2 header of ``path`` as stored (nibabel repairs nothing), read before nibabel
    loads the file: its data type, dimensions and extensions are checked, and the size of the
    scan (:func:`check_scan_size`), so that ``nib.load`` and reading the voxels stay bounded.

    Raises:
        MedsegError: a header no scan has, or a scan over the size cap.
    """
    with nib.openers.ImageOpener(str(path)) as fh:
        start = fh.read(4)
        klass = nib.Nifti2Header if start in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Header
        block = start + fh.read(klass.template_dtype.itemsize - 4)
        if len(block) < klass.template_dtype.itemsize:
            raise MedsegError(
                f"{path}: holds {len(block)} bytes, fewer than a NIfTI header; "
                "the file is truncated or not NIfTI, re-export it"
            )
        header = klass(block, check=False)
        if int(header["sizeof_hdr"]) != klass.template_dtype.itemsize or not 1 <= int(header["dim"][0]) <= 7:
            raise MedsegError(
                f"{path}: is not a NIfTI file (its header has sizeof_hdr {int(header['sizeof_hdr'])}, "
                f"{int(header['dim'][0])} dimensions); re-export the scan as NIfTI"
            )
        try:
            header.get_data_dtype()
        except (KeyError, HeaderDataError):
            raise MedsegError(
                f"{path}: the header gives data type code {int(header['datatype'])}, which is not a NIfTI "
                "data type (datatype); the header is corrupt, re-export the file"
            ) from None
        check_scan_size(path, header.get_data_shape())
        _check_extensions(path, header, fh)
    return header


def _check_extensions(path: Path | str, header: nib.Nifti1Header, fh: BinaryIO) -> None:
    """NIfTI extensions are ``esize``-byte records (``esize`` from the file) that nibabel reads
    whole: refuse records that run past the voxel offset, or more of them than any real file has.
    ``fh`` stands just after the header."""
    offset = float(header["vox_offset"])
    if not math.isfinite(offset) or offset < 0:
        raise MedsegError(
            f"{path}: the header gives a voxel offset of {offset} (vox_offset); the header is corrupt, re-export the "
            "file"
        )
    flag = fh.read(4)
    if len(flag) < 4 or flag[0] == 0:
        return
    pos, end = header.template_dtype.itemsize + 4, int(offset)
    if end - pos > MAX_NIFTI_EXTENSION_BYTES:
        raise MedsegError(
            f"{path}: the header reserves {end - pos} bytes for extensions (vox_offset {end}), more than any scan "
            f"({MAX_NIFTI_EXTENSION_BYTES} at most); the header is corrupt, re-export the file"
        )
    for _ in range(MAX_NIFTI_EXTENSIONS):
        if end - pos < 16:
            return
        record = fh.read(8)
        esize = int(np.frombuffer(record, dtype=header.endianness + "i4", count=1)[0]) if len(record) == 8 else 0
        if esize < 16 or pos + esize > end:
            raise MedsegError(
                f"{path}: a header extension of {esize} bytes at byte {pos} does not fit before the voxels "
                f"(vox_offset {end}); the header is corrupt, re-export the file"
            )
        fh.seek(pos + esize)  # gzip: inflated in chunks and dropped, bounded by MAX_NIFTI_EXTENSION_BYTES
        pos += esize
    if end - pos >= 16:
        raise MedsegError(
            f"{path}: more than {MAX_NIFTI_EXTENSIONS} header extensions; the header is corrupt, re-export the file"
        )


def _raw_nifti_spacing(path: Path, header: nib.Nifti1Header) -> None:
    """nibabel silently turns a zero pixdim into 1 and a negative one into its absolute value;
    read the header as stored (:func:`nifti_header`): zero spacing is an error, negative spacing a warning."""
    ndim = int(header["dim"][0])
    zooms = np.asarray(header["pixdim"][1 : 1 + min(max(ndim, 1), 3)], dtype=float)
    if (zooms == 0).any() or not np.isfinite(zooms).all():
        raise MedsegError(
            f"{path}: the header gives voxel spacing {tuple(float(z) for z in zooms)} (pixdim); set the real spacing "
            "in the header and re-export"
        )
    if (zooms < 0).any() and str(path) not in _WARNED:
        _WARNED.add(str(path))
        print(
            f"warning: {path}: negative voxel spacing {tuple(float(z) for z in zooms)} in the header (pixdim); "
            "read as its absolute value, check the scan's orientation",
            file=sys.stderr,
        )


def _sane(
    path: Path, shape: tuple[int, ...], affine: np.ndarray, components: int = 1
) -> tuple[tuple[int, ...], np.ndarray]:
    """Refuse headers no scan has: non-finite or singular affines (zero spacing), empty axes, and
    scans over the size cap (:func:`check_scan_size`)."""
    if not np.isfinite(affine).all():
        raise MedsegError(
            f"{path}: the header's affine has NaN or infinite entries; fix the qform/sform (e.g. re-export with "
            "SimpleITK or dcm2niix)"
        )
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if (spacing[: len(shape)] <= 1e-6).any() or voxel_volume(affine) < 1e-12:
        raise MedsegError(
            f"{path}: the header gives a zero voxel spacing {tuple(round(float(s), 4) for s in spacing)}; fix the "
            "pixdim/spacing in the header"
        )
    check_scan_size(path, shape, components)
    return shape, affine


def ras_order(affine: np.ndarray) -> list[int]:
    """The file axis that lies along R, A and S of a (4, 4) affine (axis codes, as Orientationd)."""
    order = [0, 0, 0]
    for axis in range(3):
        order[int(np.argmax(np.abs(np.asarray(affine)[:3, axis])))] = axis
    return order


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the RAS-reoriented axes of a (4, 4) affine."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[ras_order(affine)]
    return tuple(float(s) for s in spacing)


def voxel_volume(affine: np.ndarray) -> float:
    """Volume of one voxel (mm^3) of a (4, 4) voxel-to-world affine: ``|det(affine[:3, :3])|``."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))


def series_geometry(folder: Path | str) -> tuple[tuple[int, int, int], np.ndarray, DicomSeries]:
    """Shape (columns, rows, slices), (4, 4) RAS affine and files (in slice order) of the DICOM
    series of ``folder`` (:func:`medseg.io.dicom.find_series`), from the headers of its files, as
    ITK's ``ImageSeriesReader`` builds the image: the first file's origin, in-plane spacing and
    direction (the slice axis along the normal of the planes), the slice spacing the distance from
    the first origin to the last over ``slices - 1``. Read once per state of the folder; the size
    is checked (:func:`check_scan_size`) before any voxel is read.

    Raises:
        MedsegError: no series; a multi-frame file; files of another size or orientation; slices
            not evenly spaced along the normal (missing slices, several at one position, gantry tilt).
    """
    series = find_series(folder)
    stamp = os.stat(os.path.realpath(folder)).st_mtime_ns
    shape, affine = _series_geometry(series.files, stamp, str(folder))
    return shape, affine.copy(), series  # a copy: the cached array stays as read


@functools.lru_cache(maxsize=64)
def _series_geometry(files: tuple[Path, ...], stamp: int, folder: str) -> tuple[tuple[int, int, int], np.ndarray]:
    """:func:`series_geometry` of the files of one series (``stamp``: the folder's state, a cache key)."""
    headers = [_slice_header(f, folder) for f in files]
    first = headers[0]
    size = first.GetSize()
    shape = (int(size[0]), int(size[1]), len(files))
    check_scan_size(folder, shape)
    direction = np.array(first.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(first.GetSpacing()[:3], dtype=float)
    origins = np.array([h.GetOrigin() for h in headers], dtype=float)
    if len(files) > 1:
        spacing[2] = float(np.linalg.norm(origins[-1] - origins[0])) / (len(files) - 1)
    for path, header in zip(files, headers):
        if header.GetSize()[:2] != size[:2] or not np.allclose(header.GetDirection(), first.GetDirection(), atol=1e-4):
            raise MedsegError(
                f"{folder}: {path.name} has another size or orientation than {files[0].name}; "
                "keep one series of parallel slices of one size in the folder"
            )
    _check_even(folder, origins, direction[:, 2] * spacing[2])
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origins[0]
    return _sane(Path(folder), shape, LPS_TO_RAS @ affine)  # type: ignore[return-value]


def _slice_header(path: Path, folder: str) -> sitk.ImageFileReader:
    """The header of one file of a DICOM series (no voxels).

    Raises:
        MedsegError: unreadable, or a multi-frame file (several slices in one file).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [""])[-1]
        raise MedsegError(
            f"{path}: cannot read its DICOM header ({shorten(first, 120)}); re-export the series"
        ) from None
    if reader.GetDimension() > 2 and reader.GetSize()[2] > 1:
        raise MedsegError(
            f"{folder}: {path.name} holds {reader.GetSize()[2]} frames (an enhanced multi-frame file); "
            "export the series as one file per slice, or convert it to NIfTI (e.g. dcm2niix)"
        )
    return reader


def _check_even(folder: str, origins: np.ndarray, step: np.ndarray) -> None:
    """Slice ``k`` must lie at ``origins[0] + k * step`` within 1 % of the slice spacing (the
    grid ITK builds assumes it): refuse missing slices, repeated positions and tilted stacks.

    Raises:
        MedsegError: naming the first slice that is off and by how much.
    """
    spacing = float(np.linalg.norm(step))
    if len(origins) < 2:
        return
    expected = origins[0] + np.arange(len(origins))[:, None] * step
    off = np.linalg.norm(origins - expected, axis=1)
    if spacing <= 1e-6 or off.max() > 0.01 * spacing:
        k = int(np.argmax(off))
        raise MedsegError(
            f"{folder}: its slices are not evenly spaced along the normal of their planes (slice {k + 1} of "
            f"{len(origins)} lies {off[k]:.3g} mm off; missing slices, several images at one position, or a "
            "tilted stack); keep one complete series in the folder, or convert it to NIfTI (e.g. dcm2niix)"
        )
