"""Read image files other than DICOM: NIfTI (nibabel), NRRD and MetaImage (SimpleITK).

Every reader checks the header before it reads any voxel: the declared size against the
file (a truncated file, or a damaged header declaring gigabytes, is refused without
allocating them), the number of axes (one 3-D volume per file), and the geometry (no zero,
negative or NaN voxel size, no singular orientation). What it returns is an
:class:`ImageFile`: the voxels indexed ``[i, j, k]`` and the RAS+ affine medtl uses
everywhere (see :mod:`medtl.io.volume`), whatever the format.

Formats and their names:

- NIfTI-1 / NIfTI-2: ``.nii``, ``.nii.gz`` (read by content: a ``.nii.gz`` that is not
  compressed is read all the same), and ``.hdr`` / ``.img`` pairs;
- NRRD: ``.nrrd`` and ``.nhdr`` (header with a detached data file), including 3D Slicer's
  ``.seg.nrrd`` segmentations (their ``Segment<N>_*`` header fields are kept in
  :attr:`ImageFile.fields`);
- MetaImage: ``.mha`` and ``.mhd`` (header with a detached ``.raw``).

SimpleITK gives LPS+ geometry and arrays in ``[z, y, x]`` order (as nnU-Net's SimpleITKIO
reads them); both are converted here.

Example:
    >>> import tempfile
    >>> import nibabel as nib
    >>> path = Path(tempfile.mkdtemp()) / "ct.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([2, 2, 3, 1])), path)
    >>> image = read_image(path)
    >>> image.array.shape, image.spacing
    ((4, 5, 6), (2.0, 2.0, 3.0))
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.imageglobals import LoggingOutputSuppressor

from medtl.io.checks import MAX_VOXELS, check_axes, check_geometry, check_size
from medtl.io.volume import spacing_of
from medtl.kernel.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_PAIR_SUFFIXES = (".hdr",)  # the .img beside it holds the voxels
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + NIFTI_PAIR_SUFFIXES + ITK_SUFFIXES
SEG_NRRD_SUFFIX = ".seg.nrrd"

_GZIP_MAGIC = b"\x1f\x8b"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_FORMAT = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}


@dataclass(frozen=True)
class ImageFile:
    """The voxels and geometry of one image file, checked but not converted.

    Attributes:
        path: the file read.
        array: voxel values indexed ``[i, j, k]`` (``[i, j, k, c]`` with several
            channels or Slicer segmentation layers), in the file's own data type.
        affine: 4x4 voxel-to-world matrix in RAS+ millimetres.
        fields: header key/values of NRRD and MetaImage files (e.g. 3D Slicer's
            ``Segment0_Name``); empty for NIfTI.
    """

    path: Path
    array: np.ndarray
    affine: np.ndarray
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes."""
        return spacing_of(self.affine)


def suffix_of(path: Path) -> str:
    """The image suffix of a file name (``.nii.gz``, ``.seg.nrrd``, ``.mha``, ...) or ``""``.

    Example:
        >>> suffix_of(Path("a/Segmentation.seg.nrrd")), suffix_of(Path("ct.NII.GZ"))
        ('.seg.nrrd', '.nii.gz')
    """
    name = path.name.lower()
    for suffix in (SEG_NRRD_SUFFIX, ".nii.gz", *IMAGE_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return ""


def is_image_file(path: Path) -> bool:
    """Whether the name is that of an image file medtl reads (DICOM aside)."""
    return bool(suffix_of(path))


def image_stem(path: Path) -> str:
    """The file name without its image suffix.

    Example:
        >>> image_stem(Path("case_01.seg.nrrd")), image_stem(Path("case_01_0000.nii.gz"))
        ('case_01', 'case_01_0000')
    """
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def describe_error(exc: BaseException) -> str:
    """An exception as text that is never empty: its type, and its message if it has one.

    Example:
        >>> describe_error(EOFError())
        'EOFError (no message)'
    """
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (no message)"


def companion_files(path: Path) -> list[Path]:
    """The files that hold an image header's voxels, when they are not in the header file.

    A NIfTI ``.hdr`` has its ``.img``; an ``.nhdr`` or ``.mhd`` names its data file. Used
    to protect every input file, not only the one named.
    """
    suffix = suffix_of(path)
    if suffix == ".hdr":
        return [path.with_suffix(".img")]
    if suffix in (".nhdr", ".mhd"):
        data = _detached_data_file(path, _text_header(path))
        return [data] if data is not None else []
    return []


def read_image(path: Path, what: str = "image", channels: bool = False) -> ImageFile:
    """Read one image file after checking its header.

    Args:
        path: a NIfTI, NRRD or MetaImage file (see the module doc for the names).
        what: what the file is, for messages (``"image"``, ``"label"``, ...).
        channels: allow a fourth axis of several channels (an MSD image whose
            ``dataset.json`` names them, a Slicer segmentation's layers). A trailing axis
            of length 1 is always dropped.

    Raises:
        InputError: the file cannot be read, is truncated, declares more voxels than
            :data:`medtl.io.checks.MAX_VOXELS`, is not one 3-D volume, or has a voxel size
            or orientation that is not usable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file not found", f"check the {what} path")
    suffix = suffix_of(path)
    if suffix in ITK_SUFFIXES or suffix == SEG_NRRD_SUFFIX:
        return _read_itk(path, what, channels)
    if suffix == ".hdr":
        return _read_nifti_pair(path, what, channels)
    return _read_nifti(path, what, channels)


# ------------------------------------------------------------------------------ NIfTI


def _cannot_read(path: Path, what: str, fmt: str, detail: str) -> InputError:
    return InputError(
        path,
        f"cannot read {what} as {fmt} ({detail})",
        f"export the {what} again as .nii.gz (or check that the file was copied completely)",
    )


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
    raise _cannot_read(
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
        raise _cannot_read(path, what, "NIfTI", f"unusable header: {describe_error(exc)}") from exc
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
        for axis, size in enumerate(pixdim):
            if not np.isfinite(size) or size <= 0:
                raise InputError(
                    path,
                    f"voxel size {size:g} mm along axis {axis} in the header (pixdim[{axis + 1}]"
                    "); a voxel size must be a positive number",
                    f"fix the voxel size in the {what}'s header (e.g. with nibabel or "
                    "3D Slicer) or export it again",
                )
    return check_geometry(affine, path, what)


def _nifti_array(img, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(img.dataobj)
    except Exception as exc:
        raise _cannot_read(path, what, "NIfTI", describe_error(exc)) from exc


def _read_nifti(path: Path, what: str, channels: bool) -> ImageFile:
    import nibabel as nib

    gz = _is_gzip(path)
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
    except Exception as exc:
        raise _cannot_read(path, what, "NIfTI", describe_error(exc)) from exc
    klass, header = _nifti_header(raw, path, what)
    _check_declared(header, path, path, what, channels, gz)
    try:
        # nibabel logs the header fixes it makes (pixdim 0 -> 1); medtl refuses them instead.
        with opener(path, "rb") as f, LoggingOutputSuppressor():
            holder = nib.FileHolder(filename=str(path), fileobj=f)
            img = klass.from_file_map({"image": holder, "header": holder})
            affine = _geometry_from_nifti(header, img.affine, path, what)
            array = _nifti_array(img, path, what)
    except InputError:
        raise
    except Exception as exc:
        raise _cannot_read(path, what, "NIfTI", describe_error(exc)) from exc
    return ImageFile(path, _drop_trailing_ones(array), affine)


def _check_declared(header, path: Path, payload: Path, what: str, channels: bool, gz: bool) -> None:
    """Refuse, before any voxel is read, a NIfTI header whose declared data the file
    ``payload`` cannot hold, or that is too large or of the wrong dimensionality."""
    shape, offset, nbytes = _declared(header, path, what)
    _check_payload(payload, what, shape, offset, nbytes, gz)
    check_size(shape, path, what)
    check_axes(shape, path, what, channels)


def _read_nifti_pair(path: Path, what: str, channels: bool) -> ImageFile:
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
    try:
        with LoggingOutputSuppressor():
            img = nib.Nifti1Pair.from_filename(str(path))
        affine = _geometry_from_nifti(header, img.affine, path, what)
        array = _nifti_array(img, path, what)
    except InputError:
        raise
    except Exception as exc:
        raise _cannot_read(path, what, "NIfTI", describe_error(exc)) from exc
    return ImageFile(path, _drop_trailing_ones(array), affine)


def _drop_trailing_ones(array: np.ndarray) -> np.ndarray:
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


# -------------------------------------------------------------------- NRRD / MetaImage


def _text_header(path: Path) -> dict[str, str]:
    """The fields of an NRRD or MetaImage header (keys lower-cased), read as text."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields: dict[str, str] = {}
    if head.startswith(b"NRRD"):
        for line in head.split(b"\n")[1:]:
            line = line.rstrip(b"\r")
            if not line:
                break
            text = line.decode("latin-1")
            if text.startswith("#"):
                continue
            key, sep, value = text.partition(":=" if ":=" in text else ": ")
            if sep:
                fields[key.strip().lower()] = value.strip()
        fields["\0header_bytes"] = str(head.find(b"\n\n") + 2) if b"\n\n" in head else ""
        return fields
    for line in head.split(b"\n"):
        text = line.decode("latin-1").strip()
        key, sep, value = text.partition("=")
        if not sep:
            break
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            fields["\0header_bytes"] = str(head.find(line) + len(line) + 1)
            break
    return fields


def _detached_data_file(path: Path, fields: dict[str, str]) -> Path | None:
    """The data file an ``.nhdr`` / ``.mhd`` names, or None when the voxels are inside."""
    name = fields.get("data file") or fields.get("datafile") or fields.get("elementdatafile")
    if not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name:
        return None
    data = Path(name)
    return data if data.is_absolute() else path.parent / data


def _itk_reason(exc: BaseException, path: Path) -> str:
    """The useful line of an ITK / teem message, without source paths or object ids."""
    lines = []
    for line in str(exc).splitlines():
        line = line.strip()
        skip = line.startswith("Exception thrown in") or re.search(r"\.[ch]xx:\d+:?$", line)
        if not line or skip:
            continue
        line = re.sub(r"^(ITK ERROR|sitk::ERROR): (\w+\(0x[0-9a-f]+\): )?", "", line)
        line = re.sub(r"^\[nrrd\] ", "", line)
        lines.append(line.replace(str(path), path.name))
    if not lines:
        return describe_error(exc)
    useful = [line for line in lines if not line.endswith(("trouble", "trouble reading NRRD file"))]
    return (useful or lines)[-1][:300]


def _check_itk_payload(path: Path, fields: dict[str, str], reader, what: str) -> None:
    """Refuse an uncompressed NRRD / MetaImage that holds fewer bytes than it declares."""
    import SimpleITK as sitk

    encoding = fields.get("encoding", "raw").lower()
    compressed = fields.get("compresseddata", "false").lower() == "true"
    skips = ("byte skip", "byteskip", "line skip", "lineskip", "headersize")
    if encoding != "raw" or compressed or any(key in fields for key in skips):
        return  # compressed, or data that starts at an offset: SimpleITK's reader judges
    size = reader.GetSize()
    component = sitk.Image([1] * len(size), reader.GetPixelID()).GetSizeOfPixelComponent()
    nbytes = int(np.prod(size, dtype=np.int64)) * reader.GetNumberOfComponents() * component
    data = _detached_data_file(path, fields)
    if data is not None:
        found = data.stat().st_size
    elif fields.get("\0header_bytes"):
        found = path.stat().st_size - int(fields["\0header_bytes"])
    else:
        return
    if found < nbytes:
        raise InputError(
            data or path,
            f"{what} file is truncated or its header is wrong: the header declares "
            f"{'x'.join(str(s) for s in size)} voxels ({nbytes:,} bytes), the data holds "
            f"{found:,} bytes",
            f"copy or export the {what} again; the file was cut off or its header damaged",
        )


def _read_itk(path: Path, what: str, channels: bool) -> ImageFile:
    import SimpleITK as sitk

    fmt = _FORMAT[".nrrd" if suffix_of(path) == SEG_NRRD_SUFFIX else suffix_of(path)]
    fix = f"export the {what} again as {fmt} or as .nii.gz"
    try:
        fields = _text_header(path)
    except OSError as exc:
        raise InputError(path, f"cannot read {what} ({describe_error(exc)})", fix) from exc
    data = _detached_data_file(path, fields)
    if data is not None and not data.is_file():
        raise InputError(
            path,
            f"the {what}'s data file {data.name!r}, named in its header, is missing",
            f"put {data.name} beside {path.name} (the header and its data file travel "
            f"together), or export the {what} as one {'.nrrd' if fmt == 'NRRD' else '.mha'} "
            "file",
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            path, f"cannot read {what} as {fmt} ({_itk_reason(exc, path)})", fix
        ) from exc
    size = tuple(int(s) for s in reader.GetSize())
    n_channels = int(reader.GetNumberOfComponents())
    declared = size + ((n_channels,) if n_channels > 1 else ())
    check_size(declared, path, what)
    check_axes(declared, path, what, channels)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel:
        raise InputError(
            path,
            f"{what} voxels are complex numbers ({pixel})",
            f"save the {what} with one real value per voxel",
        )
    spacing = np.asarray(reader.GetSpacing(), dtype=float)
    for axis, size in enumerate(spacing):
        if not np.isfinite(size) or size <= 0:
            raise InputError(
                path,
                f"voxel size {size:g} mm along axis {axis} in the header; a voxel size must "
                "be a positive number",
                f"fix the voxel size in the {what}'s header (e.g. in 3D Slicer) or export it again",
            )
    dim = int(reader.GetDimension())
    lps = np.eye(4)
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    lps[:3, :3] = direction * spacing[:3]
    lps[:3, 3] = reader.GetOrigin()[:3]
    affine = check_geometry(_LPS_TO_RAS @ lps, path, what)
    _check_itk_payload(path, fields, reader, what)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            path, f"cannot read {what} as {fmt} ({_itk_reason(exc, path)})", fix
        ) from exc
    array = sitk.GetArrayFromImage(image)  # [(t,) z, y, x] (+ components last)
    axes = list(range(dim))[::-1] + ([dim] if array.ndim > dim else [])
    array = np.transpose(array, axes)
    meta = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    return ImageFile(path, _drop_trailing_ones(np.ascontiguousarray(array)), affine, meta)


def itk_image(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of voxels ``[i, j, k]`` (``[i, j, k, c]``: c components) on a RAS+
    affine: the inverse of what :func:`read_image` does with NRRD and MetaImage files.

    Example:
        >>> image = itk_image(np.zeros((4, 5, 6), np.int16), np.diag([-2.0, 2.0, 3.0, 1.0]))
        >>> image.GetSize(), image.GetSpacing(), image.GetDirection()[0]
        ((4, 5, 6), (2.0, 2.0, 3.0), 1.0)
    """
    import SimpleITK as sitk

    vector = array.ndim == 4
    image = sitk.GetImageFromArray(
        np.transpose(array, (2, 1, 0, 3) if vector else (2, 1, 0)), isVector=vector
    )
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=float)  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    image.SetDirection([float(d) for d in (lps[:3, :3] / spacing).ravel()])
    return image
