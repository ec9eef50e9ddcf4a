"""DICOM Segmentation objects (SEG) of predicted masks, written with highdicom (the optional extra
``medseg[dicom]``: highdicom and pydicom).

One SEG per scan references every instance of its source series (:mod:`medseg.io.dicom`): frame
``k`` of a segment is the mask on slice ``k`` of the series, in the order the series was read, so
the SEG lies on the scan's own grid. Each lesion class is one BINARY segment labelled with the
class name and coded with SNOMED CT: category 49755003 "Morphologically abnormal structure", type
108369006 "Neoplasm" for a class whose name says tumour or neoplasm, else 52988006 "Lesion";
algorithm type AUTOMATIC, family DCM 123110 "Artificial Intelligence", name ``medseg``, with the
operating point as its parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medseg import __version__
from medseg.errors import MedsegError, missing_extra, shorten
from medseg.io.geometry import series_geometry
from medseg.io.write import atomic_write

try:  # the optional extra medseg[dicom]; require_highdicom() names it when missing
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
except ImportError:
    hd = pydicom = codes = None

NEOPLASM_WORDS = ("tumor", "tumour", "neoplas", "cancer", "metasta")
SEG_SERIES_OFFSET = 1000  # the SEG's series number: the source's plus this


def require_highdicom(option: str = "--output-format dicom-seg") -> None:
    """Raise the one-line error naming the extra when highdicom or pydicom is missing.

    Raises:
        MedsegError: exit code 2.
    """
    if hd is None:
        raise missing_extra(option, "highdicom and pydicom", "dicom")


def segment_description(number: int, name: str, parameters: Mapping[str, str]) -> hd.seg.SegmentDescription:
    """The coded description of segment ``number`` (1-based) for the lesion class ``name``."""
    neoplasm = any(word in name.lower() for word in NEOPLASM_WORDS)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medseg",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        parameters=dict(parameters) or None,
    )
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm if neoplasm else codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def source_headers(files: Sequence[Path], folder: Path | str) -> list[pydicom.Dataset]:
    """The DICOM attributes of the series' files, without their pixel data.

    Raises:
        MedsegError: a file pydicom cannot read.
    """
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises InvalidDicomError, ValueError, EOFError... for bad files
            raise MedsegError(
                f"{folder}: {path.name} cannot be read as DICOM ({type(exc).__name__}: {shorten(str(exc), 120)}); "
                "re-export the series"
            ) from None
    return headers


def write_dicom_seg(
    masks: Sequence[np.ndarray],
    folder: Path | str,
    classes: Sequence[str],
    path: Path,
    parameters: Mapping[str, str] | None = None,
) -> None:
    """Write the SEG of one scan to ``path`` atomically.

    Args:
        masks: one (X, Y, Z) mask per class (non-zero = lesion), on the grid of the DICOM series of
            ``folder`` (X columns, Y rows, Z slices in the series' order).
        classes: the lesion class of each mask: segment ``i + 1`` is ``classes[i]``.
        parameters: the algorithm's parameters recorded with every segment (threshold, ...).

    Raises:
        MedsegError: highdicom missing; masks of another shape than the series; a series that
            lacks what a SEG must copy from it (patient, study, frame of reference).
    """
    require_highdicom()
    shape, _, series = series_geometry(folder)
    if any(tuple(m.shape) != shape for m in masks) or len(masks) != len(classes):
        raise MedsegError(f"{folder}: {len(masks)} mask(s) do not fit the series' grid {shape}; predict the series")
    sources = source_headers(series.files, folder)
    pixels = np.stack([np.asarray(m).astype(bool).transpose(2, 1, 0) for m in masks], axis=-1)  # (Z, Y, X, classes)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment_description(i + 1, c, parameters or {}) for i, c in enumerate(classes)],
            series_instance_uid=hd.UID(),
            series_number=int(getattr(sources[0], "SeriesNumber", None) or 0) + SEG_SERIES_OFFSET,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medseg",
            manufacturer_model_name="medseg",
            software_versions=__version__,
            device_serial_number="0",
            omit_empty_frames=False,
            series_description="medseg lesions",
            content_label="LESIONS",
        )
    except (AttributeError, TypeError, ValueError) as exc:  # a series lacking attributes a SEG copies
        raise MedsegError(
            f"{folder}: cannot make a DICOM SEG for its series ({type(exc).__name__}: {shorten(str(exc), 160)}); "
            "the series needs its patient, study and frame-of-reference attributes, or use NIfTI masks"
        ) from None
    with atomic_write(path) as tmp:
        seg.save_as(tmp)
