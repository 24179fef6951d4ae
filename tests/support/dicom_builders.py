"""Small DICOM inputs for tests: series at chosen slice positions, label objects, odd files.

Everything is written with pydicom (through :func:`medtl.io.dicom_write.write_series` for
the image modules, then edited slice by slice), tiny (8 x 6 pixels, a handful of slices)
and deterministic. Positions are LPS mm as DICOM stores them; :class:`WrittenSeries` keeps
what was written so a test can compute the expected geometry from it independently of the
loader.

Example:
    >>> written = write_series_at(Path("in/ct"), [0, 5, 10, 17, 24])  # doctest: +SKIP
    >>> written.files[0].name  # doctest: +SKIP
    'IM0000.dcm'
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medtl.io.dicom_write import write_series
from medtl.io.volume import Volume

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])


def rotation(axis: str, degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about the x, y or z axis."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


#: LPS (row cosine X, column cosine Y) of the slice planes the builders write.
ORIENTATIONS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
}
_OBLIQUE = rotation("x", 17.0) @ rotation("y", -24.0) @ rotation("z", 11.0)
ORIENTATIONS["oblique"] = (_OBLIQUE[:, 0], _OBLIQUE[:, 1])


@dataclass(frozen=True)
class WrittenSeries:
    """What :func:`write_series_at` wrote.

    Attributes:
        files: one file per slice, in the order of ``offsets``.
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID.
        row_cosine: X (LPS), the direction of increasing column index.
        column_cosine: Y (LPS), the direction of increasing row index.
        pixel_spacing: PixelSpacing as DICOM orders it: (between rows, between columns).
        positions: ImagePositionPatient of each file as written (after any rounding), LPS.
        values: the pixel values, ``[column, row, file]``.
    """

    files: list[Path]
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: np.ndarray
    values: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)


def uids(tag: str) -> dict[str, str]:
    """Study, series and frame-of-reference UIDs derived from ``tag`` (stable across runs)."""
    return {
        "study_uid": generate_uid(entropy_srcs=["study", tag]),
        "series_uid": generate_uid(entropy_srcs=["series", tag]),
        "frame_of_reference_uid": generate_uid(entropy_srcs=["for", tag]),
    }


def write_series_at(
    folder: Path,
    offsets: Sequence[float],
    *,
    orientation: str = "axial",
    origin: Sequence[float] = (-12.34, 56.78, -90.12),
    pixel_spacing: tuple[float, float] = (0.9, 0.8),
    shape: tuple[int, int] = (8, 6),
    decimals: int | None = None,
    tag: str = "a",
    patient_id: str = "PAT-001",
    modality: str = "MR",
    description: str = "",
    series_number: int = 1,
) -> WrittenSeries:
    """Write one slice per offset (mm along the slice normal from ``origin``).

    Args:
        folder: where the files go (``IM0000.dcm``, ...).
        offsets: slice positions along the normal, mm, in file order.
        orientation: a key of :data:`ORIENTATIONS`.
        origin: ImagePositionPatient (LPS) of offset 0.
        pixel_spacing: (between rows, between columns), mm.
        shape: (columns, rows).
        decimals: write ImagePositionPatient rounded to this many decimals, as GE scanners
            do (``"-12.3"`` for 1); ``None`` keeps up to 16 characters.
        tag: seeds the UIDs and the pixel values.
        patient_id: PatientID.
        modality: Modality.
        description: SeriesDescription.
        series_number: SeriesNumber.

    Returns:
        What was written.
    """
    x, y = ORIENTATIONS[orientation]
    normal = np.cross(x, y)
    lps = np.eye(4)
    lps[:3, 0] = x * pixel_spacing[1]
    lps[:3, 1] = y * pixel_spacing[0]
    lps[:3, 2] = normal
    lps[:3, 3] = origin
    affine = np.eye(4)
    affine[:3, :] = _RAS_FROM_LPS @ lps[:3, :]
    rng = np.random.default_rng(zlib.crc32(tag.encode()))
    values = rng.integers(0, 1000, size=(*shape, len(offsets))).astype(np.float32)
    ids = uids(tag)
    files = write_series(
        Volume(values, affine, modality=modality),
        folder,
        patient_id=patient_id,
        patient_name="Test^Patient",
        birth_date="",
        study_date="20240101",
        series_number=series_number,
        series_description=description,
        modality=modality,
        **ids,
    )
    positions = []
    for path, offset in zip(files, offsets, strict=True):
        ds = pydicom.dcmread(path)
        position = np.asarray(origin, dtype=float) + float(offset) * normal
        if decimals is not None:
            text = [f"{v:.{decimals}f}" for v in position]
            ds.ImagePositionPatient = text
            position = np.array([float(t) for t in text])
        else:
            ds.ImagePositionPatient = [float(v) for v in position]
        ds.save_as(path, enforce_file_format=True)
        positions.append(position)
    return WrittenSeries(
        files=list(files),
        series_uid=ids["series_uid"],
        study_uid=ids["study_uid"],
        frame_of_reference_uid=ids["frame_of_reference_uid"],
        row_cosine=x,
        column_cosine=y,
        pixel_spacing=pixel_spacing,
        positions=np.array(positions),
        values=values,
    )


def edit(path: Path, **changes) -> Path:
    """Rewrite a DICOM file with attributes changed (``None`` deletes one)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def copy_as_new_instance(src: Path, dst: Path, tag: str, **changes) -> Path:
    """A copy of ``src`` under a new SOPInstanceUID, with attributes changed."""
    ds = pydicom.dcmread(src)
    uid = generate_uid(entropy_srcs=["copy", tag])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def write_rtstruct_header(
    path: Path, written: WrittenSeries, roi_names: Sequence[str] = ("GTV",), tag: str = "rt"
) -> Path:
    """An RTSTRUCT that references ``written``'s series, with ROIs but no contours.

    Enough for discovery and pairing (the references), not for rasterising.
    """
    ds = Dataset()
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["rtstruct", tag])
    ds.Modality = "RTSTRUCT"
    ds.PatientID = "PAT-001"
    ds.StudyInstanceUID = written.study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["rtstruct-series", tag])
    ds.FrameOfReferenceUID = written.frame_of_reference_uid
    series_item = Dataset()
    series_item.SeriesInstanceUID = written.series_uid
    study_item = Dataset()
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = written.frame_of_reference_uid
    frame_item.RTReferencedStudySequence = DicomSequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_item])
    rois = []
    for number, name in enumerate(roi_names, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = written.frame_of_reference_uid
        rois.append(roi)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence([])
    _file_meta(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_structured_report(path: Path, tag: str = "sr") -> Path:
    """A Basic Text SR: DICOM, but no image."""
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR_STORAGE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["sr", tag])
    ds.Modality = "SR"
    ds.PatientID = "PAT-001"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["sr-study", tag])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["sr-series", tag])
    ds.ValueType = "CONTAINER"
    _file_meta(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicomdir(path: Path) -> Path:
    """A DICOMDIR (Media Storage Directory) index file, with no records."""
    ds = Dataset()
    ds.FileSetID = "MEDTL"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = DicomSequence([])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["dicomdir", str(path.name)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
