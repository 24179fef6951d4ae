"""Pixel values: decoding a file's Pixel Data (stacking slices is :mod:`.stacking`).

Native little-endian data is read straight from the file's bytes (:func:`_native_pixels`);
anything else (compressed, big-endian, multi-frame) goes through pydicom's pixel handlers,
i.e. the installed pylibjpeg plugins, with a message naming the transfer syntax when no
decoder is installed (:func:`_decode`).
"""

from __future__ import annotations

from pathlib import Path

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
