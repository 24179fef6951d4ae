"""One case to ingest, as every reader of a data set describes it (:class:`CaseSource`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaseSource:
    """One case to ingest: where its image and label come from.

    Attributes:
        image: an image file (NIfTI, NRRD, MetaImage), a folder holding one DICOM
            series, or (with ``series``) the series' folder, for messages.
        label: a label file (NIfTI, NRRD, MetaImage, 3D Slicer ``.seg.nrrd``), an
            RTSTRUCT or DICOM-SEG file, or None.
        patient: the patient identifier (raw; hashed before it is written), or None to
            take it from the DICOM header (or the case name for image files).
        case_id: a pseudonymous case name, or None to derive one.
        channels: further channels (files on the image's grid) of a multi-channel case;
            they are stacked after ``image`` into one 4-D NIfTI (channels last).
        series: the DICOM series, when discovery already found it.
        label_object: the DICOM label object (RTSTRUCT / SEG) paired with ``series``.
        four_d: ``image`` is one 4-D file whose last axis holds channels that the
            dataset declares (an MSD ``dataset.json`` naming them under ``modality``).
        classes: the label values the dataset itself declares (``dataset.json``'s
            ``labels``); labels are checked against them when no classes are given.
        origin: where the case was listed (e.g. ``line 3 of cases.tsv``), for messages.
    """

    image: Path
    label: Path | None = None
    patient: str | None = None
    case_id: str | None = None
    channels: tuple[Path, ...] = ()
    series: object | None = None  # medtl.io.dicom.SeriesInfo
    label_object: object | None = None  # medtl.io.dicom.LabelObjectInfo
    four_d: bool = False
    classes: dict[int, str] | None = None
    origin: str = ""
