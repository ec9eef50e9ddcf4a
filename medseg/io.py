"""Reading datasets and writing masks that keep the scan's exact geometry.

``find_cases`` reads a Medical Segmentation Decathlon folder (``dataset.json`` with a ``training``
list); ``check_pair`` compares image and label headers without loading voxels; ``save_like``
writes an array with the header of a reference scan (NIfTI via nibabel, keeping qform/sform codes;
NRRD/MHA via SimpleITK, keeping origin, spacing and direction), through a temporary file renamed
into place so an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import json
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
    """One case: an image file and, for training/evaluation, its label file."""

    case_id: str
    image: Path
    label: Path | None = None


def strip_suffix(path: Path | str) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _inside(root: Path, rel: str, source: Path) -> Path:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise MedsegError(f"{source}: path {rel!r} escapes the dataset folder {root}; keep files inside it")
    return path


def find_cases(dataset: Path | str, split: str = "training") -> list[Case]:
    """List the cases of an MSD dataset folder, checking every named file exists.

    Raises:
        MedsegError: no dataset.json, bad JSON, empty list, or a named file missing.
    """
    root = Path(dataset)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise MedsegError(f"{meta_path}: not found; point data.dataset at a folder with dataset.json (e.g. from 'medseg synth')")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedsegError(f"{meta_path}: not valid JSON ({exc}); fix or regenerate it") from None
    entries = meta.get(split) if isinstance(meta, dict) else None
    if not entries:
        raise MedsegError(f"{meta_path}: no '{split}' cases listed; add entries like {{\"image\": \"./imagesTr/a.nii.gz\", \"label\": \"./labelsTr/a.nii.gz\"}}")
    cases = []
    for entry in entries:
        if isinstance(entry, str):  # MSD "test" lists bare image paths
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise MedsegError(f"{meta_path}: entry {entry!r} in '{split}' needs an 'image' key")
        image = _inside(root, entry["image"], meta_path)
        label = _inside(root, entry["label"], meta_path) if entry.get("label") else None
        for path in (image, label):
            if path is not None and not path.is_file():
                raise MedsegError(f"{meta_path}: lists {path}, which does not exist; add the file or remove the entry")
        cases.append(Case(strip_suffix(image), image, label))
    return cases


def read_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and (4, 4) voxel-to-RAS affine from the header only.

    Raises:
        MedsegError: unreadable or corrupt file.
    """
    try:
        if str(path).endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float)
        import SimpleITK as sitk

        from medseg.readers import sitk_affine

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return tuple(reader.GetSize()), sitk_affine(reader)
    except MedsegError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        raise MedsegError(f"{path}: cannot read the image header ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); re-export the file") from None


def check_readable(path: Path) -> None:
    """Read the whole file once without keeping it: a truncated or corrupt body (which a header
    check does not see) is found here, before any training thread touches it.

    Raises:
        MedsegError: naming the file.
    """
    import gzip
    import zlib

    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        elif str(path).endswith(".nii"):
            import nibabel as nib

            img = nib.load(str(path))
            needed = int(img.header["vox_offset"]) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
            if path.stat().st_size < needed:
                raise EOFError(f"file has {path.stat().st_size} bytes, the header needs {needed}")
        else:
            import SimpleITK as sitk

            sitk.ReadImage(str(path))
    except (OSError, EOFError, zlib.error, RuntimeError) as exc:
        raise MedsegError(f"{path}: the file is truncated or corrupt ({type(exc).__name__}: {str(exc)[:120]}); re-export it or remove the case") from None


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
