"""Reading datasets and writing masks that keep the scan's exact geometry.

Dataset layouts are read by :mod:`medseg.sources`; ``check_pair`` compares image and label headers without loading voxels; ``save_like``
writes an array with the header of a reference scan (NIfTI via nibabel, keeping qform/sform codes;
NRRD/MHA via SimpleITK, keeping origin, spacing and direction), through a temporary file renamed
into place so an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
PARTIAL = "partial-"  # marks a file being written; renamed into place when complete


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


def strip_suffix(path: Path | str) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and (4, 4) voxel-to-RAS affine from the header only.

    Raises:
        MedsegError: unreadable or corrupt file.
    """
    if Path(path).is_symlink() and not Path(path).exists():
        raise MedsegError(f"{path}: is a symbolic link that points nowhere or loops; point it at the scan file")
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise MedsegError(f"{path}: is empty (0 bytes); copy or export the scan again")
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            import nibabel as nib

            _raw_nifti_spacing(path)
            img = nib.load(str(path))
            return _sane(path, tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float))
        import SimpleITK as sitk

        from medseg.readers import sitk_affine

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return _sane(path, tuple(reader.GetSize()), sitk_affine(reader))
    except MedsegError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        raise MedsegError(f"{path}: cannot read the image header ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); re-export the file") from None


MAX_VOXELS = 2_000_000_000  # 8 GB as float32: no 3D scan is larger; a header claiming more is corrupt
_WARNED: set[str] = set()


def _raw_nifti_spacing(path: Path) -> None:
    """nibabel silently turns a zero pixdim into 1 and a negative one into its absolute value;
    read the header as stored: zero spacing is an error, negative spacing a warning."""
    import sys

    import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as fh:
        header = nib.Nifti1Header.from_fileobj(fh, check=False)
    ndim = int(header["dim"][0])
    zooms = np.asarray(header["pixdim"][1:1 + min(max(ndim, 1), 3)], dtype=float)
    if (zooms == 0).any() or not np.isfinite(zooms).all():
        raise MedsegError(f"{path}: the header gives voxel spacing {tuple(float(z) for z in zooms)} (pixdim); set the real spacing in the header and re-export")
    if (zooms < 0).any() and str(path) not in _WARNED:
        _WARNED.add(str(path))
        print(f"warning: {path}: negative voxel spacing {tuple(float(z) for z in zooms)} in the header (pixdim); "
              "read as its absolute value, check the scan's orientation", file=sys.stderr)


def _sane(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Refuse headers no scan has: non-finite or singular affines (zero spacing), empty axes."""
    if not np.isfinite(affine).all():
        raise MedsegError(f"{path}: the header's affine has NaN or infinite entries; fix the qform/sform (e.g. re-export with SimpleITK or dcm2niix)")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if (spacing[: len(shape)] <= 1e-6).any() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsegError(f"{path}: the header gives a zero voxel spacing {tuple(round(float(s), 4) for s in spacing)}; fix the pixdim/spacing in the header")
    if any(s <= 0 for s in shape):
        raise MedsegError(f"{path}: the header gives an empty axis (shape {shape}); re-export the file")
    if np.prod(shape, dtype=np.float64) > MAX_VOXELS:
        raise MedsegError(f"{path}: the header claims shape {shape} ({np.prod(shape, dtype=np.float64):.3g} voxels), more than any scan; the header is corrupt, re-export the file")
    return shape, affine


def read_verified(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine like :func:`read_array`, read once and checked in full: a truncated or
    corrupt body (which a header check does not see) and a NIfTI header claiming more voxels than
    the file holds (e.g. terabytes) are refused before any array of that size is allocated. A
    ``.nii.gz`` is inflated once, and the image is built from those bytes.

    Raises:
        MedsegError: naming the file.
    """
    import gzip

    try:
        if str(path).endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            needed = int(img.header["vox_offset"]) + int(np.prod(img.shape, dtype=np.float64)) * img.get_data_dtype().itemsize
            raw = None
            if str(path).endswith(".gz"):
                with gzip.open(path, "rb") as fh:
                    raw = fh.read()
                size = len(raw)
            else:
                size = path.stat().st_size
            if size < needed:
                raise EOFError(f"file holds {size} bytes, its header needs {needed:.0f}")
            if raw is not None:
                img = type(img).from_bytes(raw)
            return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=float)
        return _read_sitk(path)
    except Exception as exc:  # nibabel/SimpleITK/gzip raise many types for corrupt files
        raise MedsegError(f"{path}: the file is truncated or corrupt ({type(exc).__name__}: {str(exc)[:120]}); re-export it or remove the case") from None


def check_readable(path: Path) -> None:
    """:func:`read_verified`, keeping nothing."""
    read_verified(path)


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    from medseg.readers import sitk_affine

    image = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(image)
    spatial = image.GetDimension()
    return np.moveaxis(arr, list(range(spatial)), list(range(spatial))[::-1]), sitk_affine(image)


def read_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (X, Y, Z[, C]) in the file's own order and the (4, 4) RAS affine (NIfTI via
    nibabel with scaling applied, other formats via SimpleITK).

    Raises:
        MedsegError: unreadable file.
    """
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=float)
        return _read_sitk(path)
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        raise MedsegError(f"{path}: cannot read the voxels ({type(exc).__name__}: {str(exc)[:120]}); re-export the file") from None


def lesion_mask(labels: np.ndarray, lesion_labels=None) -> np.ndarray:
    """Boolean lesion mask of a label array: values in ``lesion_labels``, or every non-zero value
    when it is None."""
    return np.isin(np.rint(labels), list(lesion_labels)) if lesion_labels else labels > 0


def read_lesion_mask(path: Path, lesion_labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Lesion mask (X, Y, Z) of a label or mask file (see :func:`lesion_mask`) and its affine."""
    label, affine = read_array(path)
    return lesion_mask(label.reshape(label.shape[:3]), lesion_labels), affine


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
        raise MedsegError(f"{case.label}: label shape {lshape} differs from image shape {ishape} ({case.image.name}); use the label made for this image")
    if not np.allclose(iaff, laff, atol=atol):
        raise MedsegError(f"{case.label}: label affine differs from the image's ({case.image.name}) by more than {atol} mm; resample the label onto the image grid (nearest neighbour)")


def _atomic_target(out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(s for s in IMAGE_SUFFIXES if out_path.name.endswith(s))[:7] or out_path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.{PARTIAL}", suffix=suffix, dir=out_path.parent)
    os.close(fd)
    return Path(tmp)


def remove_partials(folder: Path) -> int:
    """Delete files a killed run left half-written in ``folder``; returns how many."""
    stale = [p for p in folder.glob(f".*.{PARTIAL}*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return len(stale)


def save_like(array: np.ndarray, reference: Path, out_path: Path, scale: float = 1.0) -> None:
    """Write ``array`` (X, Y, Z) on the grid of ``reference``, atomically.

    The header (NIfTI: affine, qform/sform codes, units; other formats: origin, spacing,
    direction) is copied from the reference; only the data type changes. ``scale`` is stored as
    the NIfTI ``scl_slope`` (readers get ``array * scale``); other formats store ``array`` as is.
    """
    tmp = _atomic_target(out_path)
    try:
        if str(reference).endswith((".nii", ".nii.gz")):
            import nibabel as nib

            ref = nib.load(str(reference))
            header = ref.header.copy()
            header.set_data_dtype(array.dtype)
            img = nib.Nifti1Image(array, ref.affine, header)
            img.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]))
            img.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]))
            img.header.set_slope_inter(scale, 0.0)
            nib.save(img, str(tmp))
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(reference))
            reader.ReadImageInformation()
            img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
            img.SetOrigin(reader.GetOrigin()[:3])
            img.SetSpacing(reader.GetSpacing()[:3])
            img.SetDirection(np.array(reader.GetDirection()).reshape(len(reader.GetSize()), -1)[:3, :3].ravel().tolist())
            sitk.WriteImage(img, str(tmp), True)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
