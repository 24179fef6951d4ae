"""Find DICOM image series in a folder tree and read one into a :class:`Volume`.

Discovery reads headers only and never raises on a bad file: every file it cannot use
becomes a :class:`~medtl.io.errors.Rejection` with a reason and a fix. Loading a series
reads the pixels, orders the slices by their position along the slice normal (never by
InstanceNumber), checks that they form one regular grid and returns a float32 volume with
a RAS+ affine.

Geometry (DICOM PS3.3 C.7.6.2.1.1): the pixel in column ``c``, row ``r`` of a slice lies at
``ImagePositionPatient + X * PixelSpacing[1] * c + Y * PixelSpacing[0] * r`` in LPS mm, with
``X, Y`` the two ImageOrientationPatient cosines. The volume array is indexed
``[i, j, k]`` = ``[column, row, slice]``, so the LPS affine columns are ``X * PixelSpacing[1]``,
``Y * PixelSpacing[0]`` and ``(X x Y) * slice spacing``; RAS is LPS with the first two rows
negated.

Checks are small functions in :data:`_HEADER_CHECKS` (per file, at discovery) and
:data:`_SERIES_CHECKS` / :data:`_POSITION_CHECKS` (per series, at load) so that further
checks (gaps, scouts, gantry tilt, multi-frame) can be added without touching the rest.

Example:
    >>> series, rejected = discover_series(Path("dicom_in"))  # doctest: +SKIP
    >>> volume = load_series(series[0])  # doctest: +SKIP
    >>> volume.array.shape, volume.orientation  # doctest: +SKIP
    ((512, 512, 120), 'LPS')
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medtl.io.errors import InputError
from medtl.io.errors import Rejection as Rejection  # re-exported for callers
from medtl.io.volume import Volume

FIX_REMOVE = "remove the file or point ingest at the folder that holds only the image series"
FIX_DECOMPRESS = (
    "convert the series to uncompressed DICOM first, e.g. `gdcmconv --raw IN OUT` (GDCM) "
    "or `dcmdjpeg IN OUT` (DCMTK)"
)
FIX_ONE_SERIES = (
    "make sure the series folder holds one acquisition only: remove localizer/scout images, "
    "duplicate copies and files of other series"
)

_PIXEL_DATA_TAG = (0x7FE0, 0x0010)
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_COSINE_TOL = 1e-3  # unit length / orthogonality of ImageOrientationPatient
_ORIENTATION_TOL = 1e-3  # same orientation across slices
_POSITION_TOL = 1e-3  # mm; two slices closer than this along the normal are duplicates

# SOP classes that carry no image slice, by UID prefix, with a plain-words name.
_NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.1.3.10": "DICOMDIR index",
    "1.2.840.10008.5.1.4.1.1.88.": "structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy (RT) object",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "raw data, registration or segmentation object",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.67": "real-world value mapping",
}


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found by :func:`discover_series`.

    Attributes:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        patient_key: the raw PatientID; in memory only, never write it anywhere.
        modality: Modality (``"CT"``, ``"MR"``, ...), ``""`` if absent.
        description: SeriesDescription, ``""`` if absent.
        files: the series' files, sorted by path (not by slice position).
    """

    series_uid: str
    study_uid: str
    patient_key: str
    modality: str
    description: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _Header:
    """A file's header, read without pixels, and what is wrong with its pixel data."""

    path: Path
    ds: Dataset
    pixel_problem: str | None


@dataclass(frozen=True)
class _Slice:
    """One slice of a series, with its geometry parsed."""

    path: Path
    ds: Dataset
    row_cosine: np.ndarray  # X: direction of increasing column index (array axis i)
    column_cosine: np.ndarray  # Y: direction of increasing row index (array axis j)
    position: np.ndarray  # ImagePositionPatient, LPS mm
    rows: int
    columns: int
    pixel_spacing: np.ndarray  # [between rows (along Y), between columns (along X)]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)


# ---------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------


def discover_series(root: Path) -> tuple[list[SeriesInfo], list[Rejection]]:
    """Find the DICOM image series under ``root``, reading headers only.

    Hidden files and folders (name starting with ``.``) are skipped. Every other file that
    is not a usable image slice becomes a rejection; one bad file never stops discovery.
    Nothing under ``root`` is modified.

    Args:
        root: folder to search recursively.

    Returns:
        The series, sorted by (StudyInstanceUID, SeriesNumber, SeriesInstanceUID), and the
        rejected files, sorted by path. Both are empty when no file was found.

    Raises:
        InputError: ``root`` is not an existing folder.

    Example:
        >>> series, rejected = discover_series(Path("dicom_in"))  # doctest: +SKIP
        >>> [(s.description, len(s.files)) for s in series]  # doctest: +SKIP
        [('T1 AX', 24)]
    """
    root = Path(root)
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise InputError(
            root,
            f"expected a folder of DICOM files, found {found} at this path",
            "point ingest at the folder that holds the DICOM series",
        )
    groups: dict[str, list[_Header]] = {}
    rejected: list[Rejection] = []
    for path in _walk_files(root):
        try:
            header = _read_header(path)
            for check in _HEADER_CHECKS:
                check(header)
        except InputError as err:
            rejected.append(err.to_rejection())
            continue
        groups.setdefault(str(header.ds.SeriesInstanceUID), []).append(header)
    series = sorted(
        (_series_info(uid, headers) for uid, headers in groups.items()),
        key=lambda info: _series_sort_key(info, groups[info.series_uid][0].ds),
    )
    return series, sorted(rejected, key=lambda r: r.path)


def _walk_files(root: Path) -> Iterator[Path]:
    """Non-hidden files under ``root`` in a deterministic order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _read_header(path: Path) -> _Header:
    """The header of ``path`` without pixels; raises InputError if it is not DICOM."""
    try:
        with path.open("rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            pixel_problem = _pixel_data_problem(fp, ds, path.stat().st_size)
    except InvalidDicomError:
        raise InputError(
            path,
            "expected a DICOM file (128-byte preamble then 'DICM'), found no DICOM marker "
            "(another kind of file, or a DICOM file cut short)",
            FIX_REMOVE,
        ) from None
    except OSError as exc:
        raise InputError(
            path,
            f"expected a readable file, found an error reading it: {exc.strerror or exc}",
            "check the file's permissions and that the disk or network share is reachable",
        ) from None
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        raise InputError(
            path,
            f"expected a well-formed DICOM file, found a corrupt header ({exc})",
            "copy the file again from the source (PACS export, CD) or " + FIX_REMOVE,
        ) from None
    return _Header(path, ds, pixel_problem)


def _pixel_data_problem(fp, ds: Dataset, file_size: int) -> str | None:
    """What is wrong with the Pixel Data element at ``fp``'s position, or ``None``.

    ``fp`` must be positioned where ``dcmread(..., stop_before_pixels=True)`` stopped.
    Catches files truncated before or inside the pixel data, which a header-only read does
    not notice.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and UID(syntax).is_transfer_syntax and UID(syntax).is_deflated:
        return None  # position refers to the inflated stream; checked when loading
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    start = fp.tell()
    head = fp.read(12)
    order = "<" if little else ">"
    if len(head) < 8 or struct.unpack(order + "HH", head[:4]) != _PIXEL_DATA_TAG:
        return "no Pixel Data (7FE0,0010) found: the file is truncated or holds no image"
    if implicit:
        header_len, length = 8, struct.unpack(order + "I", head[4:8])[0]
    elif head[4:6] in _LONG_LENGTH_VRS:
        header_len, length = 12, struct.unpack(order + "I", head[8:12])[0]
    else:
        header_len, length = 8, struct.unpack(order + "H", head[6:8])[0]
    present = file_size - start - header_len
    if length == _UNDEFINED_LENGTH:
        return None if present > 0 else "the file is truncated: its Pixel Data is empty"
    if present < length:
        return f"the file is truncated: Pixel Data needs {length} bytes, found {max(present, 0)}"
    expected = _expected_pixel_bytes(ds)
    if expected is not None and length < expected:
        return (
            f"expected {expected} bytes of Pixel Data for Rows x Columns x BitsAllocated, "
            f"found {length}"
        )
    return None


def _expected_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes of native (uncompressed) pixel data the header announces, if it says."""
    try:
        pixels = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1) or 1)
            * int(ds.get("NumberOfFrames", 1) or 1)
        )
        return (pixels * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return None


def _check_sop_class(header: _Header) -> None:
    """Reject objects that are DICOM but not image slices (SR, RT, DICOMDIR, ...)."""
    ds = header.ds
    sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
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


def _check_single_frame(header: _Header) -> None:
    frames = int(header.ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise InputError(
            header.path,
            f"expected single-frame images (one slice per file), found {frames} frames in one "
            "file (enhanced/multi-frame DICOM is not supported yet)",
            "export the series as classic single-frame images (e.g. the scanner's or PACS's "
            "'classic DICOM' export) or convert it with `emf2sf` (dcm4che)",
        )


def _check_image_attributes(header: _Header) -> None:
    """Require the attributes that place the slice in space and describe its pixels."""
    required = (
        "SeriesInstanceUID",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "Rows",
        "Columns",
    )
    missing = [kw for kw in required if header.ds.get(kw) in (None, "")]
    if missing:
        raise InputError(
            header.path,
            f"expected an image slice with {', '.join(required)}, found no "
            f"{', '.join(missing)} (a localizer, screenshot or non-image object)",
            FIX_REMOVE,
        )
    samples = int(header.ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InputError(
            header.path,
            f"expected a greyscale image (SamplesPerPixel 1), found {samples} samples per "
            "pixel (a colour image, e.g. a screenshot or secondary capture)",
            FIX_REMOVE,
        )


_HEADER_CHECKS: tuple[Callable[[_Header], None], ...] = (
    _check_sop_class,
    _check_pixel_data,
    _check_single_frame,
    _check_image_attributes,
)


def _series_info(series_uid: str, headers: list[_Header]) -> SeriesInfo:
    headers = sorted(headers, key=lambda h: str(h.path))
    ds = headers[0].ds
    return SeriesInfo(
        series_uid=series_uid,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_key=str(ds.get("PatientID", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        description=str(ds.get("SeriesDescription", "") or ""),
        files=tuple(h.path for h in headers),
    )


def _series_sort_key(info: SeriesInfo, ds: Dataset) -> tuple[str, bool, int, str]:
    try:
        number = int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return (info.study_uid, True, 0, info.series_uid)  # unnumbered series last
    return (info.study_uid, False, number, info.series_uid)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_series(series: SeriesInfo) -> Volume:
    """Read a series' pixels into a float32 volume ordered by slice position.

    Slices are sorted by ImagePositionPatient projected on the slice normal (the cross
    product of the two ImageOrientationPatient cosines), not by InstanceNumber. Values are
    ``stored * RescaleSlope + RescaleIntercept`` (defaults 1 and 0).

    Args:
        series: a series from :func:`discover_series`.

    Returns:
        The volume: ``array`` float32 indexed ``[column, row, slice]``, ``affine`` RAS+ mm,
        ``modality`` from Modality (``"unknown"`` if absent), ``source_uids`` with
        StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID, ``patient_key`` the
        PatientID (``None`` if absent).

    Raises:
        InputError: fewer than 2 slices, a file that cannot be read or decoded, slices
            with different orientations or grids, or two slices at the same position. The
            path is the series folder (or the first file when the series spans folders),
            or the offending file.
    """
    where = _series_location(series)
    label = f"series {series.description!r}" if series.description else "the series"
    if len(series.files) < 2:
        raise InputError(
            where,
            f"expected at least 2 slices in {label}, found {len(series.files)}",
            "ingest a 3-D series; a single image (localizer, screenshot, 2-D exam) cannot "
            "be segmented as a volume: remove it or export the full series",
        )
    slices = [_read_slice(path) for path in series.files]
    for check in _SERIES_CHECKS:
        check(where, series, slices)
    slices, offsets = _sort_by_position(slices)
    for check in _POSITION_CHECKS:
        check(where, slices, offsets)
    spacing = float(np.median(np.diff(offsets)))
    return Volume(
        array=_stack_pixels(slices),
        affine=_ras_affine(slices[0], spacing),
        modality=str(slices[0].ds.get("Modality", "") or "unknown"),
        source_uids={
            kw: str(slices[0].ds.get(kw, "") or "")
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
        },
        patient_key=str(slices[0].ds.get("PatientID", "") or "") or None,
    )


def _series_location(series: SeriesInfo) -> Path:
    """The series folder if all its files share one, else its first file."""
    parents = {path.parent for path in series.files}
    if len(parents) == 1:
        return parents.pop()
    return series.files[0] if series.files else Path(series.series_uid)


def _read_slice(path: Path) -> _Slice:
    """Read one file with pixels and parse its geometry; raises InputError."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # unreadable since discovery, or never discovered
        raise InputError(
            path,
            f"expected a readable DICOM image, found an error reading it ({exc})",
            "run discovery again on the folder; " + FIX_REMOVE,
        ) from None
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient], dtype=float)
        spacing = np.array([float(v) for v in ds.PixelSpacing], dtype=float)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(
            path,
            "expected numeric ImageOrientationPatient (6 values), ImagePositionPatient (3), "
            f"PixelSpacing (2), Rows and Columns, found a missing or malformed one ({exc})",
            FIX_REMOVE,
        ) from None
    if iop.shape != (6,) or ipp.shape != (3,) or spacing.shape != (2,):
        raise InputError(
            path,
            "expected 6 ImageOrientationPatient, 3 ImagePositionPatient and 2 PixelSpacing "
            f"values, found {iop.size}, {ipp.size} and {spacing.size}",
            FIX_REMOVE,
        )
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise InputError(
            path, f"expected positive PixelSpacing, found {spacing.tolist()}", FIX_REMOVE
        )
    row_cosine, column_cosine = _cosines(path, iop)
    return _Slice(path, ds, row_cosine, column_cosine, ipp, rows, columns, spacing)


def _cosines(path: Path, iop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two orientation cosines, checked to be unit length and orthogonal."""
    x, y = iop[:3], iop[3:]
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if not (
        np.all(np.isfinite(iop))
        and abs(nx - 1) < _COSINE_TOL
        and abs(ny - 1) < _COSINE_TOL
        and abs(x @ y) < _COSINE_TOL
    ):
        raise InputError(
            path,
            "expected ImageOrientationPatient to hold two orthogonal unit vectors, found "
            f"{iop.tolist()} (lengths {nx:.4f}, {ny:.4f}, dot product {x @ y:.4f})",
            "the header is corrupt; export the series again from the source",
        )
    return x / nx, y / ny


def _check_one_series(where: Path, series: SeriesInfo, slices: list[_Slice]) -> None:
    for s in slices:
        found = str(s.ds.get("SeriesInstanceUID", "") or "")
        if found != series.series_uid:
            raise InputError(
                s.path,
                "expected every file to belong to the series being loaded, found a file of "
                "another series",
                "build the SeriesInfo with discover_series, which groups files by series",
            )


def _check_same_orientation(where: Path, series: SeriesInfo, slices: list[_Slice]) -> None:
    first = slices[0]
    expected = np.concatenate([first.row_cosine, first.column_cosine])
    for s in slices[1:]:
        found = np.concatenate([s.row_cosine, s.column_cosine])
        if not np.allclose(found, expected, atol=_ORIENTATION_TOL):
            raise InputError(
                where,
                "expected one ImageOrientationPatient for all slices, found "
                f"{_fmt(expected)} in {first.path.name} but {_fmt(found)} in {s.path.name}",
                FIX_ONE_SERIES,
            )


def _check_same_grid(where: Path, series: SeriesInfo, slices: list[_Slice]) -> None:
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise InputError(
                where,
                f"expected the same Rows x Columns for all slices, found {first.rows} x "
                f"{first.columns} in {first.path.name} but {s.rows} x {s.columns} in "
                f"{s.path.name}",
                FIX_ONE_SERIES,
            )
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-4):
            raise InputError(
                where,
                "expected the same PixelSpacing for all slices, found "
                f"{_fmt(first.pixel_spacing)} in {first.path.name} but "
                f"{_fmt(s.pixel_spacing)} in {s.path.name}",
                FIX_ONE_SERIES,
            )


_SERIES_CHECKS: tuple[Callable[[Path, SeriesInfo, list[_Slice]], None], ...] = (
    _check_one_series,
    _check_same_orientation,
    _check_same_grid,
)


def _sort_by_position(slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray]:
    """Slices sorted by position along the slice normal, and those positions (mm)."""
    normal = slices[0].normal
    offsets = np.array([s.position @ normal for s in slices])
    order = np.argsort(offsets, kind="stable")
    return [slices[i] for i in order], offsets[order]


def _check_distinct_positions(where: Path, slices: list[_Slice], offsets: np.ndarray) -> None:
    steps = np.diff(offsets)
    if np.any(steps < _POSITION_TOL):
        i = int(np.argmax(steps < _POSITION_TOL))
        raise InputError(
            where,
            "expected one slice per position, found two at "
            f"{offsets[i]:.3f} mm along the slice normal: {slices[i].path.name} and "
            f"{slices[i + 1].path.name}",
            "remove duplicate copies of slices; if the series holds several acquisitions "
            "(echoes, time points, contrast phases), export them as separate series",
        )


_POSITION_CHECKS: tuple[Callable[[Path, list[_Slice], np.ndarray], None], ...] = (
    _check_distinct_positions,
)


def _stack_pixels(slices: list[_Slice]) -> np.ndarray:
    """The rescaled pixels as float32 ``[column, row, slice]``."""
    first = slices[0]
    array = np.empty((first.columns, first.rows, len(slices)), dtype=np.float32)
    for k, s in enumerate(slices):
        pixels = _pixels(s)
        slope = _float_attr(s.ds, "RescaleSlope", 1.0)
        intercept = _float_attr(s.ds, "RescaleIntercept", 0.0)
        array[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T
    return array


def _pixels(s: _Slice) -> np.ndarray:
    """The stored pixel values of one slice, shape (Rows, Columns)."""
    syntax = UID(s.ds.file_meta.get("TransferSyntaxUID", "") or "")
    try:
        pixels = s.ds.pixel_array
    except Exception as exc:  # no decoder for the syntax, or corrupt pixel data
        if syntax.is_transfer_syntax and syntax.is_compressed:
            reason = f"expected decodable pixel data, found {syntax.name} that could not be"
            raise InputError(s.path, f"{reason} decoded ({exc})", FIX_DECOMPRESS) from None
        raise InputError(
            s.path, f"expected readable pixel data, found corrupt pixel data ({exc})", FIX_REMOVE
        ) from None
    if pixels.shape != (s.rows, s.columns):
        raise InputError(
            s.path,
            f"expected pixel data of shape Rows x Columns = {s.rows} x {s.columns}, found "
            f"{pixels.shape}",
            FIX_REMOVE,
        )
    return pixels


def _float_attr(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    return float(value)


def _ras_affine(first: _Slice, slice_spacing: float) -> np.ndarray:
    """RAS+ affine of the grid whose first slice is ``first``."""
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    lps[:3, 2] = first.normal * slice_spacing
    lps[:3, 3] = first.position
    return _RAS_FROM_LPS @ lps


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
