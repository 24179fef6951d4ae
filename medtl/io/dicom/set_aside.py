"""Frames left out of a series with a rejection: localizers, strays and duplicate copies.

Each filter in :data:`_SET_ASIDE_FILTERS` takes ``(where, label, frames)`` and returns the
frames kept and a :class:`~medtl.kernel.errors.Rejection` for each frame left out: images whose
ImageType says LOCALIZER, and images whose orientation or Rows x Columns differ from the
strict majority's. :func:`_set_aside_duplicates` then leaves out pixel-identical copies of
a slice (two different images at one position stop the series).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from medtl.io.dicom.frames import _Frame
from medtl.io.dicom.geometry import _POSITION_TOL
from medtl.io.dicom.headers import FIX_ONE_SERIES, FIX_SET_ASIDE, _fmt
from medtl.kernel.errors import InputError, Rejection

_ORIENTATION_TOL = 1e-3  # same orientation across slices


def _localizer_rejection(frame: _Frame, label: str, why: str) -> Rejection:
    return Rejection(
        str(frame.path),
        f"localizer/scout image mixed into {label}: {frame.name} {why}",
        FIX_SET_ASIDE,
    )


def _set_aside_localizers(
    where: Path, label: str, frames: list[_Frame]
) -> tuple[list[_Frame], list[Rejection]]:
    """Leave out images whose ImageType (FrameType) says LOCALIZER."""
    kept = [f for f in frames if not f.localizer]
    rejected = [
        _localizer_rejection(f, label, "has ImageType LOCALIZER") for f in frames if f.localizer
    ]
    return kept, rejected


def _majority(
    where: Path, frames: list[_Frame], same: Callable[[_Frame, _Frame], bool], what: str
) -> tuple[list[_Frame], list[_Frame]]:
    """Split frames into the strict majority group (by ``same``) and the rest.

    Raises InputError when no group holds more than half of the frames.
    """
    groups: list[list[_Frame]] = []
    for f in frames:
        for group in groups:
            if same(group[0], f):
                group.append(f)
                break
        else:
            groups.append([f])
    largest = max(groups, key=len) if groups else []
    if len(groups) <= 1:
        return frames, []
    if 2 * len(largest) <= len(frames):
        a, b = groups[0][0], groups[1][0]
        raise InputError(
            where,
            f"expected one {what} for all slices, found {_describe(a, what)} in {a.name} but "
            f"{_describe(b, what)} in {b.name}, with no majority ({len(groups)} groups of "
            f"{', '.join(str(len(g)) for g in groups)} slices)",
            FIX_ONE_SERIES,
        )
    kept = {id(f) for f in largest}
    return largest, [f for f in frames if id(f) not in kept]


def _describe(frame: _Frame, what: str) -> str:
    if what == "ImageOrientationPatient":
        return _fmt(frame.orientation)
    return f"{frame.rows} x {frame.columns}"


def _set_aside_minority(
    where: Path,
    label: str,
    frames: list[_Frame],
    same: Callable[[_Frame, _Frame], bool],
    what: str,
) -> tuple[list[_Frame], list[Rejection]]:
    """Leave out images whose ``what`` differs from the majority's (``same`` compares)."""
    kept, others = _majority(where, frames, same, what)
    if not others:
        return kept, []
    majority = _describe(kept[0], what)
    return kept, [
        _localizer_rejection(
            f,
            label,
            f"has {what} {_describe(f, what)}, not the series' {majority} "
            f"({len(kept)} of {len(frames)} slices)",
        )
        for f in others
    ]


def _same_orientation(a: _Frame, b: _Frame) -> bool:
    return bool(np.allclose(a.orientation, b.orientation, atol=_ORIENTATION_TOL))


def _same_grid(a: _Frame, b: _Frame) -> bool:
    return (a.rows, a.columns) == (b.rows, b.columns)


_SET_ASIDE_FILTERS: tuple[
    Callable[[Path, str, list[_Frame]], tuple[list[_Frame], list[Rejection]]], ...
] = (
    _set_aside_localizers,
    # Images whose orientation, then whose Rows x Columns, differ from the majority's.
    partial(_set_aside_minority, same=_same_orientation, what="ImageOrientationPatient"),
    partial(_set_aside_minority, same=_same_grid, what="Rows x Columns"),
)


def _set_aside_duplicates(
    where: Path, frames: list[_Frame], offsets: np.ndarray
) -> tuple[list[_Frame], np.ndarray, list[Rejection]]:
    """Leave out pixel-identical copies of a slice; two different images at one position raise.

    ``frames`` must be sorted by ``offsets``.
    """
    kept: list[int] = []
    rejected: list[Rejection] = []
    for index, frame in enumerate(frames):
        if kept and offsets[index] - offsets[kept[-1]] < _POSITION_TOL:
            original = frames[kept[-1]]
            if not np.array_equal(original.values(), frame.values()):
                raise InputError(
                    where,
                    "expected one slice per position, found two different images at "
                    f"{offsets[index]:.3f} mm along the slice normal: {original.path} and "
                    f"{frame.path}"
                    + (f" ({original.name}, {frame.name})" if frame.frame is not None else ""),
                    "remove the slice that does not belong; if the series holds several "
                    "acquisitions (echoes, time points, contrast phases), export them as "
                    "separate series",
                )
            rejected.append(
                Rejection(
                    str(frame.path),
                    f"duplicate of {original.name}: {frame.name} has the same position "
                    f"({offsets[index]:.3f} mm along the slice normal) and identical pixels",
                    FIX_SET_ASIDE,
                )
            )
            continue
        kept.append(index)
    return [frames[i] for i in kept], offsets[kept], rejected
