"""Tests for RTSTRUCT rasterising and writing (medtl.io.rtstruct) and ROI name matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medtl.io.dicom import SeriesInfo, load_series
from medtl.io.dicom.uids import RTSTRUCT_STORAGE
from medtl.io.dicom_write import write_series
from medtl.io.roi_names import build_name_map, match_name
from medtl.io.rtstruct import rasterise_rtstruct
from medtl.io.rtstruct_write import write_rtstruct
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError

SHAPE = (24, 24, 12)
RADIUS = 9.0  # mm


def _rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def _affine(matrix: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


AXIAL_LPS = _affine(np.diag([-0.9, -1.1, 2.5]), (12.0, 8.0, -20.0))
OBLIQUE = _affine(
    _rotation("x", 20.0) @ _rotation("z", 30.0) @ np.diag([0.9, 1.1, 2.5]), (-4, 6, 2)
)


def _series(tmp_path: Path, affine: np.ndarray, tag: str = "img") -> tuple[SeriesInfo, Volume]:
    uids = {
        "study_uid": generate_uid(entropy_srcs=["study", tag]),
        "series_uid": generate_uid(entropy_srcs=["series", tag]),
        "frame_of_reference_uid": generate_uid(entropy_srcs=["for", tag]),
    }
    files = write_series(
        Volume(np.zeros(SHAPE, np.float32), affine, modality="MR"),
        tmp_path / tag,
        patient_id="P1",
        patient_name="Doe^Jane",
        birth_date="19700101",
        study_date="20240101",
        **uids,
    )
    series = SeriesInfo(uids["series_uid"], uids["study_uid"], "P1", "MR", "", tuple(files))
    return series, load_series(series)


def _world(image: Volume, voxel: np.ndarray) -> np.ndarray:
    """RAS mm of voxel coordinates (n, 3)."""
    return voxel @ image.affine[:3, :3].T + image.affine[:3, 3]


def _lps(ras: np.ndarray) -> np.ndarray:
    return ras * np.array([-1.0, -1.0, 1.0])


def _centres(image: Volume) -> np.ndarray:
    grid = np.indices(image.shape).reshape(3, -1).T.astype(float)
    return _world(image, grid).reshape(*image.shape, 3)


def _centre(image: Volume) -> np.ndarray:
    return _world(image, (np.array(image.shape, float)[None] - 1) / 2)[0]


def _circle(image: Volume, k: int, centre: np.ndarray, radius: float, n: int = 64):
    """LPS points of a circle in the plane of slice k around centre's projection, or None."""
    step = image.affine[:3, 2]
    normal = step / np.linalg.norm(step)
    origin = _world(image, np.array([[0.0, 0.0, k]]))[0]
    d = float((centre - origin) @ normal)
    if abs(d) >= radius:
        return None
    rho = np.sqrt(radius**2 - d**2)
    u = image.affine[:3, 0] / np.linalg.norm(image.affine[:3, 0])
    v = image.affine[:3, 1] / np.linalg.norm(image.affine[:3, 1])
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    points = centre - d * normal + rho * (np.cos(theta) * u + np.sin(theta) * v)
    return _lps(points)


def _square(image: Volume, k: int, centre_ij: tuple[float, float], half: float) -> np.ndarray:
    ci, cj = centre_ij
    corners = [(ci - half, cj - half), (ci + half, cj - half), (ci + half, cj + half)]
    corners.append((ci - half, cj + half))
    voxel = np.array([[i, j, k] for i, j in corners], dtype=float)
    return _lps(_world(image, voxel))


def _write_rtstruct(
    path: Path,
    series: SeriesInfo,
    image: Volume,
    rois: dict[str, list[np.ndarray]],
    *,
    frame_uid: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """A minimal RTSTRUCT with the given ROI contours (LPS points), written with pydicom."""
    frame_uid = frame_uid or image.source_uids["FrameOfReferenceUID"]
    ds = Dataset()
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "test"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series_uid or series.series_uid
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = frame_uid
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.4f}" for v in np.ravel(points)]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.sum(a & b)) / float(a.sum() + b.sum())


NAME_MAP = {"tumour": 1}


# --- roi_names -------------------------------------------------------------------------


def test_names_match_ignoring_case_spaces_underscores_and_hyphens():
    name_map = build_name_map({0: "background", 1: "tumour", 2: "heart"}, {"tumour": ["GTV"]})
    assert [match_name(n, name_map) for n in ("GTV", "g t v", "Tumour", "HEART")] == [1, 1, 1, 2]
    assert match_name("background", name_map) is None
    name_map = build_name_map({1: "tumour"}, {"Tumour": ["gtv_primary"]})
    assert match_name("GTV-Primary", name_map) == match_name("gtv primary", name_map) == 1


@pytest.mark.parametrize(
    ("classes", "synonyms", "message"),
    [
        ({1: "tumour"}, {"liver": ["LIV"]}, "keyed by a class name"),
        ({1: "tumour", 2: "node"}, {"tumour": ["GTV"], "node": ["gtv"]}, "one class"),
        ({300: "tumour"}, None, "0..255"),
    ],
)
def test_bad_name_config_is_refused(classes, synonyms, message):
    with pytest.raises(ValueError, match=message):
        build_name_map(classes, synonyms)


# --- rasterise_rtstruct ----------------------------------------------------------------


@pytest.mark.parametrize("affine", [AXIAL_LPS, OBLIQUE], ids=["axial_lps", "oblique"])
def test_analytic_sphere_is_rasterised_with_high_dice(tmp_path, affine):
    series, image = _series(tmp_path, affine)
    centre = _centre(image)
    circles = [_circle(image, k, centre, RADIUS) for k in range(SHAPE[2])]
    path = _write_rtstruct(
        tmp_path / "rs.dcm", series, image, {"tumour": [c for c in circles if c is not None]}
    )
    result = rasterise_rtstruct(path, image, series, NAME_MAP)
    expected = np.linalg.norm(_centres(image) - centre, axis=-1) <= RADIUS
    assert result.array.dtype == np.uint8
    assert result.array.shape == SHAPE
    assert result.used == {"tumour": 1} and result.unmatched == []
    assert set(np.unique(result.array).tolist()) == {0, 1}
    assert _dice(result.array == 1, expected) >= 0.97


def test_ring_keeps_its_hole_and_separate_contours_are_all_filled(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    centre = _centre(image)
    k = 6
    rois = {
        "ring": [_circle(image, k, centre, 8.0), _circle(image, k, centre, 4.0)],
        "pair": [_square(image, 2, (5, 5), 2.5), _square(image, 2, (17, 17), 2.5)],
    }
    path = _write_rtstruct(tmp_path / "rs.dcm", series, image, rois)
    result = rasterise_rtstruct(path, image, series, build_name_map({1: "ring", 2: "pair"}, None))
    distance = np.linalg.norm(_centres(image)[:, :, k] - centre, axis=-1)
    ring = result.array[:, :, k]
    assert np.all(ring[distance < 3.5] == 0)
    assert np.all(ring[(distance > 4.5) & (distance < 7.5)] == 1)
    assert np.all(ring[distance > 8.5] == 0)
    pair = result.array[:, :, 2]
    assert np.all(pair[3:8, 3:8] == 2) and np.all(pair[15:20, 15:20] == 2)
    assert pair.sum() == 2 * 2 * 25
    assert np.count_nonzero(result.array[:, :, [0, 1, 3, 4, 5, 7, 8, 9, 10, 11]]) == 0


def test_names_map_through_synonyms_and_unmatched_are_reported(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    rois = {
        "GTV_primary": [_square(image, 4, (10, 10), 3.5)],
        "Heart": [_square(image, 5, (10, 10), 3.5)],
    }
    path = _write_rtstruct(tmp_path / "rs.dcm", series, image, rois)
    name_map = build_name_map({1: "tumour"}, {"tumour": ["gtv primary"]})
    result = rasterise_rtstruct(path, image, series, name_map)
    assert result.used == {"GTV_primary": 1}
    assert result.unmatched == ["Heart"]
    assert np.all(result.array[7:14, 7:14, 4] == 1)
    assert np.count_nonzero(result.array) == 49


def test_overlapping_classes_the_higher_value_wins(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    rois = {"a": [_square(image, 3, (8, 8), 3.5)], "b": [_square(image, 3, (11, 8), 3.5)]}
    path = _write_rtstruct(tmp_path / "rs.dcm", series, image, rois)
    result = rasterise_rtstruct(path, image, series, build_name_map({1: "a", 2: "b"}, None))
    assert np.all(result.array[5:8, 5:12, 3] == 1)
    assert np.all(result.array[8:15, 5:12, 3] == 2)


@pytest.mark.parametrize("wrong", ["frame_uid", "series_uid"])
def test_rtstruct_of_another_series_is_refused(tmp_path, wrong):
    series, image = _series(tmp_path, AXIAL_LPS)
    path = _write_rtstruct(
        tmp_path / "rs.dcm",
        series,
        image,
        {"tumour": [_square(image, 4, (10, 10), 3.0)]},
        **{wrong: generate_uid()},
    )
    with pytest.raises(InputError) as err:
        rasterise_rtstruct(path, image, series, NAME_MAP)
    assert "label geometry does not match its image" in err.value.reason
    assert series.series_uid in err.value.reason or image.source_uids["FrameOfReferenceUID"] in (
        err.value.reason
    )
    assert "pair the label file" in err.value.fix


def test_contour_between_slices_is_refused(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    square = _square(image, 4, (10, 10), 3.0) + np.array([0.0, 0.0, 0.5 * 2.5])
    path = _write_rtstruct(tmp_path / "rs.dcm", series, image, {"tumour": [square]})
    with pytest.raises(InputError, match="contour not on an image slice") as err:
        rasterise_rtstruct(path, image, series, NAME_MAP)
    assert err.value.fix


def test_non_rtstruct_file_is_refused(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    with pytest.raises(InputError, match="expected a RT Structure Set Storage object"):
        rasterise_rtstruct(series.files[0], image, series, NAME_MAP)


# --- write_rtstruct ----------------------------------------------------------------------


def _two_class_mask(image: Volume) -> np.ndarray:
    centre = _centre(image)
    distance = np.linalg.norm(_centres(image) - centre, axis=-1)
    mask = np.zeros(SHAPE, np.uint8)
    mask[distance <= 10.0] = 1
    mask[distance <= 4.0] = 2  # a hole in class 1
    mask[1:5, 18:22, 2:5] = 2  # a separate blob touching nothing
    mask[0:3, 0:3, 0] = 1  # touching the grid's corner
    return mask


@pytest.mark.parametrize("affine", [AXIAL_LPS, OBLIQUE], ids=["axial_lps", "oblique"])
def test_write_rtstruct_round_trip(tmp_path, affine):
    series, image = _series(tmp_path, affine)
    mask = _two_class_mask(image)
    classes = {0: "background", 1: "tumour", 2: "node", 3: "absent"}
    out = write_rtstruct(mask, series, classes, tmp_path / "out" / "rs.dcm", label="pred")
    result = rasterise_rtstruct(out, image, series, build_name_map(classes, None))
    for value in (1, 2):
        assert _dice(result.array == value, mask == value) >= 0.95
    assert np.array_equal(result.array, mask)  # iso-lines pass between voxel centres
    assert result.used == {"tumour": 1, "node": 2, "absent": 3} and result.unmatched == []

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == RTSTRUCT_STORAGE and ds.Modality == "RTSTRUCT"
    assert ds.PatientID == "P1" and ds.StudyInstanceUID == series.study_uid
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == image.source_uids["FrameOfReferenceUID"]
    ref_series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == series.series_uid
    slice_uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in series.files}
    assert {str(r.ReferencedSOPInstanceUID) for r in ref_series.ContourImageSequence} == (
        slice_uids
    )
    contours = [c for item in ds.ROIContourSequence for c in item.get("ContourSequence", [])]
    assert contours and all(c.ContourGeometricType == "CLOSED_PLANAR" for c in contours)
    assert {str(c.ContourImageSequence[0].ReferencedSOPInstanceUID) for c in contours} <= (
        slice_uids
    )
    assert [o.ReferencedROINumber for o in ds.RTROIObservationsSequence] == [1, 2, 3]
    again = write_rtstruct(mask, series, classes, tmp_path / "again.dcm", label="pred")
    assert again.read_bytes() == out.read_bytes()


def test_write_rtstruct_refuses_a_mask_off_the_grid_or_with_unknown_values(tmp_path):
    series, _ = _series(tmp_path, AXIAL_LPS)
    with pytest.raises(ValueError, match="shape"):
        write_rtstruct(np.zeros((4, 4, 4), np.uint8), series, {1: "a"}, tmp_path / "x.dcm")
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"found \[7\]"):
        write_rtstruct(mask, series, {1: "a"}, tmp_path / "x.dcm")


def test_label_on_a_resampled_series_says_why_it_cannot_be_placed(tmp_path):
    """Variable slice spacing is resampled at load; the label's slices are not the image's."""
    from medtl.io.dicom import discover_series, load_series_with_notes
    from medtl.io.label_objects import series_grid
    from tests.support import dicom_builders

    dicom_builders.write_series_at(tmp_path / "ct", [0.0, 5.0, 10.0, 17.0, 24.0])
    (series,), _ = discover_series(tmp_path / "ct")
    loaded = load_series_with_notes(series)
    assert loaded.notes and loaded.volume.shape[2] == 6

    with pytest.raises(InputError, match="variable slice spacing") as info:
        series_grid(series, loaded.volume, where=tmp_path / "RS.dcm")
    assert "constant slice spacing" in info.value.fix


def test_write_rtstruct_round_trip_on_ge_rounded_positions(tmp_path):
    """Positions written to 0.1 mm: contours go where the loaded image's slices are."""
    from medtl.io.dicom import discover_series
    from tests.support import dicom_builders

    dicom_builders.write_series_at(
        tmp_path / "mr", 7.013 * np.arange(20), orientation="oblique", decimals=1
    )
    (series,), _ = discover_series(tmp_path / "mr")
    image = load_series(series)
    mask = np.zeros(image.shape, np.uint8)
    mask[2:6, 1:5, :] = 1
    classes = {0: "background", 1: "tumour"}
    out = write_rtstruct(mask, series, classes, tmp_path / "rs.dcm")

    result = rasterise_rtstruct(out, image, series, build_name_map(classes, None))
    assert np.array_equal(result.array, mask)


def test_writing_a_label_on_a_resampled_series_is_an_input_error(tmp_path):
    from medtl.io.dicom import discover_series
    from tests.support import dicom_builders

    dicom_builders.write_series_at(tmp_path / "ct", [0.0, 5.0, 10.0, 17.0, 24.0])
    (series,), _ = discover_series(tmp_path / "ct")
    image = load_series(series)  # resampled: 6 slices from 5 files

    with pytest.raises(InputError, match="variable slice spacing") as info:
        write_rtstruct(np.zeros(image.shape, np.uint8), series, {1: "a"}, tmp_path / "rs.dcm")
    assert "NIfTI" in info.value.fix
