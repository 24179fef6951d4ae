"""Write a label map as an RTSTRUCT: one ROI per class, contoured slice by slice.

Each class becomes one ROI; its contours on each slice are the 0.5 iso-lines of the
slice's binary mask (``contourpy``, marching squares), which pass between voxel centres, so
rasterising them again (:func:`medtl.io.rtstruct.rasterise_rtstruct`) gives back the same
voxels.
"""

from __future__ import annotations

from pathlib import Path

import contourpy
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from medtl.io.dicom import SeriesInfo
from medtl.io.dicom.uids import DETACHED_STUDY_MANAGEMENT, RTSTRUCT_STORAGE
from medtl.io.dicom_write import add_file_meta
from medtl.io.label_objects import (
    SeriesGrid,
    check_mask,
    copy_patient_study,
    derived_uid,
    image_ref,
    series_grid,
)
from medtl.kernel.files import atomic_save_dicom

_RT_SERIES_NUMBER = 901
_COLOURS = (
    (255, 0, 0),
    (0, 200, 0),
    (0, 0, 255),
    (255, 200, 0),
    (0, 200, 200),
    (200, 0, 200),
    (255, 128, 0),
    (128, 0, 255),
)


def write_rtstruct(
    mask: np.ndarray,
    series: SeriesInfo,
    classes: dict[int, str],
    out: Path,
    *,
    label: str = "medtl",
    algorithm: str = "medtl",
    version: str = "0",
) -> Path:
    """Write a label map as an RTSTRUCT drawn on ``series``.

    Every class of ``classes`` except 0 becomes one ROI (ROINumber = class value, ROIName =
    class name, ROIGenerationAlgorithm AUTOMATIC); a class absent from ``mask`` gives an ROI
    without contours. Contours are the 0.5 iso-lines of each class's binary mask on each
    slice, with collinear vertices removed; each references its slice's SOPInstanceUID.
    Patient and study attributes are copied from the series; the file is written in Implicit
    VR Little Endian (no 64 KiB limit on ContourData), with UIDs derived from the series, the
    mask and the arguments and no timestamps, so equal input gives an equal file.

    Args:
        mask: integer label map indexed ``[i, j, k]`` on the grid of ``series`` (as
            :func:`medtl.io.dicom.load_series` returns it); values must be 0 or a class.
        series: the image series the mask belongs to.
        classes: class value -> name, e.g. ``{0: "background", 1: "tumour"}``.
        out: the file to write; its folder is created if needed.
        label: StructureSetLabel and SeriesDescription (at most 16 characters).
        algorithm: ManufacturerModelName (the algorithm name).
        version: SoftwareVersions.

    Returns:
        ``out``.

    Raises:
        ValueError: ``mask`` does not fit the series grid or holds values that are no class,
            or a name is too long for DICOM.
        InputError: a series file cannot be read.

    Example:
        >>> write_rtstruct(pred, series, {1: "tumour"}, Path("RS_pred.dcm"))  # doctest: +SKIP
    """
    if len(label) > 16:
        raise ValueError(
            f"expected a StructureSetLabel of at most 16 characters, found {label!r}; "
            "fix: pass a shorter label"
        )
    grid = series_grid(series)
    mask = check_mask(mask, grid, classes)
    first = grid.headers[0]
    sop_uid = derived_uid("rtstruct", series, mask, classes, label, algorithm, version)

    ds = Dataset()
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 192") or "ISO_IR 192"
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = sop_uid
    copy_patient_study(first, ds)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[sop_uid, "series"])
    ds.SeriesNumber = _RT_SERIES_NUMBER
    ds.SeriesDescription = label
    ds.OperatorsName = ""
    ds.Manufacturer = "medtl"
    ds.ManufacturerModelName = algorithm
    ds.SoftwareVersions = version
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label
    ds.StructureSetDate = ""
    ds.StructureSetTime = ""
    ds.ReferencedFrameOfReferenceSequence = Sequence([_referenced_frame(grid, series, first)])
    _add_rois(ds, mask, grid, classes)
    add_file_meta(ds, ImplicitVRLittleEndian)
    return atomic_save_dicom(ds, Path(out))


def _referenced_frame(grid: SeriesGrid, series: SeriesInfo, first: Dataset) -> Dataset:
    """The frame of reference, its study and the series with every slice it contours."""
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = series.series_uid
    referenced_series.ContourImageSequence = Sequence([image_ref(h) for h in grid.headers])
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = str(first.StudyInstanceUID)
    study.RTReferencedSeriesSequence = Sequence([referenced_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = grid.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study])
    return frame


def _add_rois(ds: Dataset, mask: np.ndarray, grid: SeriesGrid, classes: dict[int, str]) -> None:
    """One ROI per class (but 0): its definition, its contours and its observation."""
    image_refs = [image_ref(h) for h in grid.headers]
    rois, roi_contours, observations = [], [], []
    for n, (value, name) in enumerate(sorted((v, c) for v, c in classes.items() if v != 0)):
        if len(name) > 64:
            raise ValueError(
                f"expected class names of at most 64 characters (ROIName), found {name!r}; "
                "fix: shorten the class name"
            )
        roi = Dataset()
        roi.ROINumber = value
        roi.ReferencedFrameOfReferenceUID = grid.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)

        item = Dataset()
        item.ROIDisplayColor = list(_COLOURS[n % len(_COLOURS)])
        item.ReferencedROINumber = value
        contours = _class_contours(mask, value, grid, image_refs)
        if contours:
            item.ContourSequence = Sequence(contours)
        roi_contours.append(item)

        observation = Dataset()
        observation.ObservationNumber = value
        observation.ReferencedROINumber = value
        observation.RTROIInterpretedType = ""
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)


def _class_contours(
    mask: np.ndarray, value: int, grid: SeriesGrid, image_refs: list[Dataset]
) -> list[Dataset]:
    """The CLOSED_PLANAR contours of class ``value``, slice by slice, in LPS mm."""
    contours = []
    for k in range(grid.shape[2]):
        for polygon in mask_contours(mask[:, :, k] == value):
            voxel = np.column_stack([polygon, np.full(len(polygon), k, dtype=float)])
            contour = Dataset()
            contour.ContourImageSequence = Sequence([image_refs[k]])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(polygon)
            contour.ContourData = [f"{v:.3f}" for v in grid.to_lps(voxel).ravel()]
            contours.append(contour)
    return contours


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours ``(n, 2)`` in voxel coordinates ``(i, j)`` around a 2-D boolean mask.

    The contours are the 0.5 iso-lines of the mask padded with background, so they are
    closed, pass between voxel centres and, filled with the even-odd rule, give the mask
    back. The repeated closing vertex and collinear vertices are dropped.

    Example:
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:3] = True
        >>> [c.shape for c in mask_contours(m)]
        [(8, 2)]
        >>> from medtl.io.rtstruct import fill_even_odd
        >>> bool(np.array_equal(fill_even_odd(mask_contours(m), m.shape), m))
        True
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    ni, nj = mask.shape
    generator = contourpy.contour_generator(
        x=np.arange(-1, nj + 1, dtype=float),
        y=np.arange(-1, ni + 1, dtype=float),
        z=np.pad(mask, 1).astype(float),
        line_type=contourpy.LineType.Separate,
    )
    contours = []
    for line in generator.lines(0.5):
        points = np.asarray(line, dtype=float)[:, ::-1]  # contourpy gives (x, y) = (j, i)
        if len(points) > 1 and np.allclose(points[0], points[-1]):
            points = points[:-1]
        points = _drop_collinear(points)
        if len(points) >= 3:
            contours.append(points)
    return contours


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """The vertices of a closed polygon that are not on the line through their neighbours."""
    if len(points) < 4:
        return points
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    forward = np.sum(before * after, axis=1) > 0
    keep = (np.abs(cross) > 1e-9) | ~forward
    return points[keep]
