"""3D Slicer segmentations (``.seg.nrrd``) as label maps on their image's grid.

A ``.seg.nrrd`` is an NRRD volume whose header names the segments: ``Segment<N>_Name``,
``Segment<N>_LabelValue`` (the voxel value of the segment in its layer) and
``Segment<N>_Layer`` (which 3-D volume of a 4-D file holds it; segments that overlap are
put in separate layers). Files of Slicer before 4.11 lack the last two: each segment is
then its own layer, painted with 1. Segment names are mapped to classes like RTSTRUCT ROI
names (:mod:`medtl.io.roi_names`); segments that match no class are reported, not used.

Slicer may save a segmentation cropped to the segments' extent; it is placed back on the
image's grid when its voxels are the image's (same spacing and axes, whole-voxel offset).
"""

from __future__ import annotations

import re

import numpy as np

from medtl.io.image_file import ImageFile
from medtl.io.label_objects import LabelConversion
from medtl.io.roi_names import match_name
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError

_SEGMENT = re.compile(r"^Segment(\d+)_Name$")


def is_slicer_segmentation(image: ImageFile) -> bool:
    """Whether the file's header names Slicer segments."""
    return any(_SEGMENT.match(key) for key in image.fields)


def _segments(seg: ImageFile) -> list[tuple[str, int, int]]:
    """(name, label value, layer) of every segment, in segment order."""
    layered = seg.array.ndim == 4
    found = []
    for key, name in seg.fields.items():
        m = _SEGMENT.match(key)
        if not m:
            continue
        n = int(m[1])
        try:
            value = int(seg.fields.get(f"Segment{n}_LabelValue", "1"))
            layer = int(seg.fields.get(f"Segment{n}_Layer", str(n if layered else 0)))
        except ValueError as exc:
            raise InputError(
                seg.path,
                f"segment {n} ({name!r}) has a label value or layer that is not an integer ({exc})",
                "save the segmentation again from 3D Slicer",
            ) from exc
        found.append((n, name, value, layer))
    return [(name, value, layer) for _, name, value, layer in sorted(found)]


def _on_image_grid(seg: ImageFile, image: Volume) -> np.ndarray:
    """The segmentation's layers ``[i, j, k, layer]`` on the image's grid."""
    layers = seg.array if seg.array.ndim == 4 else seg.array[..., None]
    if layers.shape[:3] == image.shape and np.allclose(seg.affine, image.affine, atol=1e-2):
        return layers
    mismatch = InputError(
        seg.path,
        "segmentation geometry does not match its image: expected shape "
        f"{image.shape} and affine {np.round(image.affine, 3).tolist()}, found shape "
        f"{layers.shape[:3]} and affine {np.round(seg.affine, 3).tolist()}",
        "in 3D Slicer, set the segmentation's geometry to the image (Segment Editor: "
        "'Specify geometry' with the image as source) and save it again",
    )
    if not np.allclose(seg.affine[:3, :3], image.affine[:3, :3], atol=1e-3):
        raise mismatch
    offset = np.linalg.solve(image.affine, seg.affine[:, 3])[:3]
    if not np.allclose(offset, np.round(offset), atol=1e-2):
        raise mismatch
    start = np.round(offset).astype(int)
    placed = np.zeros((*image.shape, layers.shape[3]), dtype=layers.dtype)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + layers.shape[:3], image.shape)
    if np.any(hi <= lo):
        raise mismatch
    src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
    inside = layers[src]
    if int(np.count_nonzero(inside)) != int(np.count_nonzero(layers)):
        raise mismatch  # segments reach outside the image
    placed[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = inside
    return placed


def read_slicer_segmentation(
    seg: ImageFile, image: Volume, name_map: dict[str, int]
) -> LabelConversion:
    """Paint the segments whose names match a class onto the image's grid.

    Args:
        seg: the ``.seg.nrrd`` as :func:`medtl.io.images.read_image` read it (with
            ``channels=True``, so that its layers are kept).
        image: the image it was drawn on.
        name_map: from :func:`medtl.io.roi_names.build_name_map`.

    Raises:
        InputError: the segmentation is not on the image's grid, or two segments of
            different classes overlap (in different layers).
    """
    layers = _on_image_grid(seg, image)
    out = np.zeros(image.shape, dtype=np.uint8)
    owner = np.full(image.shape, -1, dtype=np.int16)
    used: dict[str, int] = {}
    unmatched: list[str] = []
    names: dict[int, str] = {}
    for name, value, layer in _segments(seg):
        cls = match_name(name, name_map)
        if cls is None:
            unmatched.append(name)
            continue
        if not 0 <= layer < layers.shape[3]:
            raise InputError(
                seg.path,
                f"segment {name!r} is in layer {layer}, the file holds {layers.shape[3]}",
                "save the segmentation again from 3D Slicer",
            )
        mask = layers[..., layer] == value
        clash = mask & (owner >= 0) & (out != cls)
        if clash.any():
            other = names[int(owner[tuple(np.argwhere(clash)[0])])]
            raise InputError(
                seg.path,
                f"segments {other!r} and {name!r} overlap in {int(clash.sum()):,} voxels and "
                "belong to different classes; a label map holds one class per voxel",
                "in 3D Slicer, remove the overlap (Segment Editor: Logical operators, "
                "subtract one segment from the other) and save again",
            )
        out[mask] = cls
        owner[mask] = len(names)
        names[len(names)] = name
        used[name] = cls
    return LabelConversion(out, used, unmatched)
