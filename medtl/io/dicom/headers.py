"""Reading one DICOM file: its header, its simple values, its functional groups.

What discovery (:mod:`.discovery`) and loading (:mod:`.loading`) both need: reading a file
with or without a preamble (:func:`_read_dataset`), its header without the pixels together
with what is wrong with its Pixel Data (:func:`_read_header`), fast access to simple
values (:func:`_get`), the Shared / Per-frame Functional Groups of multi-frame files
(:func:`_group_value`), and the fixes that messages offer.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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

from medtl.kernel.errors import InputError

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


_PIXEL_DATA_TAG = (0x7FE0, 0x0010)
_FLOAT_PIXEL_DATA_TAGS = {(0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_UNDEFINED_LENGTH = 0xFFFFFFFF


_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class _Header:
    """A file's header, read without pixels, and what is wrong with its pixel data."""

    path: Path
    ds: Dataset
    pixel_problem: str | None


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


def _ds_quantum(container: Dataset | None, keyword: str) -> float:
    """The coarsest rounding step of a DS attribute as the file writes it, in its unit.

    A value written with ``d`` decimals was rounded to ``10**-d``: ``"-12.3\\4.56\\7"`` gives
    0.1 (whole numbers beside decimals are taken as trimmed zeros), ``"12\\-4\\7"`` gives 1.0.
    0.0 when the text is not known (the attribute is absent, or holds numbers set in
    memory).
    """
    if container is None:
        return 0.0
    tag, _ = _tag_and_vr(keyword)
    element = container.get_item(tag)
    if element is None:
        return 0.0
    raw = element.value
    if isinstance(element, RawDataElement):
        if not isinstance(raw, bytes):
            return 0.0
        texts: list[str | None] = list(raw.decode("ascii", "replace").split("\\"))
    else:
        if isinstance(raw, str):
            values: list = raw.split("\\")
        elif isinstance(raw, bytes) or not hasattr(raw, "__iter__"):
            values = [raw]
        else:
            values = list(raw)
        texts = [v if isinstance(v, str) else getattr(v, "original_string", None) for v in values]
    if any(text is None for text in texts):
        return 0.0
    texts = [str(text).strip(" \0") for text in texts]
    # A writer that trims trailing zeros writes 7.0 as "7": whole numbers beside decimals
    # say nothing about the rounding.
    decimal = [text for text in texts if "." in text]
    quantum = 0.0
    for text in decimal or texts:
        try:
            exponent = Decimal(text).as_tuple().exponent
        except InvalidOperation:
            return 0.0
        if isinstance(exponent, int):
            quantum = max(quantum, 10.0**exponent)
    return quantum


def position_rounding(ds: Dataset) -> float:
    """How far each ImagePositionPatient coordinate of ``ds`` may be from the truth, mm.

    Half the rounding step the header writes it to: 0.05 mm for GE's ``"-12.3"``, 0 when
    the text is not known.
    """
    return 0.5 * _ds_quantum(ds, "ImagePositionPatient")


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    fallback = _get(meta, "MediaStorageSOPClassUID", "") if meta is not None else ""
    return str(_get(ds, "SOPClassUID", "") or fallback or "")


def _text(ds: Dataset, keyword: str) -> str:
    return str(_get(ds, keyword, "") or "")


def _is_multiframe(ds: Dataset) -> bool:
    """A file whose slices are frames placed by functional groups, or with several frames."""
    return "PerFrameFunctionalGroupsSequence" in ds or _number_of_frames(ds) > 1


def _number_of_frames(ds: Dataset) -> int:
    try:
        return int(_get(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


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


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
