"""Where the slices lie: ordering along the normal, the position checks, the affine.

Slices are ordered by ImagePositionPatient projected on the slice normal, never by
InstanceNumber. The checks (:data:`_POSITION_CHECKS`, one row each: test, reason, fix)
require one regular, untilted stack on one line. The affine is RAS+: the LPS columns
``X * PixelSpacing[1]``, ``Y * PixelSpacing[0]`` and ``(X x Y) * slice spacing`` with the
first two rows negated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from medtl.io.dicom.frames import _Frame
from medtl.io.dicom.headers import FIX_EXPORT_AGAIN, FIX_ONE_SERIES
from medtl.io.errors import InputError

_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


_POSITION_TOL = 1e-3  # mm; two slices closer than this along the normal share a position
_GAP_FACTOR = 1.5  # a step this many times the median spacing means missing slices
_SPACING_SPREAD = 0.01  # relative spread of slice steps tolerated
# Absolute spread always tolerated (mm): positions written with two decimals make steps
# differ by up to 0.02 mm, harmless but over 1 % of a 0.625 mm spacing.
_SPACING_ABS_TOL = 0.02
_MAX_TILT_DEGREES = 0.1
_LINE_TOL = 0.1  # in-plane drift of slice positions tolerated, fraction of a pixel


def _sort_by_position(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray]:
    """Frames sorted by position along the slice normal, and those positions (mm)."""
    normal = frames[0].normal
    offsets = np.array([f.position @ normal for f in frames])
    order = np.argsort(offsets, kind="stable")
    return [frames[i] for i in order], offsets[order]


def _check_no_gaps(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    steps = np.diff(offsets)
    # The median of the regular steps: a few large gaps in a short series must not
    # inflate the spacing they are measured against.
    median = float(np.median(steps[steps <= _GAP_FACTOR * steps.min()]))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median)
    if gaps.size:
        i = int(gaps[0])
        missing = max(int(round(steps[i] / median)) - 1, 1)
        raise InputError(
            where,
            f"missing slices between z={offsets[i]:.2f} and z={offsets[i + 1]:.2f} mm "
            f"(along the slice normal, {frames[i].name} and {frames[i + 1].name}); expected "
            f"spacing {median:.3g} mm, found a step of {steps[i]:.3g} mm (about {missing} "
            f"slice{'s' if missing > 1 else ''} missing, {gaps.size} gap(s) in all)",
            FIX_EXPORT_AGAIN,
        )


def _check_uniform_spacing(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    steps = np.diff(offsets)
    median = float(np.median(steps))
    spread = float(steps.max() - steps.min())
    if spread > max(_SPACING_SPREAD * median, _SPACING_ABS_TOL):
        raise InputError(
            where,
            f"expected uniform slice spacing (steps within {_SPACING_SPREAD:.0%} of each "
            f"other), found steps from {steps.min():.4g} to {steps.max():.4g} mm "
            f"(median {median:.4g} mm)",
            "ask for a reconstruction with constant slice spacing, or convert the series with "
            "`dcm2niix` (it resamples variable spacing to an equidistant '_Eq' image) and "
            "ingest that NIfTI",
        )


def _check_no_tilt(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    displacement = frames[-1].position - frames[0].position
    along = abs(float(displacement @ frames[0].normal))
    angle = float(np.degrees(np.arctan2(_in_plane(displacement, frames[0]), along)))
    if angle > _MAX_TILT_DEGREES:
        tilt = frames[0].ds.get("GantryDetectorTilt")
        header = f"; GantryDetectorTilt says {tilt}" if tilt not in (None, "") else ""
        raise InputError(
            where,
            f"expected slices stacked along the slice normal, found them offset in-plane: a "
            f"gantry tilt of {angle:.2f} degrees (more than {_MAX_TILT_DEGREES}){header}",
            "convert the series with `dcm2niix`, which corrects gantry tilt (it writes a "
            "'_Tilt_1' image), and ingest that NIfTI; or ask for a reconstruction without tilt",
        )


def _in_plane(vector: np.ndarray, frame: _Frame) -> float:
    """Length of the part of ``vector`` in the slice plane (mm)."""
    return float(np.linalg.norm(vector - (vector @ frame.normal) * frame.normal))


def _check_on_one_line(where: Path, frames: list[_Frame], offsets: np.ndarray) -> None:
    """Every slice lies on the line from the first to the last slice (no in-plane jumps)."""
    first, last = frames[0].position, frames[-1].position
    fractions = (offsets - offsets[0]) / (offsets[-1] - offsets[0])
    drift = [
        _in_plane(f.position - (first + t * (last - first)), frames[0])
        for f, t in zip(frames, fractions, strict=True)
    ]
    worst = int(np.argmax(drift))
    tolerance = _LINE_TOL * float(frames[0].pixel_spacing.min())
    if drift[worst] > tolerance:
        raise InputError(
            where,
            f"expected all slices on one line along the slice normal, found "
            f"{frames[worst].name} shifted in-plane by {drift[worst]:.3g} mm (more than "
            f"{tolerance:.3g} mm)",
            FIX_ONE_SERIES,
        )


_POSITION_CHECKS: tuple[Callable[[Path, list[_Frame], np.ndarray], None], ...] = (
    _check_no_gaps,
    _check_uniform_spacing,
    _check_no_tilt,
    _check_on_one_line,
)


def _ras_affine(first: _Frame, slice_spacing: float) -> np.ndarray:
    """RAS+ affine of the grid whose first slice is ``first``."""
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    lps[:3, 2] = first.normal * slice_spacing
    lps[:3, 3] = first.position
    return _RAS_FROM_LPS @ lps
