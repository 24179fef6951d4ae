"""Where the slices lie: ordering along the normal, the position checks, the affine.

Slices are ordered by ImagePositionPatient projected on the slice normal, never by
InstanceNumber. The checks (:data:`_POSITION_CHECKS`, one row each: test, reason, fix)
require one untilted stack on one line without missing slices. Every tolerance allows
for the header's own precision: a position written with one decimal (GE) is known to
+-0.05 mm per coordinate (:attr:`_Stack.rounding`). :func:`_slice_axis` then takes the
spacing from a least-squares fit through all slices, or, when the steps vary beyond what
the rounding explains, an equidistant grid that :func:`_resample_slices` interpolates
onto. The affine is RAS+: the LPS columns ``X * PixelSpacing[1]``, ``Y * PixelSpacing[0]``
and ``(X x Y) * slice spacing`` with the first two rows negated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.io.dicom.frames import _Frame
from medtl.io.dicom.headers import FIX_EXPORT_AGAIN, FIX_ONE_SERIES
from medtl.kernel.errors import InputError

_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_POSITION_TOL = 1e-3  # mm; two slices closer than this along the normal share a position
_GAP_FACTOR = 1.5  # a step this many times the median spacing means missing slices
_SPACING_SPREAD = 0.01  # relative spread of slice steps tolerated
# Absolute spread always tolerated (mm): positions written with two decimals make steps
# differ by up to 0.02 mm, harmless but over 1 % of a 0.625 mm spacing.
_SPACING_ABS_TOL = 0.02
_MAX_TILT_DEGREES = 0.1
_LINE_TOL = 0.1  # in-plane drift of slice positions tolerated, fraction of a pixel
# A writer that computed positions in float32 got them within this relative error before it
# printed them (half a unit in the last place of a 24-bit significand).
_FLOAT32_ERROR = 2.0**-24
# Our own float64 arithmetic on positions (projections, differences, the fit), relative to
# the largest coordinate: a generous multiple of the unit roundoff 2**-53.
_FLOAT64_ERROR = 64 * 2.0**-53


@dataclass(frozen=True)
class _Stack:
    """The slices of a series sorted along the normal, with their offsets on it.

    Attributes:
        frames: the slices, by increasing offset.
        offsets: ImagePositionPatient projected on the slice normal, mm.
    """

    frames: list[_Frame]
    offsets: np.ndarray

    @functools.cached_property
    def normal(self) -> np.ndarray:
        return self.frames[0].normal

    @functools.cached_property
    def rounding(self) -> float:
        """How far each ImagePositionPatient coordinate may be from the true position, mm.

        A value written with ``d`` decimals was rounded to ``10**-d``, an error of at most
        half of that (GE writes 0.1 mm: 0.05 mm); a writer working in float32 adds its
        representation error. Our own float64 arithmetic is added on top.
        """
        quantum = max(f.position_quantum for f in self.frames)
        largest = max(float(np.abs(f.position).max()) for f in self.frames)
        return 0.5 * quantum + largest * (_FLOAT32_ERROR + _FLOAT64_ERROR)

    @functools.cached_property
    def offset_error(self) -> float:
        """Bound on each offset's error from the rounding: rounding x (|nx| + |ny| + |nz|)."""
        return self.rounding * float(np.abs(self.normal).sum())

    @functools.cached_property
    def in_plane_error(self) -> float:
        """Bound on the in-plane part of a difference of two positions: 2 x |error vector|."""
        return 2.0 * self.rounding * float(np.sqrt(3.0))


def _sort_by_position(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray]:
    """Frames sorted by position along the slice normal, and those positions (mm)."""
    normal = frames[0].normal
    offsets = np.array([f.position @ normal for f in frames])
    order = np.argsort(offsets, kind="stable")
    return [frames[i] for i in order], offsets[order]


def _check_no_gaps(where: Path, stack: _Stack) -> None:
    frames, offsets = stack.frames, stack.offsets
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


def _check_no_tilt(where: Path, stack: _Stack) -> None:
    """The stack runs along the normal: in-plane drift first to last is rounding at most."""
    frames = stack.frames
    displacement = frames[-1].position - frames[0].position
    along = abs(float(displacement @ stack.normal))
    in_plane = _in_plane(displacement, frames[0])
    allowed = along * np.tan(np.radians(_MAX_TILT_DEGREES)) + stack.in_plane_error
    if in_plane > allowed:
        angle = float(np.degrees(np.arctan2(in_plane, along)))
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


def _check_on_one_line(where: Path, stack: _Stack) -> None:
    """Every slice lies on the line from the first to the last slice (no in-plane jumps)."""
    frames, offsets = stack.frames, stack.offsets
    first, last = frames[0].position, frames[-1].position
    fractions = (offsets - offsets[0]) / (offsets[-1] - offsets[0])
    drift = [
        _in_plane(f.position - (first + t * (last - first)), frames[0])
        for f, t in zip(frames, fractions, strict=True)
    ]
    worst = int(np.argmax(drift))
    # A slice's own rounding plus that of the line's two ends: at most twice one position's.
    tolerance = _LINE_TOL * float(frames[0].pixel_spacing.min()) + stack.in_plane_error
    if drift[worst] > tolerance:
        raise InputError(
            where,
            f"expected all slices on one line along the slice normal, found "
            f"{frames[worst].name} shifted in-plane by {drift[worst]:.3g} mm (more than "
            f"{tolerance:.3g} mm)",
            FIX_ONE_SERIES,
        )


_POSITION_CHECKS: tuple[Callable[[Path, _Stack], None], ...] = (
    _check_no_gaps,
    _check_no_tilt,
    _check_on_one_line,
)


@dataclass(frozen=True)
class _SliceAxis:
    """Where the volume's slices lie along the normal.

    Attributes:
        spacing: the distance between two slices of the volume, mm.
        targets: offsets of the volume's slices when the acquired ones are resampled onto
            an equidistant grid, else ``None`` (the acquired slices are the volume's).
        note: what was done, in words, for the manifest; ``""`` when nothing was.
    """

    spacing: float
    targets: np.ndarray | None = None
    note: str = ""


def _slice_axis(stack: _Stack) -> _SliceAxis:
    """The volume's slice spacing, and an equidistant grid when the steps vary.

    The steps are regular when they spread by at most 1 % (or 0.02 mm), or when each lies
    within what the rounding of ImagePositionPatient explains around the least-squares
    line through the offsets (GE writes positions to 0.1 mm, so steps of an oblique 7 mm
    series alternate between about 6.96 and 7.07 mm). Then the spacing is the fitted
    slope. Otherwise (no gap: :func:`_check_no_gaps` ran first) the slices are resampled.
    """
    offsets = stack.offsets
    steps = np.diff(offsets)
    median = float(np.median(steps))
    index = np.arange(offsets.size, dtype=float)
    centred = index - index.mean()
    fitted = float(centred @ offsets / (centred @ centred))
    # Each offset is off by at most E (its rounding): a step by 2E, and the fitted slope by
    # E * sum|u| / sum(u^2) (u the centred slice index).
    slope_error = stack.offset_error * float(np.abs(centred).sum() / (centred @ centred))
    explained = 2.0 * stack.offset_error + slope_error
    spread = float(steps.max() - steps.min())
    if spread <= max(_SPACING_SPREAD * median, _SPACING_ABS_TOL) or (
        float(np.abs(steps - fitted).max()) <= explained
    ):
        return _SliceAxis(fitted)
    # Variable spacing (e.g. 5 mm steps, then 7 mm): resample as dcm2niix does for its
    # '_Eq' image, by linear interpolation along the normal, at the smallest step shrunk
    # just enough to divide the whole extent: the finest acquired detail is kept, and the
    # first and last slices stay where they were (no extrapolation beyond the acquisition).
    extent = float(offsets[-1] - offsets[0])
    count = int(np.ceil(extent / float(steps.min()) - 1e-6))
    spacing = extent / count
    targets = offsets[0] + spacing * np.arange(count + 1)
    note = (
        f"variable slice spacing ({steps.min():.4g} to {steps.max():.4g} mm between "
        f"{offsets.size} slices) resampled to {count + 1} equidistant slices {spacing:.4g} mm "
        "apart by linear interpolation along the slice normal"
    )
    return _SliceAxis(spacing, targets, note)


def _resample_slices(array: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``array`` (slices along its last axis at ``offsets``) linearly interpolated at ``targets``.

    ``offsets`` increase strictly; ``targets`` lie within their range. Returns float32.
    """
    upper = np.clip(np.searchsorted(offsets, targets, side="right"), 1, offsets.size - 1)
    lower = upper - 1
    weight = np.clip((targets - offsets[lower]) / (offsets[upper] - offsets[lower]), 0.0, 1.0)
    out = np.empty((*array.shape[:-1], targets.size), dtype=np.float32)
    for m, (a, b, w) in enumerate(zip(lower, upper, weight, strict=True)):
        out[..., m] = (1.0 - w) * array[..., a].astype(np.float64) + w * array[..., b]
    return out


def _ras_affine(first: _Frame, slice_spacing: float) -> np.ndarray:
    """RAS+ affine of the grid whose first slice is ``first``."""
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    lps[:3, 2] = first.normal * slice_spacing
    lps[:3, 3] = first.position
    return _RAS_FROM_LPS @ lps
