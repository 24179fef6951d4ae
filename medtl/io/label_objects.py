"""What reading and writing RTSTRUCT and DICOM-SEG share: the series grid and the checks.

Both directions need the slices of the image series in array order: :func:`series_grid`
pairs each slice index ``k`` with its file's header by ImagePositionPatient. Writing checks
the mask against that grid (:func:`check_mask`), derives reproducible UIDs
(:func:`derived_uid`) and copies the patient and study (:func:`copy_patient_study`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from medtl.io.dicom import SeriesInfo, position_rounding
from medtl.io.roi_names import MAX_CLASS
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError

GEOMETRY_MISMATCH = "label geometry does not match its image"
FIX_PAIRING = (
    "pair the label file with the image series it was drawn on (same SeriesInstanceUID and "
    "FrameOfReferenceUID); if it was drawn on another series, export it again on this one"
)

_SLICE_TOL = 0.1  # voxels: a contour or slice position this close to an integer index fits
_ORIENTATION_TOL = 1e-3
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
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
        return _grid_from_headers(headers, geometry, frame_of_reference, rounding)
    where = Path(where) if where is not None else Path(series.series_uid)
    grid = SeriesGrid(
        np.asarray(image.affine, float), image.shape, (), frame_of_reference, rounding
    )
    slots = _slots_on_image(grid, headers, geometry, where)
    return SeriesGrid(grid.affine, grid.shape, tuple(slots), frame_of_reference, rounding)


_Geometry = tuple[np.ndarray, np.ndarray, np.ndarray, int, int]


def _grid_from_headers(
    headers: list[Dataset], geometry: list[_Geometry], frame_of_reference: str, rounding: float
) -> SeriesGrid:
    """The grid as :func:`medtl.io.dicom.load_series` builds it from the slice headers."""
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


def _slots_on_image(
    grid: SeriesGrid, headers: list[Dataset], geometry: list[_Geometry], where: Path
) -> list[Dataset | None]:
    """Each slice of ``grid`` (an image's) with the one series file that lies on it."""
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
                f"{grid.shape[1]} rows oriented {format_values(expected_iop)} (the image), found "
                f"{columns} x {rows} oriented {format_values(iop)} in series file {name}",
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
    return slots


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


def image_ref(header: Dataset) -> Dataset:
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


def _geometry(header: Dataset) -> _Geometry:
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


def read_label_file(path: Path, sop_classes: tuple[UID, ...], kind: str) -> Dataset:
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


def check_name_map(name_map: dict[str, int]) -> None:
    bad = sorted({v for v in name_map.values() if not 1 <= v <= MAX_CLASS})
    if bad:
        raise ValueError(
            f"expected class values in 1..{MAX_CLASS} in the name map, found {bad}; fix: "
            "build it with medtl.io.roi_names.build_name_map"
        )


def format_values(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
