"""Tests for DICOM SEG writing and reading (medtl.io.dicomseg)."""

from __future__ import annotations

import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pack_bits
from pydicom.uid import generate_uid

from medtl.io.dicom import SeriesInfo, load_series
from medtl.io.dicom.uids import SEGMENTATION_STORAGE
from medtl.io.dicom_write import write_series
from medtl.io.dicomseg import read_seg, write_seg
from medtl.io.roi_names import build_name_map
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError

SHAPE = (24, 24, 12)
CLASSES = {0: "background", 1: "tumour", 2: "oedema"}
NAME_MAP = build_name_map(CLASSES, None)


def _affine(matrix: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


AXIAL_LPS = _affine(np.diag([-0.9, -1.1, 2.5]), (12.0, 8.0, -20.0))
# Slice step against the normal: file IM0000 is the last array slice after loading.
REVERSED = _affine(np.diag([-0.9, -1.1, -2.5]), (12.0, 8.0, 20.0))
OBLIQUE = _affine(_rotation_x(25.0) @ np.diag([0.9, 1.1, 2.5]), (-4.0, 6.0, 2.0))


def _series(
    tmp_path: Path, affine: np.ndarray, tag: str = "img", shuffle: bool = False
) -> tuple[SeriesInfo, Volume]:
    uids = {
        "study_uid": generate_uid(entropy_srcs=["study", tag]),
        "series_uid": generate_uid(entropy_srcs=["series", tag]),
        "frame_of_reference_uid": generate_uid(entropy_srcs=["for", tag]),
    }
    files = write_series(
        Volume(np.zeros(SHAPE, np.float32), affine, modality="CT"),
        tmp_path / tag,
        patient_id="P1",
        patient_name="Doe^Jane",
        birth_date="19700101",
        study_date="20240101",
        modality="CT",
        **uids,
    )
    if shuffle:
        random.Random(0).shuffle(files)
    series = SeriesInfo(uids["series_uid"], uids["study_uid"], "P1", "CT", "", tuple(files))
    return series, load_series(series)


def _mask() -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    centre = np.array([11.0, 12.0, 6.0])[:, None, None, None]
    distance = np.sqrt(
        np.sum(((grid - centre) * np.array([0.9, 1.1, 2.5])[:, None, None, None]) ** 2, 0)
    )
    mask = np.zeros(SHAPE, np.uint8)
    mask[distance <= 9.0] = 2
    mask[distance <= 5.0] = 1
    mask[2:6, 15:20, 1:3] = 1  # asymmetric along every axis
    return mask


@pytest.mark.parametrize(
    ("affine", "shuffle"),
    [(AXIAL_LPS, False), (REVERSED, True), (OBLIQUE, True)],
    ids=["axial_lps", "reversed_shuffled", "oblique_shuffled"],
)
def test_seg_round_trip_is_exact(tmp_path, affine, shuffle):
    series, image = _series(tmp_path, affine, shuffle=shuffle)
    mask = _mask()
    out = write_seg(mask, series, CLASSES, tmp_path / "out" / "seg.dcm", algorithm="unet")
    result = read_seg(out, image, series, NAME_MAP)
    assert result.array.dtype == np.uint8
    assert np.array_equal(result.array, mask)
    assert result.used == {"tumour": 1, "oedema": 2} and result.unmatched == []

    ds = pydicom.dcmread(out)
    seg = hd.seg.Segmentation.from_dataset(ds)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert ds.FrameOfReferenceUID == image.source_uids["FrameOfReferenceUID"]
    assert ds.PatientID == "P1" and ds.StudyInstanceUID == series.study_uid
    assert ds.Manufacturer == "medtl"
    labels = [s.SegmentLabel for s in ds.SegmentSequence]
    assert labels == ["tumour", "oedema"]
    segment = ds.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "unet"


def _rewrite_frames(path: Path, order: list[int], keep_references: bool) -> Path:
    """The SEG at ``path`` with its frames permuted (and source references dropped)."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)[order]
    groups = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    if not keep_references:
        for item in groups:
            del item.DerivationImageSequence
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = pack_bits(frames)
    out = path.with_name("permuted.dcm")
    ds.save_as(out)
    return out


@pytest.mark.parametrize("keep_references", [True, False], ids=["by_source_image", "by_position"])
def test_frames_in_any_order_are_placed_on_their_slices(tmp_path, keep_references):
    series, image = _series(tmp_path, AXIAL_LPS)
    mask = _mask()
    out = write_seg(mask, series, CLASSES, tmp_path / "seg.dcm")
    frames = int(pydicom.dcmread(out).NumberOfFrames)
    order = list(range(frames))[::-1]
    random.Random(1).shuffle(order)
    permuted = _rewrite_frames(out, order, keep_references)
    result = read_seg(permuted, image, series, NAME_MAP)
    assert np.array_equal(result.array, mask)


def test_unmatched_segments_are_reported(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    out = write_seg(_mask(), series, CLASSES, tmp_path / "seg.dcm")
    result = read_seg(out, image, series, build_name_map({1: "tumour"}, None))
    assert result.used == {"tumour": 1} and result.unmatched == ["oedema"]
    assert np.array_equal(result.array, np.where(_mask() == 1, 1, 0))


def test_seg_of_another_series_is_refused(tmp_path):
    series, _ = _series(tmp_path, AXIAL_LPS, tag="a")
    other_series, other_image = _series(tmp_path, AXIAL_LPS, tag="b")
    out = write_seg(_mask(), series, CLASSES, tmp_path / "seg.dcm")
    with pytest.raises(InputError) as err:
        read_seg(out, other_image, other_series, NAME_MAP)
    assert "label geometry does not match its image" in err.value.reason
    assert series.series_uid in err.value.reason and other_series.series_uid in err.value.reason
    assert err.value.fix


def test_empty_classes_give_segments_and_bad_masks_are_refused(tmp_path):
    series, image = _series(tmp_path, AXIAL_LPS)
    out = write_seg(np.zeros(SHAPE, np.uint8), series, CLASSES, tmp_path / "seg.dcm")
    result = read_seg(out, image, series, NAME_MAP)
    assert not result.array.any() and result.used == {"tumour": 1, "oedema": 2}
    with pytest.raises(ValueError, match="shape"):
        write_seg(np.zeros((2, 2, 2), np.uint8), series, CLASSES, tmp_path / "x.dcm")
