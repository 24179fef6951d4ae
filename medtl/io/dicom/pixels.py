"""Pixel values: decoding a file's Pixel Data and stacking slices into an array.

Native little-endian data is read straight from the file's bytes (:func:`_native_pixels`);
anything else (compressed, big-endian, multi-frame) goes through pydicom's pixel handlers,
i.e. the installed pylibjpeg plugins, with a message naming the transfer syntax when no
decoder is installed (:func:`_decode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medtl.io.dicom.headers import (
    _PIXEL_DATA_TAG,
    FIX_DECODER,
    FIX_DECOMPRESS,
    FIX_REMOVE,
    _get,
)
from medtl.kernel.errors import InputError

if TYPE_CHECKING:
    from medtl.io.dicom.frames import _Frame


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
