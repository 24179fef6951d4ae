"""Read RTSTRUCT contours into a label map on an image grid, and write a mask as RTSTRUCT.

Reading (:func:`rasterise_rtstruct`): each ROI whose name matches a class (see
:mod:`medtl.io.roi_names`) is rasterised from its CLOSED_PLANAR contours. Contour points
(LPS mm) go to RAS, then to voxel coordinates with the inverse of the image affine; every
contour must lie on one image slice. On each slice the voxel centres inside the ROI are found
with the **even-odd rule over all contours of that ROI on that slice**, so a contour inside
another one is a hole and several separate contours are all filled. Several ROIs of one class
are united. Classes are painted in increasing class value, so where ROIs of two classes
overlap the higher class value wins; elsewhere nothing is overwritten.

Writing (:func:`write_rtstruct`): each class becomes one ROI; its contours on each slice are
the 0.5 iso-lines of the slice's binary mask (``contourpy``, marching squares), which pass
between voxel centres, so rasterising them again gives back the same voxels.

Both directions need the slices of the image series in array order: :func:`series_grid`
pairs each slice index ``k`` with its file's header by ImagePositionPatient.

Example:
    >>> name_map = build_name_map({1: "tumour"}, {"tumour": ["GTV"]})  # doctest: +SKIP
    >>> image = load_series(series)  # doctest: +SKIP
    >>> labels = rasterise_rtstruct(Path("RS.dcm"), image, series, name_map)  # doctest: +SKIP
    >>> labels.used, labels.unmatched  # doctest: +SKIP
    ({'GTV': 1}, ['Heart', 'Spinal Cord'])
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import contourpy
import numpy as np
import pydicom
from matplotlib.path import Path as PolygonPath
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ImplicitVRLittleEndian, generate_uid

from medtl.io.dicom import SeriesInfo, position_rounding
from medtl.io.dicom.uids import DETACHED_STUDY_MANAGEMENT, RTSTRUCT_STORAGE
from medtl.io.roi_names import MAX_CLASS, match_name
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_save_dicom

GEOMETRY_MISMATCH = "label geometry does not match its image"
FIX_PAIRING = (
    "pair the label file with the image series it was drawn on (same SeriesInstanceUID and "
    "FrameOfReferenceUID); if it was drawn on another series, export it again on this one"
)

_SLICE_TOL = 0.1  # voxels: a contour or slice position this close to an integer index fits
_ORIENTATION_TOL = 1e-3
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
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
# Patient and study attributes copied into derived objects: (keyword, type-2 default or None
# when the attribute is only copied if present).
_PATIENT_STUDY = (
    ("PatientName", ""),
    ("PatientID", ""),
    ("PatientBirthDate", ""),
    ("PatientSex", ""),
    ("IssuerOfPatientID", None),
    ("PatientAge", None),
    ("StudyInstanceUID", ""),
    ("StudyDate", ""),
    ("StudyTime", ""),
    ("StudyID", ""),
    ("AccessionNumber", ""),
    ("ReferringPhysicianName", ""),
    ("StudyDescription", None),
)


@dataclass
class LabelConversion:
    """What a label object (RTSTRUCT or SEG) gave on an image grid.

    Attributes:
        array: uint8 label map indexed ``[i, j, k]`` like the image, 0 = background.
        used: ROI / segment name -> the class value it was painted with.
        unmatched: names that matched no class, in file order; reported, not fatal.
    """

    array: np.ndarray
    used: dict[str, int]
    unmatched: list[str]


@dataclass(frozen=True)
class SeriesGrid:
    """The slices of an image series in array order and the grid they form.

    Attributes:
        affine: voxel -> RAS+ mm, as :func:`medtl.io.dicom.load_series` returns it.
        shape: ``(columns, rows, slices)``.
        headers: the header (no pixel data) of each array slice ``k``.
        frame_of_reference_uid: FrameOfReferenceUID of the series, ``""`` if absent.
        rounding: how far each coordinate of the headers' ImagePositionPatient may be from
            the true position, mm (half the rounding step they are written to: 0.05 for
            GE's ``"-12.3"``).
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    headers: tuple[Dataset, ...]
    frame_of_reference_uid: str
    rounding: float = 0.0

    def slack(self) -> np.ndarray:
        """How far (voxels, per array axis) a point placed by the headers may lie off the grid.

        :data:`_SLICE_TOL`, plus the rounding of two positions (the point's and the grid
        origin's): at most ``2 * sqrt(3) * rounding`` mm, in voxels of each axis.
        """
        sizes = np.linalg.norm(self.affine[:3, :3], axis=0)
        return _SLICE_TOL + 2.0 * np.sqrt(3.0) * self.rounding / sizes

    @property
    def sop_index(self) -> dict[str, int]:
        """SOPInstanceUID -> array slice index."""
        return {str(h.SOPInstanceUID): k for k, h in enumerate(self.headers)}

    def to_voxel(self, lps: np.ndarray) -> np.ndarray:
        """Voxel coordinates ``(n, 3)`` of LPS mm points ``(n, 3)``."""
        ras = np.asarray(lps, dtype=float) * np.array([-1.0, -1.0, 1.0])
        inverse = np.linalg.inv(self.affine)
        return ras @ inverse[:3, :3].T + inverse[:3, 3]

    def to_lps(self, voxel: np.ndarray) -> np.ndarray:
        """LPS mm points ``(n, 3)`` of voxel coordinates ``(n, 3)``."""
        ras = np.asarray(voxel, dtype=float) @ self.affine[:3, :3].T + self.affine[:3, 3]
        return ras * np.array([-1.0, -1.0, 1.0])

    def lps_cosines(self) -> np.ndarray:
        """The ImageOrientationPatient the grid implies (row cosine, column cosine)."""
        lps = _RAS_FROM_LPS[:3, :3] @ self.affine[:3, :3]
        return np.concatenate([lps[:, 0], lps[:, 1]]) / np.repeat(
            np.linalg.norm(lps[:, :2], axis=0), 3
        )


def series_grid(
    series: SeriesInfo, image: Volume | None = None, *, where: Path | None = None
) -> SeriesGrid:
    """Pair each array slice of ``series`` with its file, reading headers only.

    Without ``image`` the grid is built from the headers the way
    :func:`medtl.io.dicom.load_series` builds it (slices sorted along the normal of
    ImageOrientationPatient, spaced by a least-squares fit through their positions). With
    ``image`` (a volume loaded from ``series``) its affine and shape are used, and every
    file must sit on one of its slices, to within the rounding of its position.

    Args:
        series: the image series.
        image: the volume loaded from it, or ``None``.
        where: the label file the grid is needed for, named in errors about ``image``.

    Returns:
        The grid, with one header per slice.

    Raises:
        InputError: a file cannot be read or lacks geometry, or ``image`` is not the grid of
            ``series`` ("label geometry does not match its image").
    """
    headers = [_read_header(path) for path in series.files]
    if not headers:
        raise InputError(
            series.series_uid, "expected an image series with files, found none", FIX_PAIRING
        )
    geometry = [_geometry(h) for h in headers]
    frame_of_reference = str(headers[0].get("FrameOfReferenceUID", "") or "")
    rounding = max(position_rounding(h) for h in headers)
    if image is None:
        iop, _, spacing, rows, columns = geometry[0]
        normal = np.cross(iop[:3], iop[3:])
        offsets = np.array([g[1] @ normal for g in geometry])
        order = np.argsort(offsets, kind="stable")
        # The least-squares slope through all slices, as the loader spaces them: positions
        # rounded in the header (GE: 0.1 mm) make single steps alternate.
        index = np.arange(len(order), dtype=float) - (len(order) - 1) / 2
        step = float(index @ offsets[order] / (index @ index)) if len(order) > 1 else 1.0
        lps = np.eye(4)
        lps[:3, 0] = iop[:3] * spacing[1]
        lps[:3, 1] = iop[3:] * spacing[0]
        lps[:3, 2] = normal * step
        lps[:3, 3] = geometry[order[0]][1]
        affine = _RAS_FROM_LPS @ lps
        shape = (columns, rows, len(headers))
        ordered = tuple(headers[i] for i in order)
        return SeriesGrid(affine, shape, ordered, frame_of_reference, rounding)

    where = Path(where) if where is not None else Path(series.series_uid)
    grid = SeriesGrid(
        np.asarray(image.affine, float), image.shape, (), frame_of_reference, rounding
    )
    if len(headers) < grid.shape[2]:
        raise InputError(
            where,
            f"{GEOMETRY_MISMATCH}: the image has {grid.shape[2]} slices, its series only "
            f"{len(headers)} files, as when a series of variable slice spacing is resampled "
            "to equidistant slices; a label drawn on the acquired slices has no slice of its "
            "own there",
            "ask for a reconstruction of the series with constant slice spacing and draw (or "
            "copy) the label on it; or pass the volume loaded from this very series",
        )
    slots: list[Dataset | None] = [None] * grid.shape[2]
    expected_iop = grid.lps_cosines()
    for header, (iop, ipp, _, rows, columns) in zip(headers, geometry, strict=True):
        name = Path(header.filename).name if header.filename else str(header.SOPInstanceUID)
        if (columns, rows) != grid.shape[:2] or not np.allclose(
            iop, expected_iop, atol=_ORIENTATION_TOL
        ):
            raise InputError(
                where,
                f"{GEOMETRY_MISMATCH}: expected slices of {grid.shape[0]} columns x "
                f"{grid.shape[1]} rows oriented {_fmt(expected_iop)} (the image), found "
                f"{columns} x {rows} oriented {_fmt(iop)} in series file {name}",
                "pass the volume loaded from this very series (not resampled or reoriented)",
            )
        i, j, k = grid.to_voxel(ipp[None])[0]
        slot = int(np.rint(k))
        off_grid = np.any(np.abs([i, j, k - slot]) > grid.slack())
        if off_grid or not 0 <= slot < len(slots):
            raise InputError(
                where,
                f"{GEOMETRY_MISMATCH}: series file {name} lies at voxel ({i:.2f}, {j:.2f}, "
                f"{k:.2f}) of the image, expected (0, 0, k) with k one of 0..{len(slots) - 1}",
                "pass the volume loaded from this very series (not resampled or reoriented)",
            )
        slots[slot] = header
    missing = [k for k, h in enumerate(slots) if h is None]
    if missing:
        raise InputError(
            where,
            f"{GEOMETRY_MISMATCH}: expected one series file per image slice, found none for "
            f"slices {missing}",
            "pass the volume loaded from this very series and the series' full file list",
        )
    return SeriesGrid(grid.affine, grid.shape, tuple(slots), frame_of_reference, rounding)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


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
    _check_name_map(name_map)
    ds = _read_label_file(path, (RTSTRUCT_STORAGE,), "RTSTRUCT")
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


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


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

    image_refs = [_image_ref(h) for h in grid.headers]
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = series.series_uid
    referenced_series.ContourImageSequence = Sequence([_image_ref(h) for h in grid.headers])
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = str(first.StudyInstanceUID)
    study.RTReferencedSeriesSequence = Sequence([referenced_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = grid.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

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

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDTL"
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    return atomic_save_dicom(ds, Path(out))


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours ``(n, 2)`` in voxel coordinates ``(i, j)`` around a 2-D boolean mask.

    The contours are the 0.5 iso-lines of the mask padded with background, so they are
    closed, pass between voxel centres and, filled with the even-odd rule, give the mask
    back. The repeated closing vertex and collinear vertices are dropped.

    Example:
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:3] = True
        >>> [c.shape for c in mask_contours(m)]
        [(8, 2)]
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


# ---------------------------------------------------------------------------------------
# Helpers shared with medtl.io.dicomseg
# ---------------------------------------------------------------------------------------


def check_mask(mask: np.ndarray, grid: SeriesGrid, classes: dict[int, str]) -> np.ndarray:
    """``mask`` as a uint8 array, checked to fit ``grid`` and hold only known classes.

    Raises:
        InputError: the mask has more slices than the series has files, as when a series of
            variable slice spacing was resampled at load: a DICOM label object must
            reference the series' own slices.
        ValueError: wrong shape, a non-integer array, or values that are no class.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[:2] == grid.shape[:2] and mask.shape[2] > grid.shape[2]:
        first = grid.headers[0].filename if grid.headers else ""
        raise InputError(
            Path(first).parent if first else "the series",
            f"expected a mask on the series' own {grid.shape[2]} slices, found "
            f"{mask.shape[2]}: the series has variable slice spacing and its image was "
            "resampled to equidistant slices, which a DICOM-SEG or RTSTRUCT cannot reference",
            "write the prediction as NIfTI, or ask for a reconstruction of the series with "
            "constant slice spacing",
        )
    if mask.shape != grid.shape:
        raise ValueError(
            f"expected a mask of the series grid's shape {grid.shape} (columns, rows, "
            f"slices), found {mask.shape}; fix: pass a mask on the grid load_series returns"
        )
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"expected an integer label map, found dtype {mask.dtype}; fix: round or "
            "argmax the prediction into class values first"
        )
    bad = sorted(set(np.unique(mask).tolist()) - {0} - set(classes))
    if bad:
        raise ValueError(
            f"expected mask values 0 or one of the classes {sorted(classes)}, found {bad}; "
            "fix: add them to the classes or correct the mask"
        )
    if any(not 0 <= v <= MAX_CLASS for v in classes):
        raise ValueError(
            f"expected class values in 0..{MAX_CLASS}, found {sorted(classes)}; fix: "
            "renumber the classes"
        )
    return mask.astype(np.uint8)


def derived_uid(kind: str, series: SeriesInfo, mask: np.ndarray, *parts: object) -> str:
    """A UID that depends only on the series, the mask and ``parts``."""
    digest = hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()
    sources = [kind, series.series_uid, str(mask.shape), digest, *map(repr, parts)]
    return generate_uid(entropy_srcs=sources)


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the patient and study attributes of ``source`` (an image slice) to ``target``."""
    for keyword, default in _PATIENT_STUDY:
        value = source.get(keyword)
        if value is not None:
            setattr(target, keyword, value)
        elif default is not None:
            setattr(target, keyword, default)


def _image_ref(header: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = header.SOPClassUID
    ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return ref


def _read_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        raise InputError(
            path,
            f"expected a readable DICOM image of the series, found an error reading it ({exc})",
            "run discovery again on the folder; remove or re-export the file",
        ) from None


def _geometry(header: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """ImageOrientationPatient, ImagePositionPatient, PixelSpacing, Rows, Columns."""
    try:
        iop = np.array([float(v) for v in header.ImageOrientationPatient], dtype=float)
        ipp = np.array([float(v) for v in header.ImagePositionPatient], dtype=float)
        spacing = np.array([float(v) for v in header.PixelSpacing], dtype=float)
        rows, columns = int(header.Rows), int(header.Columns)
        if iop.shape != (6,) or ipp.shape != (3,) or spacing.shape != (2,):
            raise ValueError("wrong number of values")
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(
            header.filename or "series file",
            "expected an image slice with ImageOrientationPatient (6 values), "
            f"ImagePositionPatient (3), PixelSpacing (2), Rows and Columns, found a missing "
            f"or malformed one ({exc})",
            "build the series with discover_series, which sets such files aside",
        ) from None
    return iop, ipp, spacing, rows, columns


def _read_label_file(path: Path, sop_classes: tuple[UID, ...], kind: str) -> Dataset:
    """Read a label object, checking that it is of one of ``sop_classes``."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(
            path,
            f"expected a readable DICOM {kind} file, found an error reading it ({exc})",
            f"export the {kind} again from its source",
        ) from None
    found = str(ds.get("SOPClassUID", "") or "")
    if found not in sop_classes:
        name = UID(found).name if found else "no SOPClassUID"
        expected = " or ".join(uid.name for uid in sop_classes)
        raise InputError(
            path,
            f"expected a {expected} object ({kind}), found {name}",
            f"point the label path at the {kind} file of this image series",
        )
    return ds


def _check_name_map(name_map: dict[str, int]) -> None:
    bad = sorted({v for v in name_map.values() if not 1 <= v <= MAX_CLASS})
    if bad:
        raise ValueError(
            f"expected class values in 1..{MAX_CLASS} in the name map, found {bad}; fix: "
            "build it with medtl.io.roi_names.build_name_map"
        )


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
