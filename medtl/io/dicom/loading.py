"""Read a series' pixels into a :class:`~medtl.io.volume.Volume`, with every check.

:func:`load_series_with_notes` reads every file, splits multi-frame files into frames, sets
aside localizer/scout images and pixel-identical duplicates (:mod:`.set_aside`), orders the
slices along the normal and checks their positions (:mod:`.geometry`), and stacks the
pixels (:mod:`.pixels`), resampled to equidistant slices when the spacing varies.
:func:`load_series_checked` and :func:`load_series` give less of the same. Per-series
checks are the rows of :data:`_SERIES_CHECKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtl.io.dicom.discovery import SeriesInfo
from medtl.io.dicom.frames import _Frame, _read_frames
from medtl.io.dicom.geometry import (
    _POSITION_CHECKS,
    _ras_affine,
    _resample_slices,
    _slice_axis,
    _sort_by_position,
    _Stack,
)
from medtl.io.dicom.headers import FIX_ONE_SERIES, _fmt, _text
from medtl.io.dicom.set_aside import _SET_ASIDE_FILTERS, _set_aside_duplicates
from medtl.io.dicom.stacking import _stack_integers, _stack_pixels
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError, Rejection


def load_series(series: SeriesInfo) -> Volume:
    """Read a series' pixels into a float32 volume; see :func:`load_series_checked`.

    Files set aside (localizers, duplicate copies) are left out silently; call
    :func:`load_series_checked` to get them.

    Args:
        series: a series from :func:`discover` or :func:`discover_series`.

    Returns:
        The volume.

    Raises:
        InputError: see :func:`load_series_checked`.
    """
    volume, _ = load_series_checked(series)
    return volume


@dataclass(frozen=True)
class LoadedSeries:
    """A series read by :func:`load_series_with_notes`.

    Attributes:
        volume: the image.
        set_aside: rejections of the files or frames left out (localizers, duplicates).
        notes: what was done to the slices that the user must know, one sentence each,
            e.g. that variable slice spacing was resampled to equidistant slices; write
            them beside the image (the manifest's ``note``).
    """

    volume: Volume
    set_aside: list[Rejection] = field(default_factory=list)
    notes: tuple[str, ...] = ()


def load_series_checked(
    series: SeriesInfo, *, keep_integers: bool = False
) -> tuple[Volume, list[Rejection]]:
    """Read a series' pixels into a float32 volume, with the files it set aside.

    The volume and set-aside files of :func:`load_series_with_notes`, without its notes:
    callers that write the volume for a user should call that one and show the notes.

    Args:
        series: a series from :func:`discover` or :func:`discover_series`.
        keep_integers: see :func:`load_series_with_notes`.

    Returns:
        The volume and the rejections of the files or frames set aside.

    Raises:
        InputError: see :func:`load_series_with_notes`.
    """
    loaded = load_series_with_notes(series, keep_integers=keep_integers)
    return loaded.volume, loaded.set_aside


def load_series_with_notes(series: SeriesInfo, *, keep_integers: bool = False) -> LoadedSeries:
    """Read a series' pixels into a float32 volume, with the files it set aside and notes.

    Localizer/scout images mixed into the series (ImageType LOCALIZER, an orientation or
    Rows x Columns other than the majority's) and pixel-identical copies of a slice are set
    aside; the rest must form one untilted stack without missing slices. Slices are sorted
    by ImagePositionPatient projected on the slice normal, not by InstanceNumber. Steps
    that differ only by the rounding of ImagePositionPatient in the header (GE writes 0.1
    mm) count as regular, and the spacing is the least-squares fit through all slices;
    genuinely variable spacing is resampled to equidistant slices by linear interpolation
    (as dcm2niix's '_Eq' image), with a note saying so. Values are
    ``stored * RescaleSlope + RescaleIntercept`` (defaults 1 and 0; per frame for
    multi-frame files).

    Args:
        series: a series from :func:`discover` or :func:`discover_series`.
        keep_integers: when every slice has an integer RescaleSlope and RescaleIntercept
            (the usual CT and MR case), return the exact values in the smallest of uint8,
            int16, uint16, int32 that holds them, in Fortran order (what NIfTI stores),
            instead of float32: half the memory and the bytes to write for 16-bit data.
            Other series, and resampled ones, come back as float32 whatever this says.

    Returns:
        The volume (``array`` float32 (or an integer type, see ``keep_integers``) indexed
        ``[column, row, slice]``, ``affine`` RAS+ mm,
        ``modality`` from Modality or ``"unknown"``, ``source_uids`` with
        StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID, ``patient_key`` the
        PatientID or ``None``), the rejections of the files or frames set aside, and notes.

    Raises:
        InputError: fewer than 2 slices left, a file that cannot be read or decoded (the
            message names the transfer syntax), orientations without a clear majority,
            different PixelSpacing, two different images at one position, missing slices,
            gantry tilt, or slices not on one line. The path is the series folder (or the
            first file when the series spans folders), or the offending file.
    """
    where = _series_location(series)
    label = f"series {series.description!r}" if series.description else "the series"
    frames = [frame for path in series.files for frame in _read_frames(path)]
    _require_slices(where, label, frames, [])
    _check_one_series(where, series, frames)
    set_aside: list[Rejection] = []
    for set_aside_filter in _SET_ASIDE_FILTERS:
        frames, rejections = set_aside_filter(where, label, frames)
        set_aside += rejections
    _require_slices(where, label, frames, set_aside)
    for check in _SERIES_CHECKS:
        check(where, series, frames)
    frames, offsets = _sort_by_position(frames)
    frames, offsets, duplicates = _set_aside_duplicates(where, frames, offsets)
    set_aside += duplicates
    _require_slices(where, label, frames, set_aside)
    stack = _Stack(frames, offsets)
    for check in _POSITION_CHECKS:
        check(where, stack)
    axis = _slice_axis(stack)
    if axis.targets is not None:
        array = _resample_slices(_stack_pixels(frames), offsets, axis.targets)
    else:
        integers = _stack_integers(frames) if keep_integers else None
        array = _stack_pixels(frames) if integers is None else integers
    first = frames[0].ds
    volume = Volume(
        array=array,
        affine=_ras_affine(frames[0], axis.spacing),
        modality=_text(first, "Modality") or "unknown",
        source_uids={
            kw: _text(first, kw)
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
        },
        patient_key=_text(first, "PatientID") or None,
        scanner=" ".join(
            t for t in (_text(first, "Manufacturer"), _text(first, "ManufacturerModelName")) if t
        ),
    )
    return LoadedSeries(volume, set_aside, (axis.note,) if axis.note else ())


def _series_location(series: SeriesInfo) -> Path:
    """The series folder if all its files share one, else its first file."""
    parents = {path.parent for path in series.files}
    if len(parents) == 1:
        return parents.pop()
    return series.files[0] if series.files else Path(series.series_uid)


def _require_slices(
    where: Path, label: str, frames: list[_Frame], set_aside: list[Rejection]
) -> None:
    if len(frames) >= 2:
        return
    aside = (
        f" after setting aside {len(set_aside)} localizer or duplicate images" if set_aside else ""
    )
    raise InputError(
        where,
        f"expected at least 2 slices in {label}, found {len(frames)}{aside}",
        "ingest a 3-D series; a single image (localizer, screenshot, 2-D exam) cannot "
        "be segmented as a volume: remove it or export the full series",
    )


def _check_one_series(where: Path, series: SeriesInfo, frames: list[_Frame]) -> None:
    for f in frames:
        if _text(f.ds, "SeriesInstanceUID") != series.series_uid:
            raise InputError(
                f.path,
                "expected every file to belong to the series being loaded, found a file of "
                "another series",
                "build the SeriesInfo with discover, which groups files by series",
            )


# Set-aside filters: (where, label, frames) -> (frames kept, rejections of those left out).


def _check_same_grid(where: Path, series: SeriesInfo, frames: list[_Frame]) -> None:
    first = frames[0]
    for f in frames[1:]:
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-4):
            raise InputError(
                where,
                "expected the same PixelSpacing for all slices, found "
                f"{_fmt(first.pixel_spacing)} in {first.name} but "
                f"{_fmt(f.pixel_spacing)} in {f.name}",
                FIX_ONE_SERIES,
            )


_SERIES_CHECKS: tuple[Callable[[Path, SeriesInfo, list[_Frame]], None], ...] = (_check_same_grid,)
