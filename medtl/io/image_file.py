"""What every image reader shares: the file names medtl reads, :class:`ImageFile` (the
voxels and RAS+ affine of one file), and the messages of a file that cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtl.io.volume import spacing_of
from medtl.kernel.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_PAIR_SUFFIXES = (".hdr",)  # the .img beside it holds the voxels
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + NIFTI_PAIR_SUFFIXES + ITK_SUFFIXES
SEG_NRRD_SUFFIX = ".seg.nrrd"


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


def check_voxel_sizes(sizes: np.ndarray, path: Path, what: str, *, field: str, tools: str) -> None:
    """Refuse a header voxel size that is not a positive number.

    Args:
        sizes: the voxel sizes the header declares, one per axis.
        path: the file, for the message.
        what: what the file is, for the message.
        field: the header field the sizes come from (``"pixdim"``: named with its index in
            the message), or ``""``.
        tools: the tools to fix the header with, for the message.
    """
    for axis, size in enumerate(sizes):
        if not np.isfinite(size) or size <= 0:
            named = f" ({field}[{axis + 1}])" if field else ""
            raise InputError(
                path,
                f"voxel size {size:g} mm along axis {axis} in the header{named}; a voxel size "
                "must be a positive number",
                f"fix the voxel size in the {what}'s header (e.g. {tools}) or export it again",
            )


def cannot_read(path: Path, what: str, fmt: str, detail: str) -> InputError:
    """The error for an image file the reader for ``fmt`` fails on."""
    return InputError(
        path,
        f"cannot read {what} as {fmt} ({detail})",
        f"export the {what} again as .nii.gz (or check that the file was copied completely)",
    )


def drop_trailing_ones(array: np.ndarray) -> np.ndarray:
    """The array without trailing axes of length 1 beyond the third."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


__all__ = [
    "IMAGE_SUFFIXES",
    "ITK_SUFFIXES",
    "NIFTI_PAIR_SUFFIXES",
    "NIFTI_SUFFIXES",
    "SEG_NRRD_SUFFIX",
    "ImageFile",
    "cannot_read",
    "check_voxel_sizes",
    "describe_error",
    "drop_trailing_ones",
    "image_stem",
    "is_image_file",
    "suffix_of",
]
