"""Read NIfTI-1 / NIfTI-2 files (``.nii``, ``.nii.gz``) and ``.hdr`` / ``.img`` pairs with
nibabel, after checking the header: declared size against the file, axes, and geometry.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
from nibabel.imageglobals import LoggingOutputSuppressor

from medtl.io.checks import MAX_VOXELS, check_axes, check_geometry, check_size
from medtl.io.image_file import (
    ImageFile,
    cannot_read,
    check_voxel_sizes,
    describe_error,
    drop_trailing_ones,
)
from medtl.kernel.errors import InputError

_GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _nifti_header(raw: bytes, path: Path, what: str):
    """The NIfTI-1 or NIfTI-2 header in ``raw`` as nibabel reads it, without its fixes."""
    import nibabel as nib

    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        size = klass.header_class.sizeof_hdr
        if len(raw) < size:
            continue
        first = raw[:4]
        if int.from_bytes(first, "little") != size and int.from_bytes(first, "big") != size:
            continue
        header = klass.header_class.from_fileobj(io.BytesIO(raw[:size]), check=False)
        return klass, header
    raise cannot_read(
        path,
        what,
        "NIfTI",
        f"no NIfTI header: the file starts with {raw[:4]!r} and holds {len(raw)} bytes "
        "where a NIfTI-1 header alone is 348 bytes",
    )


def _declared(header, path: Path, what: str) -> tuple[tuple[int, ...], int, int]:
    """Shape, data offset and data size (bytes) the header declares."""
    try:
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
    except Exception as exc:
        raise cannot_read(path, what, "NIfTI", f"unusable header: {describe_error(exc)}") from exc
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(
            path,
            f"{what} data type {dtype} is not a real number type (RGB or complex voxels)",
            f"save the {what} with one real value per voxel (e.g. int16 or float32)",
        )
    return shape, offset, int(np.prod([max(s, 0) for s in shape], dtype=np.int64)) * dtype.itemsize


def _gzip_payload(path: Path, expected: int) -> tuple[int, str]:
    """Bytes a gzip file decompresses to (``expected`` when it holds enough), and any error.

    The gzip trailer's ISIZE (the size modulo 2**32) settles it at once for a file
    written in one piece; otherwise (several gzip members, a truncated or forged file) the
    stream is decompressed and counted, never held, up to ``expected``.
    """
    with open(path, "rb") as f:
        f.seek(-4, 2)
        if int.from_bytes(f.read(4), "little") == expected % 2**32:
            return expected, ""
    # Beyond the most any accepted file holds, the size limit refuses the file anyway.
    enough = min(expected, MAX_VOXELS * 8 + 1024)
    count = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 16):
                count += len(chunk)
                if count >= enough:
                    return expected, ""
    except Exception as exc:
        return count, describe_error(exc)
    return count, ""


def _check_payload(path: Path, what: str, shape, offset: int, nbytes: int, gz: bool) -> None:
    """Refuse a file that holds fewer bytes than its header declares, before reading them."""
    expected = offset + nbytes
    if gz:
        found, error = _gzip_payload(path, expected)
    else:
        found, error = path.stat().st_size, ""
    if found >= expected:
        return
    if error:
        holds = f"decompression fails after {found:,} bytes ({error})"
    else:
        holds = f"the file {'decompresses to' if gz else 'holds'} {found:,} bytes"
    raise InputError(
        path,
        f"{what} file is truncated or its header is wrong: the header declares "
        f"{'x'.join(str(s) for s in shape)} voxels ({nbytes:,} bytes from byte {offset}), " + holds,
        f"copy or export the {what} again; the file was cut off or its header damaged",
    )


def _geometry_from_nifti(header, affine: np.ndarray, path: Path, what: str) -> np.ndarray:
    """The affine nibabel chose, after checking the header fields it was built from.

    nibabel uses the sform when ``sform_code`` > 0, else the qform (``qform_code`` > 0),
    else the voxel sizes alone; qform and the fallback take the sizes from ``pixdim``,
    where nibabel turns 0 into 1 mm and negative sizes into positive ones. medtl refuses
    those instead of guessing.
    """
    if int(header["sform_code"]) == 0:
        pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
        check_voxel_sizes(pixdim, path, what, field="pixdim", tools="with nibabel or 3D Slicer")
    return check_geometry(affine, path, what)


def _nifti_array(img, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(img.dataobj)
    except Exception as exc:
        raise cannot_read(path, what, "NIfTI", describe_error(exc)) from exc


def read_nifti(path: Path, what: str, channels: bool) -> ImageFile:
    """A ``.nii`` / ``.nii.gz`` file (compressed or not, whatever its name), checked."""
    import nibabel as nib

    gz = _is_gzip(path)
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
    except Exception as exc:
        raise cannot_read(path, what, "NIfTI", describe_error(exc)) from exc
    klass, header = _nifti_header(raw, path, what)
    _check_declared(header, path, path, what, channels, gz)

    @contextmanager
    def opened() -> Iterator:
        # nibabel logs the header fixes it makes (pixdim 0 -> 1); medtl refuses them instead.
        with opener(path, "rb") as f, LoggingOutputSuppressor():
            holder = nib.FileHolder(filename=str(path), fileobj=f)
            yield klass.from_file_map({"image": holder, "header": holder})

    return _image_file(opened, header, path, what)


def _check_declared(header, path: Path, payload: Path, what: str, channels: bool, gz: bool) -> None:
    """Refuse, before any voxel is read, a NIfTI header whose declared data the file
    ``payload`` cannot hold, or that is too large or of the wrong dimensionality."""
    shape, offset, nbytes = _declared(header, path, what)
    _check_payload(payload, what, shape, offset, nbytes, gz)
    check_size(shape, path, what)
    check_axes(shape, path, what, channels)


def read_nifti_pair(path: Path, what: str, channels: bool) -> ImageFile:
    """A NIfTI ``.hdr`` header with the ``.img`` beside it, checked (Analyze 7.5 refused)."""
    import nibabel as nib

    data = path.with_suffix(".img")
    if not data.is_file():
        raise InputError(
            path,
            f"the {what}'s voxel file {data.name} is missing (a .hdr header holds no voxels)",
            f"put {data.name} beside {path.name}, or export the {what} as one .nii.gz",
        )
    raw = path.read_bytes()[:540]
    try:
        _, header = _nifti_header(raw, path, what)
    except InputError:
        header = None
    if header is None or header["magic"].item() != b"ni1":
        raise InputError(
            path,
            f"{what} is an Analyze 7.5 header (no NIfTI magic 'ni1'): it does not say how "
            "the voxels are oriented",
            f"convert the {what} to NIfTI (.nii.gz) with its true orientation",
        )
    _check_declared(header, path, data, what, channels, _is_gzip(data))

    @contextmanager
    def opened() -> Iterator:
        with LoggingOutputSuppressor():
            image = nib.Nifti1Pair.from_filename(str(path))
        yield image

    return _image_file(opened, header, path, what)


def _image_file(
    opened: Callable[[], AbstractContextManager], header, path: Path, what: str
) -> ImageFile:
    """Open the image (``opened`` gives nibabel's image while the file is open), check its
    geometry, then read its voxels; any failure but a refusal becomes "cannot read"."""
    try:
        with opened() as img:
            affine = _geometry_from_nifti(header, img.affine, path, what)
            array = _nifti_array(img, path, what)
    except InputError:
        raise
    except Exception as exc:
        raise cannot_read(path, what, "NIfTI", describe_error(exc)) from exc
    return ImageFile(path, drop_trailing_ones(array), affine)


__all__ = ["read_nifti", "read_nifti_pair"]
