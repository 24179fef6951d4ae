"""Surface distances of two binary masks in mm, and the normalised surface Dice (MONAI).

Surfaces and distances (MONAI's implementation, ``monai.metrics``, ``use_subvoxels``
off). The surface ``∂X`` of a mask is its set of *boundary voxels*: the voxels of ``X``
that one binary erosion with the 6-connected cross (``scipy.ndimage.binary_erosion``'s
default element) removes, i.e. foreground voxels with at least one face neighbour in
the background; voxels on the edge of the array count as boundary (outside the array is
background). ``d(x, ∂Y)`` is the Euclidean distance in mm between the centre of voxel
``x`` and the nearest voxel centre of ``∂Y``, with the spacing ``s``. Each boundary voxel
counts once, whatever the area of its exposed faces.

* ``hd95`` (mm) = ``max(q95{d(p, ∂R) : p ∈ ∂P}, q95{d(r, ∂P) : r ∈ ∂R})``, with ``q95``
  the 95th percentile with linear interpolation (``compute_hausdorff_distance``);
* ``assd`` (mm) = ``(Σ_{p∈∂P} d(p, ∂R) + Σ_{r∈∂R} d(r, ∂P)) / (|∂P| + |∂R|)``, the mean of
  both directed distance sets pooled (``compute_average_surface_distance``,
  ``symmetric=True``);
* ``nsd``, the normalised surface Dice at tolerance ``τ`` mm =
  ``(|{p ∈ ∂P : d(p, ∂R) ≤ τ}| + |{r ∈ ∂R : d(r, ∂P) ≤ τ}|) / (|∂P| + |∂R|)``
  (``compute_surface_dice``; the comparison is inclusive, ``≤ τ``, and the boundary is
  measured in boundary voxels, not in surface area as DeepMind's ``surface-distance``
  does). ``τ`` is ``EvaluateConfig.tolerance(class name)``, written to the column
  ``nsd_tolerance_mm``.

The other metrics (overlap, volumes, lesions) are in :mod:`medtl.evaluate.arrays`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a surface is computed: it takes seconds to load
    import torch


def _quiet_monai() -> None:
    """Ignore the FutureWarning MONAI raises about its own internal call.

    MONAI's surface-distance functions pass the deprecated ``always_return_as_numpy``
    argument to ``get_mask_edges`` themselves (monai 1.5-1.6); the warning is about
    MONAI's code, not ours. The filter is (re)installed before each call because test
    runners reset the filters between tests; ``filterwarnings`` replaces an identical
    filter instead of stacking it, and it is not ``catch_warnings``, which is not safe
    across the evaluation threads.
    """
    warnings.filterwarnings(
        "ignore", message=".*always_return_as_numpy.*", category=FutureWarning, module="monai"
    )


_quiet_monai()


def crop_to_union(p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one voxel, where it fits.

    MONAI crops the same way inside its surface functions (``get_mask_edges``); doing it
    first keeps the float tensors it builds small. Boundary voxels and distances do not
    change: every foreground voxel keeps its six face neighbours, or lies on the array's
    edge in both the full and the cropped array.
    """
    union = p | r
    if not union.any():
        return p, r
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2))
    return p[tuple(box)], r[tuple(box)]


def _surface_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(pred, ref)`` as ``[1, 1, ...]`` float tensors for MONAI; None if either is empty."""
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if not p.any() or not r.any():
        return None
    p, r = crop_to_union(p, r)
    import torch

    return (
        torch.from_numpy(p[None, None].astype(np.float32)),
        torch.from_numpy(r[None, None].astype(np.float32)),
    )


def _scalar(value: torch.Tensor) -> float:
    out = float(value.reshape(-1)[0])
    return out if math.isfinite(out) else math.nan


def spacing_list(spacing, ndim: int) -> list[float]:
    values = [float(s) for s in spacing]
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"voxel spacing: expected {ndim} finite sizes > 0 mm, found {tuple(spacing)}. "
            "How to fix: pass the voxel size of the reference label along each array axis."
        )
    return values


def _monai_distance(name: str, pred: np.ndarray, ref: np.ndarray, spacing, **options) -> float:
    """``monai.metrics.<name>`` of two masks with the spacing; NaN when either is empty."""
    pair = _surface_pair(pred, ref)
    if pair is None:
        return math.nan
    _quiet_monai()
    import monai.metrics  # imported here: monai takes seconds to load

    value = getattr(monai.metrics, name)(
        *pair,
        include_background=True,
        spacing=spacing_list(spacing, pair[0].ndim - 2),
        **options,
    )
    return _scalar(value)


def hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two binary masks, in mm.

    Uses MONAI's surface-distance implementation (boundary voxels, exact Euclidean
    distance with the given spacing); the result is the larger of the two directed 95th
    percentiles, as in ``monai.metrics.compute_hausdorff_distance``.

    Args:
        pred: predicted 3-D mask.
        ref: reference 3-D mask of the same shape.
        spacing: voxel size in mm along the three array axes.

    Returns:
        The distance in mm, or NaN when either mask is empty.

    Example:
        >>> a = np.zeros((6, 6, 6), bool); a[1:4, 1:4, 1:4] = True
        >>> hd95_mm(np.roll(a, 1, axis=2), a, (1.0, 1.0, 2.5))
        2.5
    """
    return _monai_distance("compute_hausdorff_distance", pred, ref, spacing, percentile=95)


def assd_mm(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Average symmetric surface distance of two binary masks, in mm.

    ``monai.metrics.compute_average_surface_distance`` with ``symmetric=True``: the mean
    of the distances from every boundary voxel of each mask to the nearest boundary voxel
    of the other, both directions pooled. Arguments and result as :func:`hd95_mm`.

    Example:
        >>> a = np.zeros((4, 6, 6), bool); a[0] = True
        >>> b = np.zeros((4, 6, 6), bool); b[3] = True
        >>> assd_mm(a, b, (2.0, 1.0, 1.0))  # two plates 3 voxels of 2 mm apart
        6.0
    """
    return _monai_distance("compute_average_surface_distance", pred, ref, spacing, symmetric=True)


def nsd_score(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> float:
    """Normalised surface Dice of two binary masks at a tolerance in mm.

    ``monai.metrics.compute_surface_dice`` with ``class_thresholds=[tolerance_mm]`` and
    the spacing: the share of boundary voxels of both masks that lie within
    ``tolerance_mm`` (inclusive) of the other mask's boundary.

    Args:
        pred: predicted 3-D mask.
        ref: reference 3-D mask of the same shape.
        spacing: voxel size in mm along the three array axes.
        tolerance_mm: the tolerance τ in mm (finite, ≥ 0).

    Returns:
        The NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Example:
        >>> a = np.zeros((4, 6, 6), bool); a[0] = True
        >>> b = np.zeros((4, 6, 6), bool); b[3] = True
        >>> nsd_score(a, b, (2.0, 1.0, 1.0), 5.0), nsd_score(a, b, (2.0, 1.0, 1.0), 6.0)
        (0.0, 1.0)
    """
    p_any = bool(np.asarray(pred, dtype=bool).any())
    r_any = bool(np.asarray(ref, dtype=bool).any())
    if not p_any and not r_any:
        return 1.0
    pair = _surface_pair(pred, ref)
    if pair is None:
        return 0.0
    _quiet_monai()
    from monai.metrics import compute_surface_dice  # imported here: monai takes seconds to load

    value = compute_surface_dice(
        *pair,
        class_thresholds=[float(tolerance_mm)],
        include_background=True,
        spacing=spacing_list(spacing, pair[0].ndim - 2),
    )
    return _scalar(value)
