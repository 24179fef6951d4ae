"""One slice of a series, with its geometry parsed and checked: :class:`_Frame`.

A classic file is one frame; a multi-frame file (enhanced CT/MR) gives one frame per item
of its Per-frame Functional Groups. Geometry (DICOM PS3.3 C.7.6.2.1.1): the pixel in column
``c``, row ``r`` lies at ``ImagePositionPatient + X * PixelSpacing[1] * c + Y *
PixelSpacing[0] * r`` (LPS mm), ``X, Y`` the two ImageOrientationPatient cosines.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medtl.io.dicom.headers import (
    FIX_REMOVE,
    _ds_quantum,
    _frame_geometry_problem,
    _get,
    _group_value,
    _is_multiframe,
    _read_dataset,
    _shared_groups,
)
from medtl.io.dicom.pixels import _PixelSource
from medtl.kernel.errors import InputError

_COSINE_TOL = 1e-3  # unit length / orthogonality of ImageOrientationPatient


@dataclass(frozen=True)
class _Frame:
    """One slice of a series (a single-frame file or one frame of a multi-frame file)."""

    path: Path
    frame: int | None  # index within a multi-frame file; None for a single-frame file
    ds: Dataset
    source: _PixelSource
    row_cosine: np.ndarray  # X: direction of increasing column index (array axis i)
    column_cosine: np.ndarray  # Y: direction of increasing row index (array axis j)
    position: np.ndarray  # ImagePositionPatient, LPS mm
    position_quantum: float  # its rounding step as written ("-12.3": 0.1 mm); 0 if unknown
    rows: int
    columns: int
    pixel_spacing: np.ndarray  # [between rows (along Y), between columns (along X)]
    slope: float
    intercept: float
    localizer: bool  # ImageType / FrameType says LOCALIZER

    @functools.cached_property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    @property
    def orientation(self) -> np.ndarray:
        return np.concatenate([self.row_cosine, self.column_cosine])

    @property
    def name(self) -> str:
        """The file name, with the frame number (1-based) for a multi-frame file."""
        if self.frame is None:
            return self.path.name
        return f"{self.path.name} frame {self.frame + 1}"

    def stored(self) -> np.ndarray:
        """Stored pixel values as decoded (no rescale), (Rows, Columns); may be read-only."""
        pixels = self.source.values(self.frame)
        if pixels.shape != (self.rows, self.columns):
            raise InputError(
                self.path,
                f"expected pixel data of shape Rows x Columns = {self.rows} x {self.columns}, "
                f"found {pixels.shape}",
                FIX_REMOVE,
            )
        return pixels

    def values(self) -> np.ndarray:
        """Rescaled pixel values, float64, (Rows, Columns)."""
        return self.stored().astype(np.float64) * self.slope + self.intercept


# ---------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------


def _read_frames(path: Path) -> list[_Frame]:
    """The slices in one file: one for a classic image, one per frame for multi-frame."""
    try:
        ds = _read_dataset(path, stop_before_pixels=False)
    except InputError:
        raise
    except Exception as exc:  # unreadable since discovery, or never discovered
        raise InputError(
            path,
            f"expected a readable DICOM image, found an error reading it ({exc})",
            "run discovery again on the folder; " + FIX_REMOVE,
        ) from None
    source = _PixelSource(path, ds)
    try:
        if _is_multiframe(ds):
            return _multiframe_frames(path, ds, source)
        return [_classic_frame(path, ds, source)]
    except InputError:
        raise
    except Exception as exc:  # a malformed value pydicom could not convert
        raise InputError(
            path,
            f"expected well-formed geometry and rescale attributes, found a malformed one "
            f"({type(exc).__name__}: {exc})",
            "the header is corrupt; export the series again from the source",
        ) from None


def _classic_frame(path: Path, ds: Dataset, source: _PixelSource) -> _Frame:
    return _make_frame(
        path,
        None,
        ds,
        source,
        iop=_get(ds, "ImageOrientationPatient"),
        ipp=_get(ds, "ImagePositionPatient"),
        ipp_quantum=_ds_quantum(ds, "ImagePositionPatient"),
        spacing=_get(ds, "PixelSpacing"),
        slope=_get(ds, "RescaleSlope"),
        intercept=_get(ds, "RescaleIntercept"),
        image_type=_get(ds, "ImageType"),
    )


def _multiframe_frames(path: Path, ds: Dataset, source: _PixelSource) -> list[_Frame]:
    problem = _frame_geometry_problem(ds)
    if problem is not None:
        raise InputError(
            path,
            f"expected a multi-frame image with a plane position per frame, found {problem}",
            "export the volume as enhanced CT/MR or as classic single-frame images",
        )
    shared = _shared_groups(ds)
    frames = []
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):

        def value(sequence: str, keyword: str, item: Dataset = item) -> Any:
            return _group_value(ds, item, shared, sequence, keyword)

        frames.append(
            _make_frame(
                path,
                index,
                ds,
                source,
                iop=value("PlaneOrientationSequence", "ImageOrientationPatient"),
                ipp=value("PlanePositionSequence", "ImagePositionPatient"),
                ipp_quantum=_ds_quantum(_plane_position(item, shared), "ImagePositionPatient"),
                spacing=value("PixelMeasuresSequence", "PixelSpacing"),
                slope=value("PixelValueTransformationSequence", "RescaleSlope"),
                intercept=value("PixelValueTransformationSequence", "RescaleIntercept"),
                image_type=_frame_type(item, shared) or ds.get("ImageType"),
            )
        )
    return frames


def _plane_position(item: Dataset, shared: Dataset | None) -> Dataset | None:
    """The Plane Position item that gives the frame its ImagePositionPatient."""
    for group in (item, shared):
        sequence = group.get("PlanePositionSequence") if group is not None else None
        if sequence and sequence[0].get("ImagePositionPatient") not in (None, ""):
            return sequence[0]
    return None


def _frame_type(item: Dataset, shared: Dataset | None) -> Any:
    """FrameType from any '... Frame Type Sequence' (MR, CT, PET ...) of the frame."""
    for group in (item, shared):
        if group is None:
            continue
        for element in group:
            if element.keyword.endswith("FrameTypeSequence") and element.value:
                frame_type = element.value[0].get("FrameType")
                if frame_type:
                    return frame_type
    return None


def _make_frame(
    path: Path,
    index: int | None,
    ds: Dataset,
    source: _PixelSource,
    *,
    iop: Any,
    ipp: Any,
    ipp_quantum: float,
    spacing: Any,
    slope: Any,
    intercept: Any,
    image_type: Any,
) -> _Frame:
    """A frame with its geometry parsed and checked; raises InputError."""
    where = "" if index is None else f" of frame {index + 1}"
    try:
        iop_values = _floats(iop)
        ipp_values = _floats(ipp)
        spacing_values = _floats(spacing)
        rows, columns = int(_get(ds, "Rows")), int(_get(ds, "Columns"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(
            path,
            f"expected numeric ImageOrientationPatient (6 values), ImagePositionPatient (3), "
            f"PixelSpacing (2), Rows and Columns{where}, found a missing or malformed one "
            f"({exc})",
            FIX_REMOVE,
        ) from None
    if iop_values.shape != (6,) or ipp_values.shape != (3,) or spacing_values.shape != (2,):
        raise InputError(
            path,
            f"expected 6 ImageOrientationPatient, 3 ImagePositionPatient and 2 PixelSpacing "
            f"values{where}, found {iop_values.size}, {ipp_values.size} and "
            f"{spacing_values.size}",
            FIX_REMOVE,
        )
    if not (np.all(np.isfinite(spacing_values)) and np.all(spacing_values > 0)):
        raise InputError(
            path,
            f"expected positive PixelSpacing{where}, found {spacing_values.tolist()}",
            FIX_REMOVE,
        )
    if not np.all(np.isfinite(ipp_values)):
        raise InputError(
            path, f"expected finite ImagePositionPatient{where}, found {ipp_values}", FIX_REMOVE
        )
    row_cosine, column_cosine = _cosines(path, iop_values)
    return _Frame(
        path=path,
        frame=index,
        ds=ds,
        source=source,
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        position=ipp_values,
        position_quantum=ipp_quantum,
        rows=rows,
        columns=columns,
        pixel_spacing=spacing_values,
        slope=_float_or(slope, 1.0),
        intercept=_float_or(intercept, 0.0),
        localizer="LOCALIZER" in _upper_values(image_type),
    )


def _floats(value: Any) -> np.ndarray:
    if value is None:
        raise ValueError("attribute missing")
    if isinstance(value, str | bytes | int | float):
        value = [value]
    return np.array([float(v) for v in value], dtype=float)


def _float_or(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    number = float(
        value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value
    )
    if not np.isfinite(number):
        raise ValueError(f"non-finite rescale value {value!r}")
    return number


def _upper_values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(v).strip().upper() for v in value]


def _cosines(path: Path, iop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two orientation cosines, checked to be unit length and orthogonal."""
    x, y = iop[:3], iop[3:]
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if not (
        np.all(np.isfinite(iop))
        and abs(nx - 1) < _COSINE_TOL
        and abs(ny - 1) < _COSINE_TOL
        and abs(x @ y) < _COSINE_TOL
    ):
        raise InputError(
            path,
            "expected ImageOrientationPatient to hold two orthogonal unit vectors, found "
            f"{iop.tolist()} (lengths {nx:.4f}, {ny:.4f}, dot product {x @ y:.4f})",
            "the header is corrupt; export the series again from the source",
        )
    return x / nx, y / ny
