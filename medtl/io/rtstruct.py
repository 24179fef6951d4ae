"""Read RTSTRUCT contours into a label map on an image grid.

Reading (:func:`rasterise_rtstruct`): each ROI whose name matches a class (see
:mod:`medtl.io.roi_names`) is rasterised from its CLOSED_PLANAR contours. Contour points
(LPS mm) go to RAS, then to voxel coordinates with the inverse of the image affine; every
contour must lie on one image slice. On each slice the voxel centres inside the ROI are found
with the **even-odd rule over all contours of that ROI on that slice**, so a contour inside
another one is a hole and several separate contours are all filled. Several ROIs of one class
are united. Classes are painted in increasing class value, so where ROIs of two classes
overlap the higher class value wins; elsewhere nothing is overwritten.

Writing a mask as RTSTRUCT is :mod:`medtl.io.rtstruct_write`; the series grid both need is
:func:`medtl.io.label_objects.series_grid`.

Example:
    >>> name_map = build_name_map({1: "tumour"}, {"tumour": ["GTV"]})  # doctest: +SKIP
    >>> image = load_series(series)  # doctest: +SKIP
    >>> labels = rasterise_rtstruct(Path("RS.dcm"), image, series, name_map)  # doctest: +SKIP
    >>> labels.used, labels.unmatched  # doctest: +SKIP
    ({'GTV': 1}, ['Heart', 'Spinal Cord'])
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.path import Path as PolygonPath
from pydicom.dataset import Dataset

from medtl.io.dicom import SeriesInfo
from medtl.io.dicom.uids import RTSTRUCT_STORAGE
from medtl.io.label_objects import (
    FIX_PAIRING,
    GEOMETRY_MISMATCH,
    LabelConversion,
    SeriesGrid,
    check_name_map,
    read_label_file,
    series_grid,
)
from medtl.io.roi_names import match_name
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError


def rasterise_rtstruct(
    path: Path, image: Volume, series: SeriesInfo, name_map: dict[str, int]
) -> LabelConversion:
    """Rasterise the ROIs of an RTSTRUCT that match a class onto the image grid.

    ROIs are matched by ROIName with :func:`medtl.io.roi_names.match_name`. Only
    CLOSED_PLANAR contours are filled (POINT and OPEN_* contours enclose no area and are
    skipped, as are contours of fewer than 3 points). Holes and several contours per slice
    follow the even-odd rule; where ROIs of different classes overlap the higher class value
    wins.

    Args:
        path: the RTSTRUCT file.
        image: the volume loaded from ``series`` with :func:`medtl.io.dicom.load_series`.
        series: the image series the RTSTRUCT was drawn on.
        name_map: from :func:`medtl.io.roi_names.build_name_map`.

    Returns:
        The uint8 label map on the image grid, the names used and the names unmatched.

    Raises:
        InputError: the file is not a readable RTSTRUCT, it references another series or
            frame of reference, or a contour does not lie on an image slice.
    """
    path = Path(path)
    check_name_map(name_map)
    ds = read_label_file(path, (RTSTRUCT_STORAGE,), "RTSTRUCT")
    grid = series_grid(series, image, where=path)
    image_for = image.source_uids.get("FrameOfReferenceUID") or grid.frame_of_reference_uid
    _check_rtstruct_references(path, ds, series, image_for)

    contours_by_roi = {
        int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence", [])
    }
    used: dict[str, int] = {}
    unmatched: list[str] = []
    class_masks: dict[int, np.ndarray] = {}
    for roi in ds.get("StructureSetROISequence", []):
        name = str(roi.get("ROIName", "") or "")
        value = match_name(name, name_map)
        if value is None:
            unmatched.append(name)
            continue
        roi_for = str(roi.get("ReferencedFrameOfReferenceUID", "") or "")
        if roi_for and image_for and roi_for != image_for:
            raise InputError(
                path,
                f"{GEOMETRY_MISMATCH}: ROI {name!r} is drawn in frame of reference {roi_for}, "
                f"the image is in {image_for}",
                FIX_PAIRING,
            )
        used[name] = value
        item = contours_by_roi.get(int(roi.ROINumber))
        if item is None:
            continue
        mask = _rasterise_roi(path, name, item.get("ContourSequence", []), grid)
        if value in class_masks:
            class_masks[value] |= mask
        else:
            class_masks[value] = mask
    array = np.zeros(grid.shape, dtype=np.uint8)
    for value in sorted(class_masks):
        array[class_masks[value]] = value
    return LabelConversion(array, used, unmatched)


def _check_rtstruct_references(path: Path, ds: Dataset, series: SeriesInfo, image_for: str) -> None:
    """Raise unless the RTSTRUCT references the image's series and frame of reference."""
    frames = [str(f.get("FrameOfReferenceUID", "") or "") for f in _referenced_frames(ds)]
    frames = [f for f in frames if f]
    referenced_series = [
        str(s.get("SeriesInstanceUID", "") or "")
        for f in _referenced_frames(ds)
        for study in f.get("RTReferencedStudySequence", [])
        for s in study.get("RTReferencedSeriesSequence", [])
    ]
    referenced_series = [s for s in referenced_series if s]
    if referenced_series and series.series_uid not in referenced_series:
        raise InputError(
            path,
            f"{GEOMETRY_MISMATCH}: the RTSTRUCT references series "
            f"{', '.join(sorted(set(referenced_series)))}, the image is series {series.series_uid}",
            FIX_PAIRING,
        )
    if frames and image_for and image_for not in frames:
        raise InputError(
            path,
            f"{GEOMETRY_MISMATCH}: the RTSTRUCT references frame of reference "
            f"{', '.join(sorted(set(frames)))}, the image is in frame of reference {image_for}",
            FIX_PAIRING,
        )


def _referenced_frames(ds: Dataset) -> Iterable[Dataset]:
    return ds.get("ReferencedFrameOfReferenceSequence", []) or []


def _rasterise_roi(
    path: Path, name: str, contours: Iterable[Dataset], grid: SeriesGrid
) -> np.ndarray:
    """Boolean mask of one ROI: even-odd fill of its contours, slice by slice."""
    polygons: dict[int, list[np.ndarray]] = {}
    for n, contour in enumerate(contours, start=1):
        kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR") or "CLOSED_PLANAR")
        if kind.upper() != "CLOSED_PLANAR":
            continue
        data = np.asarray([float(v) for v in (contour.get("ContourData") or [])], dtype=float)
        if data.size % 3:
            raise InputError(
                path,
                f"expected ContourData of x, y, z triplets, found {data.size} values in "
                f"contour {n} of ROI {name!r}",
                "export the RTSTRUCT again from the planning system; the file is corrupt",
            )
        points = data.reshape(-1, 3)
        if len(points) < 3:
            continue
        voxel = grid.to_voxel(points)
        slice_k = float(np.median(voxel[:, 2]))
        k = int(np.rint(slice_k))
        off = float(np.max(np.abs(voxel[:, 2] - k)))
        tolerance = float(grid.slack()[2])
        if off > tolerance:
            raise InputError(
                path,
                f"contour not on an image slice: contour {n} of ROI {name!r} spans slice "
                f"index {voxel[:, 2].min():.2f} to {voxel[:, 2].max():.2f} of the image, "
                f"expected every point within {tolerance:.2g} of one integer slice index",
                "pair the RTSTRUCT with the series it was drawn on; contours drawn on slices "
                "at other positions or angles cannot be filled on this grid",
            )
        if not 0 <= k < grid.shape[2]:
            raise InputError(
                path,
                f"{GEOMETRY_MISMATCH}: contour {n} of ROI {name!r} lies on slice index {k}, "
                f"outside the image's slices 0..{grid.shape[2] - 1}",
                FIX_PAIRING,
            )
        polygons.setdefault(k, []).append(voxel[:, :2])
    mask = np.zeros(grid.shape, dtype=bool)
    for k, slice_polygons in polygons.items():
        mask[:, :, k] = fill_even_odd(slice_polygons, grid.shape[:2])
    return mask


def fill_even_odd(polygons: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Grid points ``(i, j)`` inside an odd number of the closed polygons.

    Args:
        polygons: ``(n, 2)`` vertex arrays in voxel coordinates ``(i, j)``; each is closed
            implicitly (the last vertex joins the first).
        shape: ``(ni, nj)`` of the grid; points are voxel centres ``(i, j)``, integers.

    Example:
        >>> outer = np.array([[0.5, 0.5], [4.5, 0.5], [4.5, 4.5], [0.5, 4.5]])
        >>> inner = np.array([[1.5, 1.5], [3.5, 1.5], [3.5, 3.5], [1.5, 3.5]])
        >>> fill_even_odd([outer, inner], (6, 6)).astype(int)[:, 2]
        array([0, 1, 0, 0, 1, 0])
    """
    inside = np.zeros(shape, dtype=bool)
    upper = np.array(shape) - 1
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=float)
        lo = np.maximum(np.ceil(polygon.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.floor(polygon.max(axis=0)).astype(int), upper)
        if np.any(hi < lo):
            continue
        ii, jj = np.meshgrid(
            np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij"
        )
        centres = np.column_stack([ii.ravel(), jj.ravel()])
        hit = PolygonPath(polygon).contains_points(centres).reshape(ii.shape)
        inside[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] ^= hit
    return inside
