"""Find DICOM image series and label objects in a folder tree and read a series into a Volume.

Discovery (:func:`discover`) reads headers only, in parallel, and never raises on a bad
file: every file ends as a member of an image series, as a label object (RTSTRUCT or
DICOM-SEG) or as a :class:`~medtl.io.errors.Rejection` with a reason and a fix. Images are
grouped Patient -> Study -> Series (SeriesInstanceUID); a multi-frame file (enhanced CT/MR
and any file whose frames carry their own plane position) is a series of its own.

Loading (:func:`load_series_checked`) reads the pixels of every file (compressed transfer
syntaxes decode through pydicom's pixel handlers, i.e. the installed pylibjpeg plugins),
splits multi-frame files into frames, sets aside localizer/scout images and pixel-identical
duplicate copies mixed into the series, orders the slices by their position along the slice
normal (never by InstanceNumber), checks that they form one regular, untilted grid and
returns a float32 volume with a RAS+ affine.

Geometry (DICOM PS3.3 C.7.6.2.1.1): the pixel in column ``c``, row ``r`` of a slice lies at
``ImagePositionPatient + X * PixelSpacing[1] * c + Y * PixelSpacing[0] * r`` in LPS mm, with
``X, Y`` the two ImageOrientationPatient cosines. The volume array is indexed
``[i, j, k]`` = ``[column, row, slice]``, so the LPS affine columns are ``X * PixelSpacing[1]``,
``Y * PixelSpacing[0]`` and ``(X x Y) * slice spacing``; RAS is LPS with the first two rows
negated. Multi-frame files give the same three attributes per frame through the Shared and
Per-frame Functional Groups (PS3.3 C.7.6.16).

Checks are small functions in :data:`_HEADER_CHECKS` (per file, at discovery),
:data:`_SET_ASIDE_FILTERS` (frames left out of a series with a rejection, at load),
:data:`_SERIES_CHECKS` and :data:`_POSITION_CHECKS` (per series, at load).

Example:
    >>> inventory = discover(Path("dicom_in"), workers=8)  # doctest: +SKIP
    >>> volume, set_aside = load_series_checked(inventory.series[0])  # doctest: +SKIP
    >>> volume.array.shape, volume.orientation  # doctest: +SKIP
    ((512, 512, 120), 'LPS')
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from tqdm import tqdm

from medtl.io.errors import InputError
from medtl.io.errors import Rejection as Rejection  # re-exported for callers
from medtl.io.volume import Volume

FIX_REMOVE = "remove the file or point ingest at the folder that holds only the image series"
FIX_DECOMPRESS = (
    "convert the series to uncompressed DICOM first, e.g. `gdcmconv --raw IN OUT` (GDCM) "
    "or `dcmdjpeg IN OUT` (DCMTK)"
)
FIX_DECODER = (
    "install the decoders for compressed DICOM: `pip install pylibjpeg pylibjpeg-libjpeg "
    "pylibjpeg-openjpeg pylibjpeg-rle` (or `pip install python-gdcm`), or " + FIX_DECOMPRESS
)
FIX_ONE_SERIES = (
    "make sure the series folder holds one acquisition only: remove localizer/scout images, "
    "duplicate copies and files of other series"
)
FIX_SET_ASIDE = (
    "nothing to do: the file was left out of the volume; remove it from the series folder "
    "to silence this message"
)
FIX_EXPORT_AGAIN = (
    "export the complete series again from the scanner or PACS; if slices were left out on "
    "purpose, export each contiguous part as a series of its own"
)
DICOMDIR_REASON = "DICOMDIR index; the files it lists are read from the folder tree"
_FIX_DICOMDIR = "nothing to do: the images a DICOMDIR indexes are found by walking the folders"

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_LABEL_KINDS = {RTSTRUCT_STORAGE: "RTSTRUCT", SEGMENTATION_STORAGE: "SEG"}

_PIXEL_DATA_TAG = (0x7FE0, 0x0010)
_FLOAT_PIXEL_DATA_TAGS = {(0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_COSINE_TOL = 1e-3  # unit length / orthogonality of ImageOrientationPatient
_ORIENTATION_TOL = 1e-3  # same orientation across slices
_POSITION_TOL = 1e-3  # mm; two slices closer than this along the normal share a position
_GAP_FACTOR = 1.5  # a step this many times the median spacing means missing slices
_SPACING_SPREAD = 0.01  # relative spread of slice steps tolerated
# Absolute spread always tolerated (mm): positions written with two decimals make steps
# differ by up to 0.02 mm, harmless but over 1 % of a 0.625 mm spacing.
_SPACING_ABS_TOL = 0.02
_MAX_TILT_DEGREES = 0.1
_LINE_TOL = 0.1  # in-plane drift of slice positions tolerated, fraction of a pixel

# SOP classes that carry no image slice, by UID prefix, with a plain-words name.
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
class SeriesInfo:
    """One image series found by :func:`discover`.

    Attributes:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        patient_key: the raw PatientID; in memory only, never write it anywhere.
        modality: Modality (``"CT"``, ``"MR"``, ...), ``""`` if absent.
        description: SeriesDescription, ``""`` if absent.
        files: the series' files, sorted by path (not by slice position); one file for a
            multi-frame series.
    """

    series_uid: str
    study_uid: str
    patient_key: str
    modality: str
    description: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class LabelObjectInfo:
    """An RTSTRUCT or DICOM-SEG object found by :func:`discover`.

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


@dataclass
class DicomInventory:
    """Everything :func:`discover` found under a folder.

    Attributes:
        series: image series, sorted by patient, study, SeriesNumber, SeriesInstanceUID.
        labels: RTSTRUCT and SEG objects, sorted by path.
        rejected: files that are neither, sorted by path, each with a reason and a fix.
    """

    series: list[SeriesInfo] = field(default_factory=list)
    labels: list[LabelObjectInfo] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class _Header:
    """A file's header, read without pixels, and what is wrong with its pixel data."""

    path: Path
    ds: Dataset
    pixel_problem: str | None


@dataclass(frozen=True)
class _ImageEntry:
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


class _PixelSource:
    """Decodes a file's pixel data on demand; multi-frame data is decoded once and kept."""

    def __init__(self, path: Path, ds: Dataset) -> None:
        self.path = path
        self.ds = ds
        self._frames: np.ndarray | None = None

    def values(self, frame: int | None) -> np.ndarray:
        """Stored values of one frame (``None``: the single-frame image), (Rows, Columns)."""
        if frame is None:
            return _decode(self.path, self.ds)
        if self._frames is None:
            decoded = _decode(self.path, self.ds)
            self._frames = decoded[np.newaxis] if decoded.ndim == 2 else decoded
        return self._frames[frame]


@dataclass(frozen=True)
class _Frame:
    """One slice of a series (a single-frame file or one frame of a multi-frame file)."""

    path: Path
    frame: int | None  # index within a multi-frame file; None for a single-frame file
    ds: Dataset
    source: _PixelSource
    row_cosine: np.ndarray  # X: direction of increasing column index (array axis i)
    column_cosine: np.ndarray  # Y: direction of increasing row index (array axis j)
    position: np.ndarray  # ImagePositionPatient, LPS mm
    rows: int
    columns: int
    pixel_spacing: np.ndarray  # [between rows (along Y), between columns (along X)]
    slope: float
    intercept: float
    localizer: bool  # ImageType / FrameType says LOCALIZER

    @functools.cached_property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    @property
    def orientation(self) -> np.ndarray:
        return np.concatenate([self.row_cosine, self.column_cosine])

    @property
    def name(self) -> str:
        """The file name, with the frame number (1-based) for a multi-frame file."""
        if self.frame is None:
            return self.path.name
        return f"{self.path.name} frame {self.frame + 1}"

    def stored(self) -> np.ndarray:
        """Stored pixel values as decoded (no rescale), (Rows, Columns); may be read-only."""
        pixels = self.source.values(self.frame)
        if pixels.shape != (self.rows, self.columns):
            raise InputError(
                self.path,
                f"expected pixel data of shape Rows x Columns = {self.rows} x {self.columns}, "
                f"found {pixels.shape}",
                FIX_REMOVE,
            )
        return pixels

    def values(self) -> np.ndarray:
        """Rescaled pixel values, float64, (Rows, Columns)."""
        return self.stored().astype(np.float64) * self.slope + self.intercept


# ---------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------


def discover(
    root: Path, workers: int = 4, progress: bool = False, executor: Executor | None = None
) -> DicomInventory:
    """Find the image series and label objects under ``root``, reading headers only.

    Hidden files and folders (name starting with ``.``) are skipped. Every other file ends
    as a series member, a label object or a rejection; one bad file never stops discovery.
    DICOMDIR index files are rejected with a reason (the images they list are found by
    walking the tree). Nothing under ``root`` is modified. The result does not depend on
    ``workers`` or ``executor``.

    Args:
        root: folder to search recursively.
        workers: threads reading headers in parallel (at least 1).
        progress: show a tqdm progress bar on stderr.
        executor: read the headers on this executor instead of ``workers`` threads, e.g. a
            process pool the caller goes on using: parsing a header is pure Python and
            holds the GIL, so threads overlap only the waiting for the disk.

    Returns:
        The inventory; all three lists are empty when no file was found.

    Raises:
        InputError: ``root`` is not an existing folder.
        ValueError: ``workers`` is less than 1.

    Example:
        >>> inventory = discover(Path("dicom_in"))  # doctest: +SKIP
        >>> [(s.description, len(s.files)) for s in inventory.series]  # doctest: +SKIP
        [('T1 AX', 24)]
    """
    root = Path(root)
    if workers < 1:
        raise ValueError(f"expected workers >= 1, found {workers}; fix: pass workers=1 or more")
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise InputError(
            root,
            f"expected a folder of DICOM files, found {found} at this path",
            "point ingest at the folder that holds the DICOM series",
        )
    paths = list(_walk_files(root))
    with ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
        # Chunks keep the hand-over cost of a process pool small; threads ignore them.
        chunk = max(1, min(64, len(paths) // (4 * workers)))
        results = list(
            tqdm(
                executor.map(_inspect, paths, chunksize=chunk),
                total=len(paths),
                desc="DICOM headers",
                unit="file",
                disable=not progress,
            )
        )
    images = [r for r in results if isinstance(r, _ImageEntry)]
    return DicomInventory(
        series=_group_series(images),
        labels=sorted((r for r in results if isinstance(r, LabelObjectInfo)), key=_path_key),
        rejected=sorted((r for r in results if isinstance(r, Rejection)), key=lambda r: r.path),
    )


def discover_series(root: Path) -> tuple[list[SeriesInfo], list[Rejection]]:
    """The image series under ``root`` and the rejected files (see :func:`discover`).

    Label objects (RTSTRUCT, SEG) are neither series nor rejections and are not returned.

    Args:
        root: folder to search recursively.

    Returns:
        The series, sorted by (PatientID, StudyInstanceUID, SeriesNumber,
        SeriesInstanceUID), and the rejected files, sorted by path.

    Raises:
        InputError: ``root`` is not an existing folder.
    """
    inventory = discover(root)
    return inventory.series, inventory.rejected


def _path_key(label: LabelObjectInfo) -> str:
    return str(label.path)


def _walk_files(root: Path) -> Iterator[Path]:
    """Non-hidden files under ``root`` in a deterministic order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _inspect(path: Path) -> _ImageEntry | LabelObjectInfo | Rejection:
    """What one file is; never raises."""
    if path.name.upper() == "DICOMDIR":
        return Rejection(str(path), DICOMDIR_REASON, _FIX_DICOMDIR)
    try:
        header = _read_header(path)
        sop = _sop_class(header.ds)
        if sop == MEDIA_STORAGE_DIRECTORY:
            return Rejection(str(path), DICOMDIR_REASON, _FIX_DICOMDIR)
        if sop in _LABEL_KINDS:
            return _label_info(header, _LABEL_KINDS[sop])
        for check in _HEADER_CHECKS:
            check(header)
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


def _read_dataset(path: Path, fp: Any = None, *, stop_before_pixels: bool) -> Dataset:
    """Read ``path`` (or the open ``fp``), accepting DICOM files without a preamble.

    Files with no 'DICM' marker are read a second time with ``force=True`` and kept only
    if they carry a SOPClassUID and a SOPInstanceUID (old ACR-NEMA style exports); their
    missing TransferSyntaxUID is filled in from the encoding found.
    """
    source = fp if fp is not None else str(path)
    try:
        return pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        if fp is not None:
            fp.seek(0)
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
            looks_like_dicom = all(
                _UID_PATTERN.match(str(ds.get(kw, "") or "")) for kw in _SOP_KEYWORDS
            )
        except Exception:  # not DICOM at all: any parse error
            looks_like_dicom = False
    if not looks_like_dicom:
        raise InputError(path, _NOT_DICOM, FIX_REMOVE)
    _fill_transfer_syntax(ds)
    return ds


_SOP_KEYWORDS = ("SOPClassUID", "SOPInstanceUID")
_NOT_DICOM = (
    "expected a DICOM file (128-byte preamble then 'DICM'), found no DICOM marker "
    "(another kind of file, or a DICOM file cut short)"
)


def _fill_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset read without file meta the transfer syntax it was encoded in."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif little is False:
        meta.TransferSyntaxUID = ExplicitVRBigEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _read_header(path: Path) -> _Header:
    """The header of ``path`` without pixels; raises InputError if it is not DICOM."""
    try:
        with path.open("rb") as fp:
            ds = _read_dataset(path, fp, stop_before_pixels=True)
            pixel_problem = _pixel_data_problem(fp, ds, path.stat().st_size)
    except InputError:
        raise
    except InvalidDicomError:
        raise InputError(path, _NOT_DICOM, FIX_REMOVE) from None
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
    syntax = _get(ds.file_meta, "TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and UID(syntax).is_transfer_syntax and UID(syntax).is_deflated:
        return None  # position refers to the inflated stream; checked when loading
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    start = fp.tell()
    head = fp.read(12)
    order = "<" if little else ">"
    tag = struct.unpack(order + "HH", head[:4]) if len(head) >= 8 else None
    if tag in _FLOAT_PIXEL_DATA_TAGS:
        return (
            "expected integer Pixel Data (7FE0,0010), found floating-point pixel data, "
            "which medtl does not read"
        )
    if tag != _PIXEL_DATA_TAG:
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
            int(_get(ds, "Rows"))
            * int(_get(ds, "Columns"))
            * int(_get(ds, "SamplesPerPixel", 1) or 1)
            * int(_get(ds, "NumberOfFrames", 1) or 1)
        )
        return (pixels * int(_get(ds, "BitsAllocated")) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return None


_DIRECT_VRS = {"US", "DS", "IS", "UI", "CS"}
_VALID_PARTS = {  # one value of each text type, as PS3.5 table 6.2-1 allows it
    "DS": re.compile(r"^(?=.{1,16}$)[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$"),
    "IS": re.compile(r"^[-+]?\d{1,11}$"),
    "UI": re.compile(r"^(?=.{1,64}$)(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"),
    "CS": re.compile(r"^[A-Z0-9 _]{1,16}$"),
}
_FALLBACK = object()


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"expected a DICOM keyword, got {keyword!r}")
    return tag, dictionary_VR(tag)


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)``, read straight from the file's bytes for simple types.

    pydicom converts an element on first access through its general machinery, which
    takes 30-50 us, as long as parsing the element; discovery and loading read about 20
    per file. A little-endian US value, and DS, IS, UI and CS values that pydicom would
    accept without a warning, are parsed here instead: a float, int or str, or a list of
    them for several values, in place of pydicom's DSfloat / IS / MultiValue. Anything
    else (converted already, other types, empty, invalid) goes through pydicom, with its
    warnings.
    """
    tag, dictionary_vr = _tag_and_vr(keyword)
    element = ds.get_item(tag)
    if element is None:
        return default
    if not isinstance(element, RawDataElement):
        return ds.get(keyword, default)
    value = _raw_value(element, element.VR or dictionary_vr)
    return ds.get(keyword, default) if value is _FALLBACK else value


def _raw_value(element: RawDataElement, vr: str) -> Any:
    """The value of a raw element of a simple type, or ``_FALLBACK``."""
    raw = element.value
    if vr not in _DIRECT_VRS or not isinstance(raw, bytes) or not raw:
        return _FALLBACK
    if vr == "US":
        if len(raw) != 2 or not element.is_little_endian:
            return _FALLBACK
        return int.from_bytes(raw, "little")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return _FALLBACK
    parts = text.rstrip("\0 ").split("\\") if vr == "UI" else text.split("\\")
    parts = [part.strip() for part in parts]
    # Only values pydicom would accept as they are: it warns about the others.
    if not all(_VALID_PARTS[vr].match(part) for part in parts):
        return _FALLBACK
    try:
        if vr == "DS":
            values: list = [float(part) for part in parts]
        elif vr == "IS":
            values = [int(part) for part in parts]
        else:
            values = parts
    except ValueError:
        return _FALLBACK
    return values[0] if len(values) == 1 else values


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    fallback = _get(meta, "MediaStorageSOPClassUID", "") if meta is not None else ""
    return str(_get(ds, "SOPClassUID", "") or fallback or "")


def _text(ds: Dataset, keyword: str) -> str:
    return str(_get(ds, keyword, "") or "")


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


def _is_multiframe(ds: Dataset) -> bool:
    """A file whose slices are frames placed by functional groups, or with several frames."""
    return "PerFrameFunctionalGroupsSequence" in ds or _number_of_frames(ds) > 1


def _number_of_frames(ds: Dataset) -> int:
    try:
        return int(_get(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


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


def _frame_geometry_problem(ds: Dataset) -> str | None:
    """Why the frames of ``ds`` cannot be placed in space, or ``None`` if they can."""
    frames = _number_of_frames(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return f"{frames} frames and no Per-frame Functional Groups"
    if len(per_frame) != frames:
        return f"NumberOfFrames {frames} but {len(per_frame)} Per-frame Functional Group items"
    shared = _shared_groups(ds)
    for index, item in enumerate(per_frame):
        for sequence, keyword in _FRAME_GEOMETRY:
            if _group_value(ds, item, shared, sequence, keyword) is None:
                return f"no {keyword} ({sequence}) for frame {index + 1}"
    return None


_FRAME_GEOMETRY = (
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing"),
)


def _shared_groups(ds: Dataset) -> Dataset | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    return shared[0] if shared else None


def _group_value(
    ds: Dataset, item: Dataset | None, shared: Dataset | None, sequence: str, keyword: str
) -> Any:
    """``keyword`` from the frame's functional group, else the shared one, else the top level.

    PlanePositionSequence is per frame by definition, so its value is never taken from the
    top level of the dataset.
    """
    for group in (item, shared):
        if group is None:
            continue
        seq = group.get(sequence)
        if seq:
            value = seq[0].get(keyword)
            if value not in (None, ""):
                return value
    if sequence == "PlanePositionSequence":
        return None
    value = ds.get(keyword)
    return None if value in (None, "") else value


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


_HEADER_CHECKS: tuple[Callable[[_Header], None], ...] = (
    _check_sop_class,
    _check_pixel_data,
    _check_frames,
    _check_image_attributes,
)


def _image_entry(header: _Header) -> _ImageEntry:
    ds = header.ds
    try:
        number: int | None = int(_get(ds, "SeriesNumber"))
    except (TypeError, ValueError):
        number = None
    return _ImageEntry(
        path=header.path,
        patient_key=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_number=number,
        modality=_text(ds, "Modality"),
        description=_text(ds, "SeriesDescription"),
        multiframe=_is_multiframe(ds),
    )


def _group_series(images: list[_ImageEntry]) -> list[SeriesInfo]:
    """Group image files Patient -> Study -> Series, sorted."""
    groups: dict[tuple[str, ...], list[_ImageEntry]] = {}
    for entry in images:
        groups.setdefault(entry.group, []).append(entry)
    keyed = []
    for entries in groups.values():
        entries.sort(key=lambda e: str(e.path))
        first = entries[0]
        info = SeriesInfo(
            series_uid=first.series_uid,
            study_uid=first.study_uid,
            patient_key=first.patient_key,
            modality=first.modality,
            description=first.description,
            files=tuple(e.path for e in entries),
        )
        number = first.series_number
        key = (
            first.patient_key,
            first.study_uid,
            number is None,  # unnumbered series last
            number or 0,
            first.series_uid,
            str(first.path),
        )
        keyed.append((key, info))
    return [info for _, info in sorted(keyed, key=lambda pair: pair[0])]


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_series(series: SeriesInfo) -> Volume:
    """Read a series' pixels into a float32 volume; see :func:`load_series_checked`.

    Files set aside (localizers, duplicate copies) are left out silently; call
    :func:`load_series_checked` to get them.

    Args:
        series: a series from :func:`discover` or :func:`discover_series`.

    Returns:
        The volume.

    Raises:
        InputError: see :func:`load_series_checked`.
    """
    volume, _ = load_series_checked(series)
    return volume


def load_series_checked(
    series: SeriesInfo, *, keep_integers: bool = False
) -> tuple[Volume, list[Rejection]]:
    """Read a series' pixels into a float32 volume, with the files it set aside.

    Localizer/scout images mixed into the series (ImageType LOCALIZER, an orientation or
    Rows x Columns other than the majority's) and pixel-identical copies of a slice are set
    aside; the rest must form one regular grid. Slices are sorted by ImagePositionPatient
    projected on the slice normal, not by InstanceNumber. Values are
    ``stored * RescaleSlope + RescaleIntercept`` (defaults 1 and 0; per frame for
    multi-frame files).

    Args:
        series: a series from :func:`discover` or :func:`discover_series`.
        keep_integers: when every slice has an integer RescaleSlope and RescaleIntercept
            (the usual CT and MR case), return the exact values in the smallest of uint8,
            int16, uint16, int32 that holds them, in Fortran order (what NIfTI stores),
            instead of float32: half the memory and the bytes to write for 16-bit data.
            Other series come back as float32 whatever this says.

    Returns:
        The volume (``array`` float32 (or an integer type, see ``keep_integers``) indexed
        ``[column, row, slice]``, ``affine`` RAS+ mm,
        ``modality`` from Modality or ``"unknown"``, ``source_uids`` with
        StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID, ``patient_key`` the
        PatientID or ``None``) and the rejections of the files or frames set aside.

    Raises:
        InputError: fewer than 2 slices left, a file that cannot be read or decoded (the
            message names the transfer syntax), orientations without a clear majority,
            different PixelSpacing, two different images at one position, missing slices,
            non-uniform spacing, gantry tilt, or slices not on one line. The path is the
            series folder (or the first file when the series spans folders), or the
            offending file.
    """
    where = _series_location(series)
    label = f"series {series.description!r}" if series.description else "the series"
    frames = [frame for path in series.files for frame in _read_frames(path)]
    _require_slices(where, label, frames, [])
    _check_one_series(where, series, frames)
    set_aside: list[Rejection] = []
    for set_aside_filter in _SET_ASIDE_FILTERS:
        frames, rejections = set_aside_filter(where, label, frames)
        set_aside += rejections
    _require_slices(where, label, frames, set_aside)
    for check in _SERIES_CHECKS:
        check(where, series, frames)
    frames, offsets = _sort_by_position(frames)
    frames, offsets, duplicates = _set_aside_duplicates(where, frames, offsets)
    set_aside += duplicates
    _require_slices(where, label, frames, set_aside)
    for check in _POSITION_CHECKS:
        check(where, frames, offsets)
    spacing = float(offsets[-1] - offsets[0]) / (len(frames) - 1)
    array = _stack_integers(frames) if keep_integers else None
    first = frames[0].ds
    volume = Volume(
        array=_stack_pixels(frames) if array is None else array,
        affine=_ras_affine(frames[0], spacing),
        modality=_text(first, "Modality") or "unknown",
        source_uids={
            kw: _text(first, kw)
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
        },
        patient_key=_text(first, "PatientID") or None,
    )
    return volume, set_aside


def _series_location(series: SeriesInfo) -> Path:
    """The series folder if all its files share one, else its first file."""
    parents = {path.parent for path in series.files}
    if len(parents) == 1:
        return parents.pop()
    return series.files[0] if series.files else Path(series.series_uid)


def _require_slices(
    where: Path, label: str, frames: list[_Frame], set_aside: list[Rejection]
) -> None:
    if len(frames) >= 2:
        return
    aside = (
        f" after setting aside {len(set_aside)} localizer or duplicate images" if set_aside else ""
    )
    raise InputError(
        where,
        f"expected at least 2 slices in {label}, found {len(frames)}{aside}",
        "ingest a 3-D series; a single image (localizer, screenshot, 2-D exam) cannot "
        "be segmented as a volume: remove it or export the full series",
    )


def _read_frames(path: Path) -> list[_Frame]:
    """The slices in one file: one for a classic image, one per frame for multi-frame."""
    try:
        ds = _read_dataset(path, stop_before_pixels=False)
    except InputError:
        raise
    except Exception as exc:  # unreadable since discovery, or never discovered
        raise InputError(
            path,
            f"expected a readable DICOM image, found an error reading it ({exc})",
            "run discovery again on the folder; " + FIX_REMOVE,
        ) from None
    source = _PixelSource(path, ds)
    try:
        if _is_multiframe(ds):
            return _multiframe_frames(path, ds, source)
        return [_classic_frame(path, ds, source)]
    except InputError:
        raise
    except Exception as exc:  # a malformed value pydicom could not convert
        raise InputError(
            path,
            f"expected well-formed geometry and rescale attributes, found a malformed one "
            f"({type(exc).__name__}: {exc})",
            "the header is corrupt; export the series again from the source",
        ) from None


def _classic_frame(path: Path, ds: Dataset, source: _PixelSource) -> _Frame:
    return _make_frame(
        path,
        None,
        ds,
        source,
        iop=_get(ds, "ImageOrientationPatient"),
        ipp=_get(ds, "ImagePositionPatient"),
        spacing=_get(ds, "PixelSpacing"),
        slope=_get(ds, "RescaleSlope"),
        intercept=_get(ds, "RescaleIntercept"),
        image_type=_get(ds, "ImageType"),
    )


def _multiframe_frames(path: Path, ds: Dataset, source: _PixelSource) -> list[_Frame]:
    problem = _frame_geometry_problem(ds)
    if problem is not None:
        raise InputError(
            path,
            f"expected a multi-frame image with a plane position per frame, found {problem}",
            "export the volume as enhanced CT/MR or as classic single-frame images",
        )
    shared = _shared_groups(ds)
    frames = []
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):

        def value(sequence: str, keyword: str, item: Dataset = item) -> Any:
            return _group_value(ds, item, shared, sequence, keyword)

        frames.append(
            _make_frame(
                path,
                index,
                ds,
                source,
                iop=value("PlaneOrientationSequence", "ImageOrientationPatient"),
                ipp=value("PlanePositionSequence", "ImagePositionPatient"),
                spacing=value("PixelMeasuresSequence", "PixelSpacing"),
                slope=value("PixelValueTransformationSequence", "RescaleSlope"),
                intercept=value("PixelValueTransformationSequence", "RescaleIntercept"),
                image_type=_frame_type(item, shared) or ds.get("ImageType"),
            )
        )
    return frames


def _frame_type(item: Dataset, shared: Dataset | None) -> Any:
    """FrameType from any '... Frame Type Sequence' (MR, CT, PET ...) of the frame."""
    for group in (item, shared):
        if group is None:
            continue
        for element in group:
            if element.keyword.endswith("FrameTypeSequence") and element.value:
                frame_type = element.value[0].get("FrameType")
                if frame_type:
                    return frame_type
    return None


def _make_frame(
    path: Path,
    index: int | None,
    ds: Dataset,
    source: _PixelSource,
    *,
    iop: Any,
    ipp: Any,
    spacing: Any,
    slope: Any,
    intercept: Any,
    image_type: Any,
) -> _Frame:
    """A frame with its geometry parsed and checked; raises InputError."""
    where = "" if index is None else f" of frame {index + 1}"
    try:
        iop_values = _floats(iop)
        ipp_values = _floats(ipp)
        spacing_values = _floats(spacing)
        rows, columns = int(_get(ds, "Rows")), int(_get(ds, "Columns"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(
            path,
            f"expected numeric ImageOrientationPatient (6 values), ImagePositionPatient (3), "
            f"PixelSpacing (2), Rows and Columns{where}, found a missing or malformed one "
            f"({exc})",
            FIX_REMOVE,
        ) from None
    if iop_values.shape != (6,) or ipp_values.shape != (3,) or spacing_values.shape != (2,):
        raise InputError(
            path,
            f"expected 6 ImageOrientationPatient, 3 ImagePositionPatient and 2 PixelSpacing "
            f"values{where}, found {iop_values.size}, {ipp_values.size} and "
            f"{spacing_values.size}",
            FIX_REMOVE,
        )
    if not (np.all(np.isfinite(spacing_values)) and np.all(spacing_values > 0)):
        raise InputError(
            path,
            f"expected positive PixelSpacing{where}, found {spacing_values.tolist()}",
            FIX_REMOVE,
        )
    if not np.all(np.isfinite(ipp_values)):
        raise InputError(
            path, f"expected finite ImagePositionPatient{where}, found {ipp_values}", FIX_REMOVE
        )
    row_cosine, column_cosine = _cosines(path, iop_values)
    return _Frame(
        path=path,
        frame=index,
        ds=ds,
        source=source,
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        position=ipp_values,
        rows=rows,
        columns=columns,
        pixel_spacing=spacing_values,
        slope=_float_or(slope, 1.0),
        intercept=_float_or(intercept, 0.0),
        localizer="LOCALIZER" in _upper_values(image_type),
    )


def _floats(value: Any) -> np.ndarray:
    if value is None:
        raise ValueError("attribute missing")
    if isinstance(value, str | bytes | int | float):
        value = [value]
    return np.array([float(v) for v in value], dtype=float)


def _float_or(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    number = float(
        value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value
    )
    if not np.isfinite(number):
        raise ValueError(f"non-finite rescale value {value!r}")
    return number


def _upper_values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(v).strip().upper() for v in value]


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


def _check_one_series(where: Path, series: SeriesInfo, frames: list[_Frame]) -> None:
    for f in frames:
        if _text(f.ds, "SeriesInstanceUID") != series.series_uid:
            raise InputError(
                f.path,
                "expected every file to belong to the series being loaded, found a file of "
                "another series",
                "build the SeriesInfo with discover, which groups files by series",
            )


# Set-aside filters: (where, label, frames) -> (frames kept, rejections of those left out).


def _localizer_rejection(frame: _Frame, label: str, why: str) -> Rejection:
    return Rejection(
        str(frame.path),
        f"localizer/scout image mixed into {label}: {frame.name} {why}",
        FIX_SET_ASIDE,
    )


def _set_aside_localizers(
    where: Path, label: str, frames: list[_Frame]
) -> tuple[list[_Frame], list[Rejection]]:
    """Leave out images whose ImageType (FrameType) says LOCALIZER."""
    kept = [f for f in frames if not f.localizer]
    rejected = [
        _localizer_rejection(f, label, "has ImageType LOCALIZER") for f in frames if f.localizer
    ]
    return kept, rejected


def _majority(
    where: Path, frames: list[_Frame], same: Callable[[_Frame, _Frame], bool], what: str
) -> tuple[list[_Frame], list[_Frame]]:
    """Split frames into the strict majority group (by ``same``) and the rest.

    Raises InputError when no group holds more than half of the frames.
    """
    groups: list[list[_Frame]] = []
    for f in frames:
        for group in groups:
            if same(group[0], f):
                group.append(f)
                break
        else:
            groups.append([f])
    largest = max(groups, key=len) if groups else []
    if len(groups) <= 1:
        return frames, []
    if 2 * len(largest) <= len(frames):
        a, b = groups[0][0], groups[1][0]
        raise InputError(
            where,
            f"expected one {what} for all slices, found {_describe(a, what)} in {a.name} but "
            f"{_describe(b, what)} in {b.name}, with no majority ({len(groups)} groups of "
            f"{', '.join(str(len(g)) for g in groups)} slices)",
            FIX_ONE_SERIES,
        )
    kept = {id(f) for f in largest}
    return largest, [f for f in frames if id(f) not in kept]


def _describe(frame: _Frame, what: str) -> str:
    if what == "ImageOrientationPatient":
        return _fmt(frame.orientation)
    return f"{frame.rows} x {frame.columns}"


def _set_aside_other_orientations(
    where: Path, label: str, frames: list[_Frame]
) -> tuple[list[_Frame], list[Rejection]]:
    """Leave out images whose orientation differs from the majority's."""
    kept, others = _majority(
        where,
        frames,
        lambda a, b: np.allclose(a.orientation, b.orientation, atol=_ORIENTATION_TOL),
        "ImageOrientationPatient",
    )
    if not others:
        return kept, []
    majority = _fmt(kept[0].orientation)
    return kept, [
        _localizer_rejection(
            f,
            label,
            f"has ImageOrientationPatient {_fmt(f.orientation)}, not the series' {majority} "
            f"({len(kept)} of {len(frames)} slices)",
        )
        for f in others
    ]


def _set_aside_other_grids(
    where: Path, label: str, frames: list[_Frame]
) -> tuple[list[_Frame], list[Rejection]]:
    """Leave out images whose Rows x Columns differ from the majority's."""
    kept, others = _majority(
        where,
        frames,
        lambda a, b: (a.rows, a.columns) == (b.rows, b.columns),
        "Rows x Columns",
    )
    if not others:
        return kept, []
    majority = f"{kept[0].rows} x {kept[0].columns}"
    return kept, [
        _localizer_rejection(
            f,
            label,
            f"has Rows x Columns {f.rows} x {f.columns}, not the series' {majority} "
            f"({len(kept)} of {len(frames)} slices)",
        )
        for f in others
    ]


_SET_ASIDE_FILTERS: tuple[
    Callable[[Path, str, list[_Frame]], tuple[list[_Frame], list[Rejection]]], ...
] = (
    _set_aside_localizers,
    _set_aside_other_orientations,
    _set_aside_other_grids,
)


def _check_same_grid(where: Path, series: SeriesInfo, frames: list[_Frame]) -> None:
    first = frames[0]
    for f in frames[1:]:
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-4):
            raise InputError(
                where,
                "expected the same PixelSpacing for all slices, found "
                f"{_fmt(first.pixel_spacing)} in {first.name} but "
                f"{_fmt(f.pixel_spacing)} in {f.name}",
                FIX_ONE_SERIES,
            )


_SERIES_CHECKS: tuple[Callable[[Path, SeriesInfo, list[_Frame]], None], ...] = (_check_same_grid,)


def _sort_by_position(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray]:
    """Frames sorted by position along the slice normal, and those positions (mm)."""
    normal = frames[0].normal
    offsets = np.array([f.position @ normal for f in frames])
    order = np.argsort(offsets, kind="stable")
    return [frames[i] for i in order], offsets[order]


def _set_aside_duplicates(
    where: Path, frames: list[_Frame], offsets: np.ndarray
) -> tuple[list[_Frame], np.ndarray, list[Rejection]]:
    """Leave out pixel-identical copies of a slice; two different images at one position raise.

    ``frames`` must be sorted by ``offsets``.
    """
    kept: list[int] = []
    rejected: list[Rejection] = []
    for index, frame in enumerate(frames):
        if kept and offsets[index] - offsets[kept[-1]] < _POSITION_TOL:
            original = frames[kept[-1]]
            if not np.array_equal(original.values(), frame.values()):
                raise InputError(
                    where,
                    "expected one slice per position, found two different images at "
                    f"{offsets[index]:.3f} mm along the slice normal: {original.path} and "
                    f"{frame.path}"
                    + (f" ({original.name}, {frame.name})" if frame.frame is not None else ""),
                    "remove the slice that does not belong; if the series holds several "
                    "acquisitions (echoes, time points, contrast phases), export them as "
                    "separate series",
                )
            rejected.append(
                Rejection(
                    str(frame.path),
                    f"duplicate of {original.name}: {frame.name} has the same position "
                    f"({offsets[index]:.3f} mm along the slice normal) and identical pixels",
                    FIX_SET_ASIDE,
                )
            )
            continue
        kept.append(index)
    return [frames[i] for i in kept], offsets[kept], rejected


def _check_no_gaps(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    steps = np.diff(offsets)
    # The median of the regular steps: a few large gaps in a short series must not
    # inflate the spacing they are measured against.
    median = float(np.median(steps[steps <= _GAP_FACTOR * steps.min()]))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median)
    if gaps.size:
        i = int(gaps[0])
        missing = max(int(round(steps[i] / median)) - 1, 1)
        raise InputError(
            where,
            f"missing slices between z={offsets[i]:.2f} and z={offsets[i + 1]:.2f} mm "
            f"(along the slice normal, {frames[i].name} and {frames[i + 1].name}); expected "
            f"spacing {median:.3g} mm, found a step of {steps[i]:.3g} mm (about {missing} "
            f"slice{'s' if missing > 1 else ''} missing, {gaps.size} gap(s) in all)",
            FIX_EXPORT_AGAIN,
        )


def _check_uniform_spacing(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    steps = np.diff(offsets)
    median = float(np.median(steps))
    spread = float(steps.max() - steps.min())
    if spread > max(_SPACING_SPREAD * median, _SPACING_ABS_TOL):
        raise InputError(
            where,
            f"expected uniform slice spacing (steps within {_SPACING_SPREAD:.0%} of each "
            f"other), found steps from {steps.min():.4g} to {steps.max():.4g} mm "
            f"(median {median:.4g} mm)",
            "ask for a reconstruction with constant slice spacing, or convert the series with "
            "`dcm2niix` (it resamples variable spacing to an equidistant '_Eq' image) and "
            "ingest that NIfTI",
        )


def _check_no_tilt(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    displacement = frames[-1].position - frames[0].position
    along = abs(float(displacement @ frames[0].normal))
    angle = float(np.degrees(np.arctan2(_in_plane(displacement, frames[0]), along)))
    if angle > _MAX_TILT_DEGREES:
        tilt = frames[0].ds.get("GantryDetectorTilt")
        header = f"; GantryDetectorTilt says {tilt}" if tilt not in (None, "") else ""
        raise InputError(
            where,
            f"expected slices stacked along the slice normal, found them offset in-plane: a "
            f"gantry tilt of {angle:.2f} degrees (more than {_MAX_TILT_DEGREES}){header}",
            "convert the series with `dcm2niix`, which corrects gantry tilt (it writes a "
            "'_Tilt_1' image), and ingest that NIfTI; or ask for a reconstruction without tilt",
        )


def _in_plane(vector: np.ndarray, frame: _Frame) -> float:
    """Length of the part of ``vector`` in the slice plane (mm)."""
    return float(np.linalg.norm(vector - (vector @ frame.normal) * frame.normal))


def _check_on_one_line(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    """Every slice lies on the line from the first to the last slice (no in-plane jumps)."""
    first, last = frames[0].position, frames[-1].position
    fractions = (offsets - offsets[0]) / (offsets[-1] - offsets[0])
    drift = [
        _in_plane(f.position - (first + t * (last - first)), frames[0])
        for f, t in zip(frames, fractions, strict=True)
    ]
    worst = int(np.argmax(drift))
    tolerance = _LINE_TOL * float(frames[0].pixel_spacing.min())
    if drift[worst] > tolerance:
        raise InputError(
            where,
            f"expected all slices on one line along the slice normal, found "
            f"{frames[worst].name} shifted in-plane by {drift[worst]:.3g} mm (more than "
            f"{tolerance:.3g} mm)",
            FIX_ONE_SERIES,
        )


_POSITION_CHECKS: tuple[Callable[[Path, list[_Frame], np.ndarray], None], ...] = (
    _check_no_gaps,
    _check_uniform_spacing,
    _check_no_tilt,
    _check_on_one_line,
)


def _stack_pixels(frames: list[_Frame]) -> np.ndarray:
    """The rescaled pixels as float32 ``[column, row, slice]``."""
    first = frames[0]
    array = np.empty((first.columns, first.rows, len(frames)), dtype=np.float32)
    for k, f in enumerate(frames):
        array[:, :, k] = f.values().T
    return array


_INTEGER_TYPES = (np.uint8, np.int16, np.uint16, np.int32)


def _stack_integers(frames: list[_Frame]) -> np.ndarray | None:
    """The rescaled pixels in the smallest integer type that holds them exactly, else None.

    ``None`` when a slice has a non-integer RescaleSlope or RescaleIntercept, non-integer
    stored values, or values outside int32. The array is ``[column, row, slice]`` in
    Fortran order, so each slice is one contiguous block (as NIfTI stores it).
    """
    if not all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames):
        return None
    stored = [f.stored() for f in frames]
    if not all(np.issubdtype(s.dtype, np.integer) and s.size for s in stored):
        return None
    low, high = np.inf, -np.inf
    for f, s in zip(frames, stored, strict=True):
        ends = [int(v) * int(f.slope) + int(f.intercept) for v in (s.min(), s.max())]
        low, high = min(low, *ends), max(high, *ends)
    dtype = next(
        (t for t in _INTEGER_TYPES if np.iinfo(t).min <= low and high <= np.iinfo(t).max), None
    )
    if dtype is None:
        return None
    first = frames[0]
    array = np.empty((first.columns, first.rows, len(frames)), dtype=dtype, order="F")
    # int32 arithmetic unless a value or an intercept comes near its limits.
    extremes = [abs(low), abs(high), *(abs(int(f.intercept)) for f in frames)]
    wide = np.int32 if max(extremes) < 2**30 else np.int64
    for k, (f, s) in enumerate(zip(frames, stored, strict=True)):
        if f.slope == 1 and f.intercept == 0:
            array[:, :, k] = s.T
        elif f.slope == 1:
            array[:, :, k] = np.add(s, int(f.intercept), dtype=wide).T
        else:
            array[:, :, k] = (s.astype(wide) * int(f.slope) + int(f.intercept)).T
    return array


def _decoder_available(syntax: UID) -> bool:
    """Whether pydicom has a working decoder for ``syntax`` in this installation."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


_NATIVE_LITTLE_ENDIAN = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _native_pixels(ds: Dataset, syntax: UID) -> np.ndarray | None:
    """A single-frame greyscale image of native little-endian pixel data, read directly.

    What ``ds.pixel_array`` returns (the stored values, unused high bits cleared or
    sign-extended as pydicom does), without its per-file decoder set-up; a read-only view
    on the file's bytes when no bits need correcting. ``None`` for anything else
    (compressed, big-endian, multi-frame, colour, 1-bit, short data), left to pydicom.
    """
    element = ds.get_item(_PIXEL_DATA_TAG)
    if syntax not in _NATIVE_LITTLE_ENDIAN or element is None:
        return None
    try:
        rows, columns = int(_get(ds, "Rows")), int(_get(ds, "Columns"))
        allocated, stored = int(_get(ds, "BitsAllocated")), int(_get(ds, "BitsStored"))
        signed = int(_get(ds, "PixelRepresentation")) == 1
        single = int(_get(ds, "NumberOfFrames", 1) or 1) == 1
        samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (8, 16, 32) or not 0 < stored <= allocated or not single or samples != 1:
        return None
    data = element.value  # raw or converted, native pixel data is the bytes as stored
    size = rows * columns * allocated // 8
    if not isinstance(data, bytes) or len(data) < size or rows < 1 or columns < 1:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    pixels = np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)
    if stored < allocated:
        shift = allocated - stored
        pixels = np.right_shift(np.left_shift(pixels, shift), shift)
    return pixels


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    """The stored pixel values of a file: (Rows, Columns) or (frames, Rows, Columns)."""
    syntax = UID(str(_get(ds.file_meta, "TransferSyntaxUID", "") or ""))
    native = _native_pixels(ds, syntax)
    if native is not None:
        return native
    compressed = syntax.is_transfer_syntax and syntax.is_compressed
    if compressed and not _decoder_available(syntax):
        raise InputError(
            path,
            f"expected pixel data this installation can decode, found {syntax.name} "
            f"({syntax}) and no decoder for it installed",
            FIX_DECODER,
        )
    try:
        return ds.pixel_array
    except Exception as exc:  # corrupt or truncated pixel data
        if compressed:
            raise InputError(
                path,
                f"expected decodable pixel data, found {syntax.name} ({syntax}) that could not "
                f"be decoded ({exc})",
                "copy the file again from the source; if it stays undecodable, " + FIX_DECOMPRESS,
            ) from None
        raise InputError(
            path, f"expected readable pixel data, found corrupt pixel data ({exc})", FIX_REMOVE
        ) from None


def _ras_affine(first: _Frame, slice_spacing: float) -> np.ndarray:
    """RAS+ affine of the grid whose first slice is ``first``."""
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    lps[:3, 2] = first.normal * slice_spacing
    lps[:3, 3] = first.position
    return _RAS_FROM_LPS @ lps


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
