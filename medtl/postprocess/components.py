"""Connected-component operations on binary masks and label maps.

Components are 26-connected in 3-D (every voxel touching a face, edge or corner is a
neighbour; in general, full connectivity in the mask's dimensions), as nnU-Net does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

#: What a decision may choose for a class: nothing, or one of the candidates.
NO_POSTPROCESSING = "none"


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(component ids, voxel count per id)``; id 0 is the background (count set to 0)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labelled, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labelled, sizes


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask.

    Args:
        mask: binary mask (any dimension; truthy = foreground).

    Returns:
        A new bool array of the same shape. An empty mask stays empty; of components of
        equal size the first in C (row-major) scan order is kept.

    Example:
        >>> m = np.zeros((1, 1, 7), bool); m[0, 0, [0, 1, 2, 5]] = True
        >>> keep_largest(m)[0, 0].astype(int).tolist()
        [1, 1, 1, 0, 0, 0, 0]
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    labelled, sizes = _components(mask)
    return labelled == int(np.argmax(sizes))


def remove_small(mask: np.ndarray, spacing: Sequence[float], min_volume_mm3: float) -> np.ndarray:
    """Drop the connected components whose volume is below ``min_volume_mm3``.

    Args:
        mask: binary 3-D mask.
        spacing: voxel size in mm along the mask's axes (may be anisotropic).
        min_volume_mm3: the smallest component kept, in mm³ (a component of exactly this
            volume is kept).

    Returns:
        A new bool array of the same shape.

    Example:
        >>> m = np.zeros((1, 1, 7), bool); m[0, 0, [0, 1, 2, 5]] = True
        >>> remove_small(m, (1.0, 1.0, 2.0), 4.0)[0, 0].astype(int).tolist()
        [1, 1, 1, 0, 0, 0, 0]
    """
    mask = np.asarray(mask, dtype=bool)
    if len(spacing) != mask.ndim:
        raise ValueError(
            f"spacing has {len(spacing)} values; expected one per mask axis ({mask.ndim})"
        )
    if not mask.any():
        return np.zeros_like(mask)
    labelled, sizes = _components(mask)
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    keep = sizes * voxel_mm3 >= float(min_volume_mm3)
    keep[0] = False
    return keep[labelled]


def apply_operation(
    mask: np.ndarray, operation: str, spacing: Sequence[float], min_volume_mm3: float
) -> np.ndarray:
    """Apply one named operation (``none``, ``largest``, ``min_volume``) to a binary mask."""
    if operation == NO_POSTPROCESSING:
        return np.asarray(mask, dtype=bool).copy()
    if operation == "largest":
        return keep_largest(mask)
    if operation == "min_volume":
        return remove_small(mask, spacing, min_volume_mm3)
    raise ValueError(
        f"unknown post-processing {operation!r}; expected one of none, largest, min_volume"
    )


def apply_postprocessing(
    labels: np.ndarray, decision: Mapping, spacing: Sequence[float]
) -> np.ndarray:
    """Apply a post-processing decision to a label map, class by class.

    Args:
        labels: integer label map (0 = background).
        decision: as written by :func:`medtl.postprocess.choose.choose_postprocessing`:
            ``{"classes": {name: {"value": int, "chosen": str, "min_volume_mm3": float}}}``.
        spacing: voxel size in mm along the array axes.

    Returns:
        A new label map of the same shape and dtype; voxels a class's operation removes
        become background. ``labels`` is not modified.

    Example:
        >>> lab = np.zeros((1, 1, 8), np.uint8); lab[0, 0, [0, 1, 3, 5, 6, 7]] = [1, 1, 1, 2, 2, 2]
        >>> d = {"classes": {"a": {"value": 1, "chosen": "largest"},
        ...                  "b": {"value": 2, "chosen": "none"}}}
        >>> apply_postprocessing(lab, d, (1.0, 1.0, 1.0))[0, 0].tolist()
        [1, 1, 0, 0, 0, 2, 2, 2]
    """
    labels = np.asarray(labels)
    out = labels.copy()
    for entry in decision.get("classes", {}).values():
        chosen = entry.get("chosen", NO_POSTPROCESSING)
        if chosen == NO_POSTPROCESSING:
            continue
        mask = labels == int(entry["value"])
        min_volume = float(entry["min_volume_mm3"]) if chosen == "min_volume" else 0.0
        kept = apply_operation(mask, chosen, spacing, min_volume)
        out[mask & ~kept] = 0
    return out
