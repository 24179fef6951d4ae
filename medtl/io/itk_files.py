"""Read NRRD (``.nrrd``, ``.nhdr``, 3D Slicer's ``.seg.nrrd``) and MetaImage (``.mha``,
``.mhd``) files with SimpleITK, and write back: SimpleITK's LPS+ geometry and ``[z, y, x]``
arrays are converted to and from medtl's RAS+ affine and ``[i, j, k]`` voxels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medtl.io.checks import check_axes, check_geometry, check_size
from medtl.io.image_file import (
    SEG_NRRD_SUFFIX,
    ImageFile,
    check_voxel_sizes,
    describe_error,
    drop_trailing_ones,
    suffix_of,
)
from medtl.kernel.errors import InputError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_FORMAT = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}


def text_header(path: Path) -> dict[str, str]:
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


def detached_data_file(path: Path, fields: dict[str, str]) -> Path | None:
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
    data = detached_data_file(path, fields)
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


def read_itk(path: Path, what: str, channels: bool) -> ImageFile:
    import SimpleITK as sitk

    fmt = _FORMAT[".nrrd" if suffix_of(path) == SEG_NRRD_SUFFIX else suffix_of(path)]
    fix = f"export the {what} again as {fmt} or as .nii.gz"
    try:
        fields = text_header(path)
    except OSError as exc:
        raise InputError(path, f"cannot read {what} ({describe_error(exc)})", fix) from exc
    data = detached_data_file(path, fields)
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
    check_voxel_sizes(spacing, path, what, field="", tools="in 3D Slicer")
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
    return ImageFile(path, drop_trailing_ones(np.ascontiguousarray(array)), affine, meta)


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


__all__ = ["detached_data_file", "itk_image", "read_itk", "text_header"]
