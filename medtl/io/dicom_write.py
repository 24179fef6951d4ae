"""Write a :class:`~medtl.io.volume.Volume` as a DICOM image series, one file per slice.

The geometry follows DICOM PS3.3 C.7.6.2.1.1: for the pixel in column ``c`` and row ``r``
of a slice, the patient position (LPS, mm) is::

    P = ImagePositionPatient + X * PixelSpacing[1] * c + Y * PixelSpacing[0] * r

where ``X`` (the first three ImageOrientationPatient values) is the direction of increasing
column index and ``Y`` the direction of increasing row index. medtl arrays are indexed
``[i, j, k]``, so array axis ``i`` is the DICOM column index, ``j`` the row index and ``k``
the slice (one file each). ``Columns`` is the size along ``i`` and ``Rows`` the size
along ``j``.

Reading the series back with :func:`medtl.io.dicom.load_series` returns the same array and
affine when the affine is right-handed (positive determinant); a left-handed affine comes
back as the same image with the slice axis reversed, because DICOM slices carry positions,
not an order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from medtl.io.dicom.uids import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE
from medtl.io.volume import Volume
from medtl.kernel.files import atomic_save_dicom

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_INT16_MIN, _INT16_MAX = -32768, 32767
_ORTHOGONAL_TOL = 1e-4


def write_series(
    volume: Volume,
    out_dir: Path,
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    study_date: str,
    series_number: int = 1,
    series_description: str = "",
    modality: str = "MR",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice along its third array axis.

    Stored values are ``round((value - rescale_intercept) / rescale_slope)`` as signed
    16-bit integers; readers recover ``stored * slope + intercept``. Files are named
    ``IM{k:04d}.dcm`` and written under a hidden temporary name first, then renamed, so an
    interrupted write never leaves a half-written ``.dcm`` file. ``out_dir`` is created if
    needed; it should be empty or hold only this series, since files of the same name are
    replaced. The output is byte-for-byte deterministic (SOPInstanceUIDs are derived from
    ``series_uid`` and the slice index; no timestamps are written).

    Args:
        volume: the image; ``array`` must be 3-D and finite, ``affine`` a RAS+ mm affine
            whose first two columns are orthogonal (any rotation is fine).
        out_dir: folder to write into.
        patient_id: PatientID.
        patient_name: PatientName (``"Family^Given"``).
        birth_date: PatientBirthDate, ``YYYYMMDD`` or ``""``.
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID.
        study_date: StudyDate, ``YYYYMMDD`` or ``""``.
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        modality: DICOM Modality; ``"CT"`` gives CT Image Storage, anything else MR Image
            Storage.
        rescale_slope: RescaleSlope, non-zero.
        rescale_intercept: RescaleIntercept.

    Returns:
        The written files, in slice order.

    Raises:
        ValueError: the array is not 3-D or not finite, the stored values do not fit
            int16, the slope is zero, or the affine cannot be expressed in DICOM.

    Example:
        >>> vol = Volume(np.zeros((6, 5, 4), np.float32), np.diag([0.8, 0.8, 3.0, 1.0]))
        >>> files = write_series(vol, Path("out"), patient_id="P1", patient_name="Doe^J",
        ...     birth_date="", study_uid=generate_uid(), series_uid=generate_uid(),
        ...     frame_of_reference_uid=generate_uid(), study_date="20240101")  # doctest: +SKIP
    """
    stored = _stored_values(volume.array, rescale_slope, rescale_intercept)
    geometry = _SliceGeometry.from_affine(np.asarray(volume.affine, dtype=float))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = _common_dataset(
        modality,
        {
            "StudyDate": study_date,
            "SeriesDate": study_date,
            "SeriesDescription": series_description,
            "PatientName": patient_name,
            "PatientID": patient_id,
            "PatientBirthDate": birth_date,
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": int(series_number),
            "FrameOfReferenceUID": frame_of_reference_uid,
        },
    )
    return _write_slices(common, geometry, stored, out_dir, rescale_slope, rescale_intercept)


def _write_slices(
    common: Dataset,
    geometry: _SliceGeometry,
    stored: np.ndarray,
    out_dir: Path,
    slope: float,
    intercept: float,
) -> list[Path]:
    """Write one file ``IM{k:04d}.dcm`` per slice k of ``stored``, in slice order."""
    files = []
    for k in range(stored.shape[2]):
        ds = _slice_dataset(common, geometry, stored[:, :, k], k, slope, intercept)
        files.append(atomic_save_dicom(ds, out_dir / f"IM{k:04d}.dcm"))
    return files


class _SliceGeometry:
    """DICOM geometry (LPS) of the slices of a RAS affine."""

    def __init__(self, matrix: np.ndarray, origin: np.ndarray) -> None:
        self.col_step = matrix[:, 0]  # one step along array axis i (DICOM column index)
        self.row_step = matrix[:, 1]  # one step along array axis j (DICOM row index)
        self.slice_step = matrix[:, 2]
        self.origin = origin
        self.column_spacing = float(np.linalg.norm(self.col_step))
        self.row_spacing = float(np.linalg.norm(self.row_step))
        self.row_cosine = self.col_step / self.column_spacing
        self.column_cosine = self.row_step / self.row_spacing
        normal = np.cross(self.row_cosine, self.column_cosine)
        self.slice_spacing = abs(float(self.slice_step @ normal))

    @classmethod
    def from_affine(cls, affine: np.ndarray) -> _SliceGeometry:
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(
                f"expected a finite 4x4 affine, found shape {affine.shape}; "
                "fix: pass the volume's voxel-to-RAS matrix"
            )
        matrix = _LPS_FROM_RAS @ affine[:3, :3]
        norms = np.linalg.norm(matrix, axis=0)
        if np.any(norms <= 0):
            raise ValueError(
                f"expected non-zero voxel sizes, found column norms {norms.tolist()}; "
                "fix: pass an invertible affine"
            )
        cos_angle = float(matrix[:, 0] @ matrix[:, 1] / (norms[0] * norms[1]))
        if abs(cos_angle) > _ORTHOGONAL_TOL:
            raise ValueError(
                "expected orthogonal in-plane axes (first two affine columns), found "
                f"cos(angle) = {cos_angle:.6f}; fix: resample the volume onto an "
                "orthogonal grid, DICOM ImageOrientationPatient cannot express shear in-plane"
            )
        geometry = cls(matrix, _LPS_FROM_RAS @ affine[:3, 3])
        if geometry.slice_spacing <= 0:
            raise ValueError(
                "expected the third affine column to leave the slice plane, found it "
                "in-plane; fix: pass an invertible affine"
            )
        return geometry

    def position(self, k: int) -> np.ndarray:
        """ImagePositionPatient (LPS) of slice ``k``: the centre of its first pixel."""
        return self.origin + k * self.slice_step


def _stored_values(array: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Integer pixel values ``round((array - intercept) / slope)`` as int16, checked."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(
            f"expected a 3-D array, found shape {array.shape}; fix: write one volume "
            "(one channel, one time point) per series"
        )
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
        raise ValueError(
            f"expected a finite non-zero rescale slope and finite intercept, found "
            f"slope={slope}, intercept={intercept}; fix: pass e.g. rescale_slope=1.0"
        )
    values = (array.astype(np.float64) - intercept) / slope
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "expected finite voxel values, found NaN or infinity; fix: replace them "
            "(e.g. numpy.nan_to_num) before writing"
        )
    stored = np.rint(values)
    if stored.size and (stored.min() < _INT16_MIN or stored.max() > _INT16_MAX):
        raise ValueError(
            f"expected stored values in int16 [{_INT16_MIN}, {_INT16_MAX}], found "
            f"[{stored.min():.0f}, {stored.max():.0f}] with slope={slope}, "
            f"intercept={intercept}; fix: choose rescale_slope/rescale_intercept so "
            "that (value - intercept) / slope fits"
        )
    return stored.astype(np.int16)


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    return format_number_as_ds(float(value))


def _common_dataset(modality: str, identity: dict[str, str | int]) -> Dataset:
    """Attributes shared by every slice of the series: fixed ones, the SOP class of
    ``modality``, and ``identity`` (DICOM keyword -> value: patient, study, series)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = CT_IMAGE_STORAGE if modality.upper() == "CT" else MR_IMAGE_STORAGE
    ds.StudyTime = ""  # type 2 (General Study module): present, empty, keeps bytes stable
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ReferringPhysicianName = ""
    ds.PatientSex = ""
    ds.StudyID = ""
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    for keyword, value in identity.items():
        setattr(ds, keyword, value)
    return ds


def _slice_dataset(
    common: Dataset,
    geometry: _SliceGeometry,
    stored: np.ndarray,
    k: int,
    slope: float,
    intercept: float,
) -> Dataset:
    """The dataset of slice ``k``; ``stored`` is that slice indexed ``[i, j]``."""
    ds = Dataset()
    ds.update(common)
    sop_uid = generate_uid(entropy_srcs=[str(common.SeriesInstanceUID), str(k)])
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in geometry.position(k)]
    ds.ImageOrientationPatient = [_ds(v) for v in (*geometry.row_cosine, *geometry.column_cosine)]
    ds.SliceThickness = _ds(geometry.slice_spacing)
    ds.SpacingBetweenSlices = _ds(geometry.slice_spacing)
    ds.PixelSpacing = [_ds(geometry.row_spacing), _ds(geometry.column_spacing)]
    ds.Rows = stored.shape[1]
    ds.Columns = stored.shape[0]
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    # DICOM pixel data is row by row: pixel (row r, column c) = array[c, r].
    pixels = np.ascontiguousarray(stored.T, dtype="<i2")
    ds.add_new(0x7FE00010, "OW", pixels.tobytes())

    add_file_meta(ds, ExplicitVRLittleEndian)
    return ds


def add_file_meta(ds: Dataset, transfer_syntax: UID) -> None:
    """Give ``ds`` the file meta information and preamble of a DICOM file medtl writes.

    The meta names ``ds``'s SOPClassUID and SOPInstanceUID and ``transfer_syntax``; the
    implementation version is ``MEDTL``, not pydicom's version, so the bytes stay stable.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDTL"  # not pydicom's version: keeps bytes stable
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
