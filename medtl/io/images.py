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
    >>> import numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "ct.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([2, 2, 3, 1])), path)
    >>> image = read_image(path)
    >>> image.array.shape, image.spacing
    ((4, 5, 6), (2.0, 2.0, 3.0))
"""

from __future__ import annotations

from pathlib import Path

from medtl.io.image_file import ITK_SUFFIXES, SEG_NRRD_SUFFIX, ImageFile, suffix_of
from medtl.io.itk_files import detached_data_file, read_itk, text_header
from medtl.io.nifti_files import read_nifti, read_nifti_pair
from medtl.kernel.errors import InputError


def companion_files(path: Path) -> list[Path]:
    """The files that hold an image header's voxels, when they are not in the header file.

    A NIfTI ``.hdr`` has its ``.img``; an ``.nhdr`` or ``.mhd`` names its data file. Used
    to protect every input file, not only the one named.
    """
    suffix = suffix_of(path)
    if suffix == ".hdr":
        return [path.with_suffix(".img")]
    if suffix in (".nhdr", ".mhd"):
        data = detached_data_file(path, text_header(path))
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
        return read_itk(path, what, channels)
    if suffix == ".hdr":
        return read_nifti_pair(path, what, channels)
    return read_nifti(path, what, channels)


__all__ = ["companion_files", "read_image"]
