"""Checks of an image's grid and values, each raising an InputError that names the fix.

They run at ingest, before anything is converted, so that a problem is reported on the
file that has it (and the case is set aside) instead of surfacing stages later as a
``loss nan``, an ``index 255 is out of bounds`` or a lesion that vanished in a cast.

Example:
    >>> check_label_values(np.array([0, 1, 2]), Path("lab.nii.gz"), {1: "liver", 2: "tumour"})
    array([0, 1, 2], dtype=uint8)
    >>> check_label_values(np.array([0, 256]), Path("lab.nii.gz"), {1: "liver"})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medtl.kernel.errors.InputError: lab.nii.gz: label values 256 are not classes ...
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from medtl.kernel.errors import InputError

#: The most voxels (channels included) one file may declare: 2**30, i.e. 4 GiB once
#: converted to float32 (a 1024 x 1024 x 1024 volume). A header declaring more is refused
#: before anything is allocated: it is damaged, or the image is far larger than a
#: segmentation network can use.
MAX_VOXELS = 2**30
#: The largest label value a label map can hold (they are stored as uint8).
MAX_LABEL = 255


def _dims(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def check_size(shape: tuple[int, ...], path: Path, what: str) -> None:
    """Refuse an empty grid or one larger than :data:`MAX_VOXELS`, from the header alone."""
    if any(int(s) <= 0 for s in shape):
        raise InputError(
            path,
            f"the header declares an empty {what} (size {_dims(shape)})",
            f"export the {what} again; it holds no voxels",
        )
    n = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if n > MAX_VOXELS:
        raise InputError(
            path,
            f"the header declares {_dims(shape)} = {n:,} voxels, more than medtl reads from "
            f"one file ({MAX_VOXELS:,} voxels, 4 GiB as float32)",
            f"check the {what}: a damaged header can declare an absurd size; a real image "
            "this large must be cropped or downsampled first",
        )


def check_axes(shape: tuple[int, ...], path: Path, what: str, channels: bool = False) -> None:
    """One 3-D volume per file: at least 2 voxels along each axis, no fourth axis.

    Trailing axes of length 1 are ignored (a 3-D NIfTI saved as ``x, y, z, 1``). With
    ``channels``, a fourth axis holds channels (MSD images, Slicer segmentation layers).
    """
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise InputError(
            path,
            f"{len(shape)}-D {what} (shape {_dims(shape)}): medtl expects a 3-D volume",
            f"give a 3-D {what} (all slices of the scan in one file)",
        )
    if len(shape) == 4 and not channels:
        raise InputError(
            path,
            f"4-D {what} with {shape[3]} volumes (shape {_dims(shape)}): medtl expects one "
            "3-D volume per file (a time series and several channels in one file cannot be "
            "told apart)",
            "split it into one 3-D file per volume; for several channels (e.g. MR "
            "sequences) use an nnU-Net dataset with one file per channel "
            "(imagesTr/<case>_0000.nii.gz, _0001, ...) or an MSD folder whose dataset.json "
            "names the channels under 'modality'",
        )
    if len(shape) > 4:
        raise InputError(
            path,
            f"{len(shape)}-D {what} (shape {_dims(shape)}): medtl expects a 3-D volume",
            f"give one 3-D {what} per file",
        )
    for axis, size in enumerate(shape[:3]):
        if size < 2:
            raise InputError(
                path,
                f"{what} has {size} voxel along axis {axis} (shape {_dims(shape)}): a single "
                "slice is a 2-D image, not a 3-D scan",
                f"give the whole 3-D {what} (every slice of the series in one file)",
            )


def check_geometry(affine: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Refuse an affine with a zero, NaN or infinite voxel size, or a singular orientation.

    Returns:
        The affine, as a float64 array.
    """
    affine = np.asarray(affine, dtype=float)
    fix = (
        f"fix the voxel size and orientation in the {what}'s header (e.g. in 3D Slicer or "
        "with nibabel), or export it again"
    )
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(
            path, f"the {what}'s voxel-to-world matrix is not finite: {affine.tolist()}", fix
        )
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    for axis, size in enumerate(sizes):
        if size < 1e-6:
            raise InputError(
                path,
                f"voxel size {size:g} mm along axis {axis} in the header; a voxel size must "
                "be a positive number",
                fix,
            )
    # Orthonormal axes give |det| = 1 once normalised; collinear ones give 0.
    if abs(np.linalg.det(affine[:3, :3] / sizes)) < 1e-3:
        raise InputError(
            path,
            f"the {what}'s axes are collinear (a singular orientation matrix "
            f"{np.round(affine[:3, :3], 4).tolist()})",
            fix,
        )
    return affine


def check_finite(array: np.ndarray, path: Path, what: str) -> None:
    """Refuse NaN or infinite voxels: one of them makes a z-scored image all NaN."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = ~np.isfinite(array)
    n = int(bad.sum())
    if n:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kinds = [k for k, f in (("NaN", np.isnan), ("infinite", np.isinf)) if f(array).any()]
        raise InputError(
            path,
            f"{what} has {n:,} {'voxel that is' if n == 1 else 'voxels that are'} not finite "
            f"({' and '.join(kinds)}; the first at "
            f"voxel {list(first)} of {_dims(array.shape)})",
            f"repair the {what} (e.g. replace NaN with the background value) or export it "
            "again; one NaN voxel would make the normalised image all NaN",
        )


def check_not_constant(array: np.ndarray, path: Path, what: str) -> None:
    """Refuse an image whose every voxel has the same value: it holds no scan."""
    first = array.flat[0]
    if np.all(array == first):
        raise InputError(
            path,
            f"every voxel of the {what} has the value {first.item():g}: a blank image "
            "holds no scan",
            f"export the {what} again (a blank file is usually a failed export)",
        )


def check_label_values(array: np.ndarray, path: Path, classes: dict[int, str] | None) -> np.ndarray:
    """A label map as uint8, after checking every value before the cast.

    Values must be whole numbers, 0 (background) or a class; with ``classes`` None, any
    value from 0 to :data:`MAX_LABEL`.

    Raises:
        InputError: a value that is negative, not whole, not finite, or not a class (a
            value of 256 would become 0 in the cast, and a value the network has no
            output for fails in training).
    """
    fix_type = "save the label as an integer label map (0 = background, 1, 2, ... = classes)"
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(path, "label values are not finite (NaN or infinite)", fix_type)
        fractional = array[array != np.round(array)]
        if fractional.size:
            shown = ", ".join(f"{v:g}" for v in np.unique(fractional)[:5])
            raise InputError(path, f"label values must be whole numbers, found {shown}", fix_type)
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise InputError(path, f"label data type {array.dtype} is not a number", fix_type)
    values = [int(v) for v in np.unique(array)]
    negative = [v for v in values if v < 0]
    if negative:
        raise InputError(
            path,
            f"label values must be non-negative, found {', '.join(map(str, negative[:5]))}",
            fix_type,
        )
    if classes is None:
        allowed = set(range(MAX_LABEL + 1))
        said = f"0 to {MAX_LABEL}"
    else:
        allowed = {0, *classes}
        named = ", ".join(f"{k} ({v})" for k, v in sorted(classes.items()) if k != 0)
        said = "0 (background)" + (f", {named}" if named else "")
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise InputError(
            path,
            f"label values {', '.join(map(str, wrong[:10]))} are not classes (found "
            f"{', '.join(map(str, values[:20]))}; allowed: {said})",
            "name every label value under `classes` in the config (--classes), or relabel "
            "those voxels",
        )
    return array.astype(np.uint8)


def content_key(array: np.ndarray) -> str:
    """A hash of an image's voxels (values, type and shape) to find the same scan twice.

    Example:
        >>> a = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> content_key(a) == content_key(a.copy()), content_key(a) == content_key(a + 1)
        (True, False)
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
