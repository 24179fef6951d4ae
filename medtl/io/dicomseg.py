"""Read a DICOM Segmentation (SEG) onto an image grid, and write a mask as SEG.

Reading (:func:`read_seg`) uses pydicom only and handles BINARY, FRACTIONAL (thresholded at
half the maximum value) and LABELMAP segmentations (Segmentation Storage and Label Map
Segmentation Storage). Each frame is placed on the image slice of the source image it
references (DerivationImageSequence), or, when it references none of the series' images, by
its ImagePositionPatient; the order of the frames in the file does not matter. Segments are
matched to classes by SegmentLabel (see :mod:`medtl.io.roi_names`); where segments of two
classes overlap the higher class value wins.

Writing (:func:`write_seg`) uses :class:`highdicom.seg.Segmentation` (BINARY) with the
series' slices as source images.

Example:
    >>> name_map = build_name_map({1: "tumour"}, None)  # doctest: +SKIP
    >>> labels = read_seg(Path("seg.dcm"), load_series(series), series, name_map)  # doctest: +SKIP
    >>> write_seg(labels.array, series, {1: "tumour"}, Path("copy.dcm"))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medtl.io.dicom import SeriesInfo
from medtl.io.dicom.uids import LABEL_MAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE
from medtl.io.label_objects import (
    FIX_PAIRING,
    GEOMETRY_MISMATCH,
    LabelConversion,
    SeriesGrid,
    check_mask,
    check_name_map,
    derived_uid,
    format_values,
    read_label_file,
    series_grid,
)
from medtl.io.roi_names import match_name
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_save_dicom

TISSUE = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
LOCAL_SCHEME = "99MEDTL"  # private coding scheme for class codes (PS3.16 section 8.2)

_ORIENTATION_TOL = 1e-3
_SEG_SERIES_NUMBER = 902
# Type 2 attributes highdicom reads from the source images; absent ones are set empty.
_SOURCE_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def read_seg(
    path: Path, image: Volume, series: SeriesInfo, name_map: dict[str, int]
) -> LabelConversion:
    """Read the segments of a SEG that match a class onto the image grid.

    Args:
        path: the SEG file.
        image: the volume loaded from ``series`` with :func:`medtl.io.dicom.load_series`.
        series: the image series the SEG was made on.
        name_map: from :func:`medtl.io.roi_names.build_name_map`.

    Returns:
        The uint8 label map on the image grid, the segment labels used and unmatched.

    Raises:
        InputError: the file is not a readable SEG, it references another series or frame of
            reference, its frames do not fit the image grid, or its pixels cannot be decoded.
    """
    path = Path(path)
    check_name_map(name_map)
    ds = read_label_file(path, (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE), "SEG")
    grid = series_grid(series, image, where=path)
    image_for = image.source_uids.get("FrameOfReferenceUID") or grid.frame_of_reference_uid
    _check_seg_references(path, ds, series, grid, image_for)
    _check_frame_geometry(path, ds, grid)

    segment_class: dict[int, int] = {}
    used: dict[str, int] = {}
    unmatched: list[str] = []
    for segment in ds.get("SegmentSequence", []):
        name = str(segment.get("SegmentLabel", "") or "")
        value = match_name(name, name_map)
        if value is None:
            unmatched.append(name)
        else:
            used[name] = value
            segment_class[int(segment.SegmentNumber)] = value

    frames = _frames(path, ds)
    seg_type = str(ds.get("SegmentationType", "BINARY") or "BINARY").upper()
    threshold = 0.5 * float(ds.get("MaximumFractionalValue", 1) or 1)
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    class_masks = {value: np.zeros(grid.shape, dtype=bool) for value in set(segment_class.values())}
    sop_index = grid.sop_index
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [Dataset()] * len(frames)
    if len(per_frame) != len(frames):
        raise InputError(
            path,
            f"expected one PerFrameFunctionalGroupsSequence item per frame ({len(frames)}), "
            f"found {len(per_frame)}",
            "export the SEG again from its source; the file is corrupt",
        )
    for f, (frame, groups) in enumerate(zip(frames, per_frame, strict=True)):
        k = _frame_slice(path, f, groups, shared, grid, sop_index)
        if seg_type == "LABELMAP":
            for number, value in segment_class.items():
                class_masks[value][:, :, k] |= (frame == number).T
            continue
        number = _segment_number(path, f, groups, shared)
        value = segment_class.get(number)
        if value is None:
            continue
        on = frame >= threshold if seg_type == "FRACTIONAL" else frame > 0
        class_masks[value][:, :, k] |= on.T
    array = np.zeros(grid.shape, dtype=np.uint8)
    for value in sorted(class_masks):
        array[class_masks[value]] = value
    return LabelConversion(array, used, unmatched)


def _check_seg_references(
    path: Path, ds: Dataset, series: SeriesInfo, grid: SeriesGrid, image_for: str
) -> None:
    """Raise unless the SEG was made on ``series`` (and in its frame of reference)."""
    referenced = {
        str(item.get("SeriesInstanceUID", "") or "")
        for item in ds.get("ReferencedSeriesSequence", []) or []
    }
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []) or []:
        for item in study.get("ReferencedSeriesSequence", []) or []:
            referenced.add(str(item.get("SeriesInstanceUID", "") or ""))
    referenced.discard("")
    if referenced and series.series_uid not in referenced:
        raise InputError(
            path,
            f"{GEOMETRY_MISMATCH}: the SEG references series {', '.join(sorted(referenced))}, "
            f"the image is series {series.series_uid}",
            FIX_PAIRING,
        )
    if not referenced:
        sources = {
            uid
            for groups in ds.get("PerFrameFunctionalGroupsSequence", []) or []
            for uid in _source_uids(groups)
        }
        if sources and not sources & set(grid.sop_index):
            raise InputError(
                path,
                f"{GEOMETRY_MISMATCH}: the SEG's frames reference images "
                f"{', '.join(sorted(sources)[:3])}{' ...' if len(sources) > 3 else ''}, none "
                f"of which is in the image series {series.series_uid}",
                FIX_PAIRING,
            )
    seg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    if seg_for and image_for and seg_for != image_for:
        raise InputError(
            path,
            f"{GEOMETRY_MISMATCH}: the SEG is in frame of reference {seg_for}, the image is in "
            f"frame of reference {image_for}",
            FIX_PAIRING,
        )


def _check_frame_geometry(path: Path, ds: Dataset, grid: SeriesGrid) -> None:
    """Raise unless the SEG's frames have the image's rows, columns and orientation."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if (columns, rows) != grid.shape[:2]:
        raise InputError(
            path,
            f"{GEOMETRY_MISMATCH}: expected frames of {grid.shape[0]} columns x "
            f"{grid.shape[1]} rows (the image), found {columns} x {rows}",
            FIX_PAIRING + "; tiled or cropped SEGs are not supported",
        )
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    orientation = _first(shared.get("PlaneOrientationSequence")) if shared else None
    iop = orientation.get("ImageOrientationPatient") if orientation else None
    if iop:
        found = np.array([float(v) for v in iop], dtype=float)
        expected = grid.lps_cosines()
        if not np.allclose(found, expected, atol=_ORIENTATION_TOL):
            raise InputError(
                path,
                f"{GEOMETRY_MISMATCH}: expected frames oriented {format_values(expected)} "
                f"(the image), found {format_values(found)}",
                FIX_PAIRING,
            )


def _frames(path: Path, ds: Dataset) -> np.ndarray:
    """The stored frames as ``(frames, rows, columns)``."""
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # no decoder for the transfer syntax, or corrupt pixel data
        raise InputError(
            path,
            f"expected decodable SEG pixel data, found data that could not be decoded ({exc})",
            "install the pylibjpeg decoders (a medtl dependency) or export the SEG uncompressed",
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return pixels.reshape(frames, int(ds.Rows), int(ds.Columns))


def _frame_slice(
    path: Path,
    f: int,
    groups: Dataset,
    shared: Dataset | None,
    grid: SeriesGrid,
    sop_index: dict[str, int],
) -> int:
    """The image slice of frame ``f``: by referenced source image, else by position."""
    for uid in _source_uids(groups):
        if uid in sop_index:
            return sop_index[uid]
    position = _first(groups.get("PlanePositionSequence")) or _first(
        shared.get("PlanePositionSequence") if shared else None
    )
    ipp = position.get("ImagePositionPatient") if position else None
    if not ipp:
        raise InputError(
            path,
            f"expected frame {f + 1} to reference an image of the series or to carry an "
            "ImagePositionPatient, found neither",
            FIX_PAIRING,
        )
    i, j, k = grid.to_voxel(np.array([[float(v) for v in ipp]]))[0]
    slot = int(np.rint(k))
    if np.any(np.abs([i, j, k - slot]) > grid.slack()) or not 0 <= slot < grid.shape[2]:
        raise InputError(
            path,
            f"{GEOMETRY_MISMATCH}: frame {f + 1} lies at voxel ({i:.2f}, {j:.2f}, {k:.2f}) of "
            f"the image, expected (0, 0, k) with k one of 0..{grid.shape[2] - 1}",
            FIX_PAIRING,
        )
    return slot


def _segment_number(path: Path, f: int, groups: Dataset, shared: Dataset | None) -> int:
    item = _first(groups.get("SegmentIdentificationSequence")) or _first(
        shared.get("SegmentIdentificationSequence") if shared else None
    )
    if item is None or item.get("ReferencedSegmentNumber") is None:
        raise InputError(
            path,
            f"expected frame {f + 1} to name its segment (SegmentIdentificationSequence), "
            "found none",
            "export the SEG again from its source; the file is corrupt",
        )
    return int(item.ReferencedSegmentNumber)


def _source_uids(groups: Dataset) -> list[str]:
    return [
        str(source.ReferencedSOPInstanceUID)
        for derivation in groups.get("DerivationImageSequence", []) or []
        for source in derivation.get("SourceImageSequence", []) or []
        if source.get("ReferencedSOPInstanceUID")
    ]


def _first(sequence) -> Dataset | None:
    return sequence[0] if sequence else None


def write_seg(
    mask: np.ndarray,
    series: SeriesInfo,
    classes: dict[int, str],
    out: Path,
    *,
    algorithm: str = "medtl",
    version: str = "0",
    property_codes: dict[int, tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] | None = None,
) -> Path:
    """Write a label map as a BINARY DICOM SEG referencing ``series``.

    Every class of ``classes`` except 0 becomes one segment (SegmentLabel = class name,
    AUTOMATIC, algorithm family Artificial Intelligence), numbered 1, 2, ... in increasing
    class value; a class absent from ``mask`` gives a segment without frames. Empty frames
    are omitted. Unless ``property_codes`` gives them, the segmented property category is
    SCT 85756007 "Tissue" and the type a local code (scheme ``99MEDTL``, value ``C<class>``,
    meaning the class name). The SOPInstanceUID and SeriesInstanceUID depend only on the
    input; highdicom stamps ContentDate/ContentTime with the current time.

    Args:
        mask: integer label map indexed ``[i, j, k]`` on the grid of ``series`` (as
            :func:`medtl.io.dicom.load_series` returns it); values must be 0 or a class.
        series: the image series the mask belongs to.
        classes: class value -> name, e.g. ``{0: "background", 1: "tumour"}``.
        out: the file to write; its folder is created if needed.
        algorithm: algorithm name (AlgorithmName, ManufacturerModelName).
        version: algorithm version (AlgorithmVersion, SoftwareVersions).
        property_codes: class value -> (category, type) codes, e.g.
            ``{1: (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm)}``.

    Returns:
        ``out``.

    Raises:
        ValueError: ``mask`` does not fit the series grid or holds values that are no class.
        InputError: a series file cannot be read.

    Example:
        >>> write_seg(pred, series, {1: "tumour"}, Path("seg.dcm"))  # doctest: +SKIP
    """
    grid = series_grid(series)
    mask = check_mask(mask, grid, classes)
    values = sorted(v for v in classes if v != 0)
    if not values:
        raise ValueError(
            f"expected at least one class besides 0, found {classes}; fix: pass the classes "
            "of the model"
        )
    descriptions, lookup = _segment_descriptions(
        values, classes, algorithm, version, property_codes
    )
    sources = [_source_copy(h) for h in grid.headers]
    # [column, row, slice] -> (slice, row, column), frames in the order of `sources`.
    pixels = np.ascontiguousarray(lookup[mask].transpose(2, 1, 0))
    sop_uid = derived_uid("seg", series, mask, classes, algorithm, version, property_codes)
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(entropy_srcs=[sop_uid, "series"]),
        series_number=_SEG_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="medtl",
        manufacturer_model_name=algorithm,
        software_versions=version,
        device_serial_number="0",
        series_description=f"{algorithm} {version}"[:64],
    )
    return atomic_save_dicom(segmentation, Path(out))


def _segment_descriptions(
    values: list[int],
    classes: dict[int, str],
    algorithm: str,
    version: str,
    property_codes: dict[int, tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] | None,
) -> tuple[list[hd.seg.SegmentDescription], np.ndarray]:
    """One segment per class value (numbered 1, 2, ... in the order of ``values``), and
    the lookup table from class value to segment number."""
    family = hd.sr.CodedConcept.from_code(codes.cid7162.ArtificialIntelligence)
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=family, version=version
    )
    descriptions: list[hd.seg.SegmentDescription] = []
    lookup = np.zeros(256, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        lookup[value] = number
        category, kind = (property_codes or {}).get(value) or (
            TISSUE,
            hd.sr.CodedConcept(f"C{value}", LOCAL_SCHEME, classes[value][:64]),
        )
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=classes[value][:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
            )
        )
    return descriptions, lookup


def _source_copy(header: Dataset) -> Dataset:
    """A copy of a slice header with the type 2 attributes highdicom reads present."""
    source = copy.deepcopy(header)
    for keyword in _SOURCE_TYPE2:
        if keyword not in source:
            setattr(source, keyword, "")
    return source
