"""Tests for DICOM series writing, discovery and loading (medtl.io.dicom, dicom_write)."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medtl.io.dicom import SeriesInfo, discover_series, load_series
from medtl.io.dicom_write import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, write_series
from medtl.io.errors import InputError
from medtl.io.volume import Volume

SHAPE = (6, 5, 4)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def _affine(matrix: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


AXIAL_RAS = _affine(np.diag([0.8, 1.2, 3.0]), (-10.0, 20.0, -30.5))
LPS = _affine(np.diag([-0.7, -0.9, 2.5]), (40.0, 35.0, 12.0))
OBLIQUE = _affine(
    _rotation("x", 25.0) @ _rotation("z", 35.0) @ np.diag([0.9, 1.1, 2.2]), (-5.0, 7.5, 3.25)
)
AFFINES = {"axial_ras": AXIAL_RAS, "lps": LPS, "oblique": OBLIQUE}


def _integer_volume(affine: np.ndarray, seed: int = 0, shape=SHAPE) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 3000, size=shape).astype(np.float32)
    return Volume(array, affine, modality="MR")


def _uids(tag: str) -> dict[str, str]:
    return {
        "study_uid": generate_uid(entropy_srcs=["study", tag]),
        "series_uid": generate_uid(entropy_srcs=["series", tag]),
        "frame_of_reference_uid": generate_uid(entropy_srcs=["for", tag]),
    }


def _write(volume: Volume, out_dir: Path, tag: str = "a", **kwargs) -> list[Path]:
    args = {
        "patient_id": "PAT-001",
        "patient_name": "Doe^Jane",
        "birth_date": "19700101",
        "study_date": "20240315",
        **_uids(tag),
        **kwargs,
    }
    return write_series(volume, out_dir, **args)


def _digest(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under ``root``."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load_only_series(root: Path) -> Volume:
    series, rejected = discover_series(root)
    assert rejected == []
    assert len(series) == 1
    return load_series(series[0])


def _voxel_to_lps_from_headers(files: list[Path]) -> list[np.ndarray]:
    """Per-file 4x4 matrices mapping (column c, row r, 0, 1) to LPS, by PS3.3 C.7.6.2.1.1."""
    mats = []
    for f in files:
        ds = pydicom.dcmread(f)
        x = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
        y = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
        delta_r, delta_c = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
        m = np.eye(4)
        m[:3, 0] = x * delta_c  # column index c moves along X by the column spacing
        m[:3, 1] = y * delta_r  # row index r moves along Y by the row spacing
        m[:3, 2] = 0.0
        m[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
        mats.append(m)
    return mats


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_same_array_and_affine(tmp_path: Path, name: str) -> None:
    volume = _integer_volume(AFFINES[name])
    _write(volume, tmp_path / "series")

    loaded = _load_only_series(tmp_path)

    assert loaded.array.dtype == np.float32
    assert loaded.array.shape == SHAPE
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-4)
    assert loaded.modality == "MR"
    assert loaded.patient_key == "PAT-001"
    assert loaded.source_uids == {
        "StudyInstanceUID": _uids("a")["study_uid"],
        "SeriesInstanceUID": _uids("a")["series_uid"],
        "FrameOfReferenceUID": _uids("a")["frame_of_reference_uid"],
    }


def test_round_trip_with_rescale(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = rng.uniform(-1000.0, 2000.0, size=SHAPE).astype(np.float32)
    volume = Volume(array, OBLIQUE, modality="CT")
    _write(volume, tmp_path, modality="CT", rescale_slope=0.5, rescale_intercept=-100.0)

    loaded = _load_only_series(tmp_path)

    assert np.max(np.abs(loaded.array - array)) <= 0.25 + 1e-4  # half a stored step
    assert np.all(np.mod(loaded.array + 100.0, 0.5) == 0)  # on the stored grid
    np.testing.assert_allclose(loaded.affine, OBLIQUE, atol=1e-4)
    assert loaded.modality == "CT"


def test_left_handed_affine_comes_back_as_the_same_image_with_slices_reversed(
    tmp_path: Path,
) -> None:
    affine = _affine(np.diag([1.0, 1.5, -2.0]), (0.0, 0.0, 0.0))  # det < 0
    volume = _integer_volume(affine)
    _write(volume, tmp_path)

    loaded = _load_only_series(tmp_path)

    np.testing.assert_array_equal(loaded.array, volume.array[:, :, ::-1])
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, SHAPE[2] - 1
    np.testing.assert_allclose(loaded.affine, volume.affine @ flip, atol=1e-4)


def test_shuffled_files_and_reversed_instance_numbers_sort_by_position(tmp_path: Path) -> None:
    volume = _integer_volume(OBLIQUE, seed=2)
    files = _write(volume, tmp_path / "written")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = [f"slice_{n:02d}.dcm" for n in range(len(files))]
    random.Random(3).shuffle(names)
    for k, (src, name) in enumerate(zip(files, names, strict=True)):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = len(files) - k  # reversed
        ds.save_as(shuffled / name)

    series, rejected = discover_series(shuffled)
    assert rejected == []
    reordered = SeriesInfo(**{**series[0].__dict__, "files": tuple(reversed(series[0].files))})

    for info in (series[0], reordered):
        loaded = load_series(info)
        np.testing.assert_array_equal(loaded.array, volume.array)
        np.testing.assert_allclose(loaded.affine, OBLIQUE, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------


def test_two_series_in_one_folder_are_split_and_sorted(tmp_path: Path) -> None:
    first = _integer_volume(AXIAL_RAS, seed=4)
    second = _integer_volume(LPS, seed=5, shape=(3, 4, 5))
    files_a = _write(first, tmp_path / "a", tag="a", series_number=2, series_description="T2")
    files_b = _write(second, tmp_path / "b", tag="b", series_number=1, series_description="T1")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for prefix, files in (("a", files_a), ("b", files_b)):
        for f in files:
            shutil.copy(f, mixed / f"{prefix}_{f.name}")
    study = _uids("a")["study_uid"]
    for f in files_b:  # same study, so sorting is by SeriesNumber
        ds = pydicom.dcmread(mixed / f"b_{f.name}")
        ds.StudyInstanceUID = study
        ds.save_as(mixed / f"b_{f.name}")

    series, rejected = discover_series(mixed)

    assert rejected == []
    assert [s.description for s in series] == ["T1", "T2"]
    assert [len(s.files) for s in series] == [5, 4]
    assert series[1].series_uid == _uids("a")["series_uid"]
    assert all(s.study_uid == study and s.patient_key == "PAT-001" for s in series)
    assert all(s.modality == "MR" for s in series)
    np.testing.assert_array_equal(load_series(series[0]).array, second.array)
    np.testing.assert_array_equal(load_series(series[1]).array, first.array)


def _sr_file(path: Path) -> None:
    """A minimal Comprehensive SR object: DICOM, but no image."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["sr"])
    ds.Modality = "SR"
    ds.PatientID = "PAT-001"
    ds.StudyInstanceUID = _uids("a")["study_uid"]
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["sr-series"])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_bad_files_are_rejected_and_good_series_still_found(tmp_path: Path) -> None:
    root = tmp_path / "in"
    files = _write(_integer_volume(AXIAL_RAS), root / "good")
    bad = root / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image\n")
    data = files[0].read_bytes()
    (bad / "half.dcm").write_bytes(data[: len(data) // 2])
    (bad / "short_pixels.dcm").write_bytes(data[:-10])  # header intact, pixels cut
    _sr_file(bad / "report.dcm")
    (root / ".DS_Store").write_bytes(b"\0\1\2")  # hidden: skipped silently
    (root / ".hidden").mkdir()
    shutil.copy(files[0], root / ".hidden" / "copy.dcm")
    before = _digest(root)

    series, rejected = discover_series(root)

    assert len(series) == 1
    assert series[0].files == tuple(files)
    by_name = {Path(r.path).name: r for r in rejected}
    assert sorted(by_name) == ["half.dcm", "notes.txt", "report.dcm", "short_pixels.dcm"]
    assert "expected a DICOM file" in by_name["notes.txt"].reason
    assert "truncated" in by_name["half.dcm"].reason
    assert "truncated" in by_name["short_pixels.dcm"].reason
    assert "structured report" in by_name["report.dcm"].reason
    assert all(r.fix for r in rejected)
    assert "remove the file" in by_name["notes.txt"].fix
    assert _digest(root) == before


def test_empty_folder_gives_empty_results(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden_file").write_text("x")
    assert discover_series(tmp_path / "empty") == ([], [])


def test_missing_folder_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected a folder"):
        discover_series(tmp_path / "nope")


# ---------------------------------------------------------------------------------------
# Load errors
# ---------------------------------------------------------------------------------------


def test_single_slice_series_raises_with_path_and_fix(tmp_path: Path) -> None:
    _write(_integer_volume(AXIAL_RAS, shape=(6, 5, 1)), tmp_path / "one")
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError) as info:
        load_series(series[0])

    message = str(info.value)
    assert str(tmp_path / "one") in message
    assert "expected at least 2 slices" in message and "found 1" in message
    assert "How to fix:" in message and info.value.fix


def test_mixed_orientation_raises(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(files[2])
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="ImageOrientationPatient") as info:
        load_series(series[0])
    assert info.value.path == str(tmp_path)


def test_mixed_grid_raises(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    ds = pydicom.dcmread(files[1])
    ds.PixelSpacing = [2.0, 2.0]
    ds.save_as(files[1])
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="PixelSpacing"):
        load_series(series[0])


def test_duplicate_position_raises(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    ds.save_as(files[1])
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="one slice per position"):
        load_series(series[0])


# ---------------------------------------------------------------------------------------
# Written headers
# ---------------------------------------------------------------------------------------


def test_written_headers(tmp_path: Path) -> None:
    volume = _integer_volume(AXIAL_RAS)
    files = _write(volume, tmp_path, series_number=7, series_description="T1 AX")

    assert [f.name for f in files] == ["IM0000.dcm", "IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]
    uids = _uids("a")
    datasets = [pydicom.dcmread(f) for f in files]
    ds = datasets[0]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == MR_IMAGE_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PatientID == "PAT-001"
    assert str(ds.PatientName) == "Doe^Jane"
    assert ds.PatientBirthDate == "19700101"
    assert ds.StudyDate == "20240315"
    assert ds.StudyInstanceUID == uids["study_uid"]
    assert ds.SeriesInstanceUID == uids["series_uid"]
    assert ds.FrameOfReferenceUID == uids["frame_of_reference_uid"]
    assert (ds.SeriesNumber, ds.SeriesDescription, ds.Modality) == (7, "T1 AX", "MR")
    assert "StudyID" in ds and "AccessionNumber" in ds
    # Array axis i (size 6, 0.8 mm) is the column index; j (size 5, 1.2 mm) the row index.
    assert (ds.Rows, ds.Columns) == (5, 6)
    assert [float(v) for v in ds.PixelSpacing] == [1.2, 0.8]
    # RAS +i is LPS -x; RAS +j is LPS -y.
    assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 3.0
    assert (ds.BitsAllocated, ds.PixelRepresentation) == (16, 1)
    assert [d.InstanceNumber for d in datasets] == [1, 2, 3, 4]
    assert len({d.SOPInstanceUID for d in datasets}) == 4
    np.testing.assert_allclose(
        [[float(v) for v in d.ImagePositionPatient] for d in datasets],
        [[10.0, -20.0, -30.5 + 3.0 * k] for k in range(4)],
    )
    np.testing.assert_array_equal(ds.pixel_array, volume.array[:, :, 0].T)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_ct_sop_class_and_deterministic_bytes(tmp_path: Path) -> None:
    volume = _integer_volume(OBLIQUE)
    first = _write(volume, tmp_path / "one", modality="CT")
    second = _write(volume, tmp_path / "two", modality="CT")

    assert pydicom.dcmread(first[0]).SOPClassUID == CT_IMAGE_STORAGE
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in second]


def test_oblique_geometry_matches_the_dicom_standard(tmp_path: Path) -> None:
    """Every voxel's position from IOP/IPP/PixelSpacing (C.7.6.2.1.1) matches the affine."""
    volume = _integer_volume(OBLIQUE, seed=6)
    files = _write(volume, tmp_path)
    per_slice = _voxel_to_lps_from_headers(files)
    ras_from_lps = np.diag([-1.0, -1.0, 1.0, 1.0])

    for k, (f, m) in enumerate(zip(files, per_slice, strict=True)):
        pixels = pydicom.dcmread(f).pixel_array  # [row, column]
        for c in range(SHAPE[0]):
            for r in range(SHAPE[1]):
                from_headers = ras_from_lps @ m @ np.array([c, r, 0.0, 1.0])
                from_affine = volume.affine @ np.array([c, r, k, 1.0])
                np.testing.assert_allclose(from_headers, from_affine, atol=1e-4)
                assert pixels[r, c] == volume.array[c, r, k]


def test_writer_rejects_values_that_do_not_fit_int16(tmp_path: Path) -> None:
    volume = Volume(np.full(SHAPE, 40000.0, np.float32), AXIAL_RAS)
    with pytest.raises(ValueError, match="int16"):
        _write(volume, tmp_path)
    assert not list(tmp_path.rglob("*.dcm"))


def test_writer_rejects_sheared_in_plane_axes(tmp_path: Path) -> None:
    affine = AXIAL_RAS.copy()
    affine[0, 1] = 0.5
    with pytest.raises(ValueError, match="orthogonal"):
        _write(_integer_volume(affine), tmp_path)
