"""Stacking the slices of a series into one array: float32, or integers kept exact."""

from __future__ import annotations

import numpy as np

from medtl.io.dicom.frames import _Frame


def _stack_pixels(frames: list[_Frame]) -> np.ndarray:
    """The rescaled pixels as float32 ``[column, row, slice]``."""
    first = frames[0]
    array = np.empty((first.columns, first.rows, len(frames)), dtype=np.float32)
    for k, f in enumerate(frames):
        array[:, :, k] = f.values().T
    return array


_INTEGER_TYPES = (np.uint8, np.int16, np.uint16, np.int32)


def _stack_integers(frames: list[_Frame]) -> np.ndarray | None:
    """The rescaled pixels in the smallest integer type that holds them exactly, else None.

    ``None`` when a slice has a non-integer RescaleSlope or RescaleIntercept, non-integer
    stored values, or values outside int32. The array is ``[column, row, slice]`` in
    Fortran order, so each slice is one contiguous block (as NIfTI stores it).
    """
    if not all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames):
        return None
    stored = [f.stored() for f in frames]
    if not all(np.issubdtype(s.dtype, np.integer) and s.size for s in stored):
        return None
    low, high = np.inf, -np.inf
    for f, s in zip(frames, stored, strict=True):
        ends = [int(v) * int(f.slope) + int(f.intercept) for v in (s.min(), s.max())]
        low, high = min(low, *ends), max(high, *ends)
    dtype = next(
        (t for t in _INTEGER_TYPES if np.iinfo(t).min <= low and high <= np.iinfo(t).max), None
    )
    if dtype is None:
        return None
    first = frames[0]
    array = np.empty((first.columns, first.rows, len(frames)), dtype=dtype, order="F")
    # int32 arithmetic unless a value or an intercept comes near its limits.
    extremes = [abs(low), abs(high), *(abs(int(f.intercept)) for f in frames)]
    wide = np.int32 if max(extremes) < 2**30 else np.int64
    for k, (f, s) in enumerate(zip(frames, stored, strict=True)):
        if f.slope == 1 and f.intercept == 0:
            array[:, :, k] = s.T
        elif f.slope == 1:
            array[:, :, k] = np.add(s, int(f.intercept), dtype=wide).T
        else:
            array[:, :, k] = (s.astype(wide) * int(f.slope) + int(f.intercept)).T
    return array
