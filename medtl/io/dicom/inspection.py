"""What one file of a DICOM tree is: an image slice, a label object (RTSTRUCT or
DICOM-SEG) or a rejection, from its header alone.

The checks a file must pass to count as an image slice are the rows of
:data:`HEADER_CHECKS`, one small function each (test, reason, fix).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID

from medtl.io.dicom.headers import (
    _FIX_DICOMDIR,
    DICOMDIR_REASON,
    FIX_REMOVE,
    _frame_geometry_problem,
    _get,
    _Header,
    _is_multiframe,
    _read_header,
    _sop_class,
    _text,
)
from medtl.io.dicom.uids import LABEL_KINDS, MEDIA_STORAGE_DIRECTORY
from medtl.kernel.errors import InputError, Rejection

_NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report or key object selection (SR/KO)",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy (RT) object",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "raw data, registration or surface object",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.67": "real-world value mapping",
}


@dataclass(frozen=True)
class LabelObjectInfo:
    """An RTSTRUCT or DICOM-SEG object found by :func:`medtl.io.dicom.discovery.discover`.

    Attributes:
        path: the file.
        kind: ``"RTSTRUCT"`` or ``"SEG"``.
        patient_key: the raw PatientID; in memory only, never write it anywhere.
        study_uid: StudyInstanceUID.
        sop_instance_uid: SOPInstanceUID of the label object.
        referenced_series_uids: the image series it was drawn on, in header order.
        frame_of_reference_uid: the frame of reference its coordinates are in.
    """

    path: Path
    kind: str
    patient_key: str
    study_uid: str
    sop_instance_uid: str
    referenced_series_uids: tuple[str, ...]
    frame_of_reference_uid: str


@dataclass(frozen=True)
class ImageEntry:
    """What discovery keeps of an image file (not its header, to keep memory small)."""

    path: Path
    patient_key: str
    study_uid: str
    series_uid: str
    series_number: int | None
    modality: str
    description: str
    multiframe: bool

    @property
    def group(self) -> tuple[str, ...]:
        """Patient -> Study -> Series; a multi-frame file is a series of its own."""
        base = (self.patient_key, self.study_uid, self.series_uid)
        return (*base, str(self.path)) if self.multiframe else base


@dataclass(frozen=True)
class RejectedImage:
    """A file rejected by a header check, with the series it said it belongs to."""

    rejection: Rejection
    series_uid: str


def inspect_file(path: Path) -> ImageEntry | LabelObjectInfo | Rejection | RejectedImage:
    """What one file is; never raises."""
    if path.name.upper() == "DICOMDIR":
        return Rejection(str(path), DICOMDIR_REASON, _FIX_DICOMDIR)
    try:
        header = _read_header(path)
        sop = _sop_class(header.ds)
        if sop == MEDIA_STORAGE_DIRECTORY:
            return Rejection(str(path), DICOMDIR_REASON, _FIX_DICOMDIR)
        if sop in LABEL_KINDS:
            return _label_info(header, LABEL_KINDS[sop])
        try:
            for check in HEADER_CHECKS:
                check(header)
        except InputError as err:
            return RejectedImage(err.to_rejection(), _text(header.ds, "SeriesInstanceUID"))
        return _image_entry(header)
    except InputError as err:
        return err.to_rejection()
    except Exception as exc:  # a last resort: one odd file must not stop discovery
        return Rejection(
            str(path),
            f"expected a well-formed DICOM file, found one that could not be parsed "
            f"({type(exc).__name__}: {exc})",
            "copy the file again from the source (PACS export, CD) or " + FIX_REMOVE,
        )


def _label_info(header: _Header, kind: str) -> LabelObjectInfo:
    """The label object's identity and the series it refers to."""
    ds = header.ds
    if kind == "SEG" and header.pixel_problem is not None:
        raise InputError(header.path, header.pixel_problem, FIX_REMOVE)
    frame_of_reference = _text(ds, "FrameOfReferenceUID")
    if kind == "RTSTRUCT":
        references = ds.get("ReferencedFrameOfReferenceSequence") or []
        series = [
            _text(series_item, "SeriesInstanceUID")
            for reference in references
            for study in reference.get("RTReferencedStudySequence") or []
            for series_item in study.get("RTReferencedSeriesSequence") or []
        ]
        if not frame_of_reference and references:
            frame_of_reference = _text(references[0], "FrameOfReferenceUID")
    else:
        series = [
            _text(item, "SeriesInstanceUID") for item in ds.get("ReferencedSeriesSequence") or []
        ]
    return LabelObjectInfo(
        path=header.path,
        kind=kind,
        patient_key=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        referenced_series_uids=tuple(dict.fromkeys(uid for uid in series if uid)),
        frame_of_reference_uid=frame_of_reference,
    )


def _check_sop_class(header: _Header) -> None:
    """Reject objects that are DICOM but not image slices (SR, RT, KO, PR, ...)."""
    sop = _sop_class(header.ds)
    for prefix, kind in _NON_IMAGE_SOP_CLASSES.items():
        if sop.startswith(prefix):
            raise InputError(
                header.path,
                f"expected an image slice, found a {kind} ({UID(sop).name})",
                "nothing to do if the series you need was found; otherwise " + FIX_REMOVE,
            )


def _check_pixel_data(header: _Header) -> None:
    if header.pixel_problem is not None:
        raise InputError(header.path, header.pixel_problem, FIX_REMOVE)


def _check_frames(header: _Header) -> None:
    """Multi-frame files need per-frame plane positions (enhanced CT/MR and the like)."""
    ds = header.ds
    if not _is_multiframe(ds):
        return
    problem = _frame_geometry_problem(ds)
    if problem is not None:
        raise InputError(
            header.path,
            f"expected a multi-frame image with a plane position per frame (enhanced CT/MR), "
            f"found {problem} (a cine loop, ultrasound clip or other multi-frame object)",
            "if this is a 3-D volume, export it as enhanced CT/MR or as classic single-frame "
            "images (e.g. with `emf2sf` from dcm4che); otherwise " + FIX_REMOVE,
        )


def _check_image_attributes(header: _Header) -> None:
    """Require the attributes that place the slice in space and describe its pixels."""
    ds = header.ds
    required = ["SeriesInstanceUID", "Rows", "Columns"]
    if not _is_multiframe(ds):
        required += ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]
    missing = [kw for kw in required if _get(ds, kw) in (None, "")]
    if missing:
        raise InputError(
            header.path,
            f"expected an image slice with {', '.join(required)}, found no "
            f"{', '.join(missing)} (a projection radiograph, screenshot or non-image object)",
            FIX_REMOVE,
        )
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    photometric = _text(ds, "PhotometricInterpretation").upper() or "MONOCHROME2"
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            header.path,
            f"expected a greyscale image (SamplesPerPixel 1, MONOCHROME1/2), found "
            f"{samples} samples per pixel, {photometric} (a colour image, e.g. a screenshot "
            "or secondary capture)",
            FIX_REMOVE,
        )


HEADER_CHECKS: tuple[Callable[[_Header], None], ...] = (
    _check_sop_class,
    _check_pixel_data,
    _check_frames,
    _check_image_attributes,
)


def _image_entry(header: _Header) -> ImageEntry:
    ds = header.ds
    try:
        number: int | None = int(_get(ds, "SeriesNumber"))
    except (TypeError, ValueError):
        number = None
    return ImageEntry(
        path=header.path,
        patient_key=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_number=number,
        modality=_text(ds, "Modality"),
        description=_text(ds, "SeriesDescription"),
        multiframe=_is_multiframe(ds),
    )


__all__ = ["HEADER_CHECKS", "ImageEntry", "LabelObjectInfo", "RejectedImage", "inspect_file"]
