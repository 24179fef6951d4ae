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
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from medtl.io.dicom import (
    DICOMDIR_REASON,
    RTSTRUCT_STORAGE,
    SEGMENTATION_STORAGE,
    SeriesInfo,
    discover,
    discover_series,
    load_series,
    load_series_checked,
    load_series_with_notes,
)
from medtl.io.dicom import pixels as dicom_pixels
from medtl.io.dicom.uids import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE
from medtl.io.dicom_write import write_series
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError
from tests.support.dicom_builders import rotation

SHAPE = (6, 5, 4)


def _affine(matrix: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


AXIAL_RAS = _affine(np.diag([0.8, 1.2, 3.0]), (-10.0, 20.0, -30.5))
LPS = _affine(np.diag([-0.7, -0.9, 2.5]), (40.0, 35.0, 12.0))
OBLIQUE = _affine(
    rotation("x", 25.0) @ rotation("z", 35.0) @ np.diag([0.9, 1.1, 2.2]), (-5.0, 7.5, 3.25)
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
    (root / ".DS_Store").write_bytes(b"\0\1\2")  # hidden: not read, listed
    (root / ".hidden").mkdir()
    shutil.copy(files[0], root / ".hidden" / "copy.dcm")  # inside a hidden folder: not read
    before = _digest(root)

    series, rejected = discover_series(root)

    assert len(series) == 1
    assert series[0].files == tuple(files)
    by_name = {Path(r.path).name: r for r in rejected}
    assert sorted(by_name) == [
        ".DS_Store",
        ".hidden",
        "half.dcm",
        "notes.txt",
        "report.dcm",
        "short_pixels.dcm",
    ]
    assert "hidden file" in by_name[".DS_Store"].reason
    assert "hidden folder" in by_name[".hidden"].reason
    assert "expected a DICOM file" in by_name["notes.txt"].reason
    assert "truncated" in by_name["half.dcm"].reason
    assert "truncated" in by_name["short_pixels.dcm"].reason
    assert "structured report" in by_name["report.dcm"].reason
    assert all(r.fix for r in rejected)
    assert "remove the file" in by_name["notes.txt"].fix
    assert _digest(root) == before


def test_empty_folder_gives_empty_results(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)

    inventory = discover(tmp_path / "empty")

    assert (inventory.series, inventory.labels, inventory.rejected) == ([], [], [])
    assert inventory.files_seen == 0 and inventory.temporaries == []
    assert inventory.summary().startswith("0 files looked at: 0 image series")


def test_unfinished_temporaries_are_skipped_and_counted_not_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pull or write killed mid-way leaves `.<name>.<random>.tmp<suffix>` behind."""
    files = _write(_integer_volume(AXIAL_RAS), tmp_path / "cache" / "study" / "series")
    temporary = files[0].parent / ".1.2.3.dcm.a1b2c3d4.tmp.2.3.dcm"
    temporary.write_bytes(b"")  # killed before a byte was written
    (tmp_path / "cache" / ".medtl-pull.json").write_text("{}")  # the pull's own record
    (tmp_path / "cache" / ".DS_Store").write_bytes(b"\0")

    with caplog.at_level("WARNING", logger="medtl.io.dicom.discovery"):
        inventory = discover(tmp_path / "cache")

    assert inventory.temporaries == [temporary]
    assert [Path(r.path).name for r in inventory.rejected] == [".DS_Store"]
    assert len(inventory.series) == 1 and inventory.series[0].files == tuple(files)
    assert inventory.files_seen == len(files) + 1  # the series and .DS_Store
    assert "1 unfinished medtl temporaries skipped" in inventory.summary()
    assert "unfinished temporary" in caplog.text and temporary.name in caplog.text


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


def test_mixed_orientation_without_majority_raises(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    for f in files[2:]:  # two axial, two coronal slices: no majority to keep
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.save_as(f)
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="ImageOrientationPatient") as info:
        load_series(series[0])
    assert info.value.path == str(tmp_path)
    assert "no majority" in info.value.reason


def test_mixed_grid_raises(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    ds = pydicom.dcmread(files[1])
    ds.PixelSpacing = [2.0, 2.0]
    ds.save_as(files[1])
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="PixelSpacing"):
        load_series(series[0])


def test_conflicting_duplicate_position_raises_naming_both_files(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    ds.save_as(files[1])
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="one slice per position") as info:
        load_series(series[0])
    assert str(files[0]) in info.value.reason and str(files[1]) in info.value.reason
    assert "different images" in info.value.reason


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


# ---------------------------------------------------------------------------------------
# Real-data defects: scouts, duplicates, gaps, uneven spacing, tilt
# ---------------------------------------------------------------------------------------


def _copy_as_new_instance(src: Path, dst: Path, tag: str, **changes) -> Path:
    """A copy of ``src`` with a new SOPInstanceUID and the given attributes changed."""
    ds = pydicom.dcmread(src)
    uid = generate_uid(entropy_srcs=["copy", tag])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _scout_changes(kind: str, template: Path) -> dict:
    ds = pydicom.dcmread(template)
    if kind == "image_type":  # same geometry, but ImageType says LOCALIZER
        return {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}
    if kind == "orientation":  # a coronal image among axial slices
        return {"ImageOrientationPatient": [-1, 0, 0, 0, 0, -1]}
    rows, columns = 3, 4  # other Rows x Columns
    pixels = np.arange(rows * columns, dtype="<i2").reshape(rows, columns)
    assert (ds.Rows, ds.Columns) != (rows, columns)
    return {"Rows": rows, "Columns": columns, "PixelData": pixels.tobytes()}


@pytest.mark.parametrize("kind", ["image_type", "orientation", "grid"])
def test_scout_mixed_into_series_is_set_aside_and_the_rest_loads(tmp_path: Path, kind: str) -> None:
    volume = _integer_volume(AXIAL_RAS, seed=7, shape=(6, 5, 5))
    files = _write(volume, tmp_path)
    scout = _copy_as_new_instance(
        files[2], tmp_path / "ZZ_scout.dcm", kind, **_scout_changes(kind, files[2])
    )
    inventory = discover(tmp_path)
    assert inventory.rejected == [] and len(inventory.series[0].files) == 6

    loaded, set_aside = load_series_checked(inventory.series[0])

    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.affine, AXIAL_RAS, atol=1e-4)
    assert [r.path for r in set_aside] == [str(scout)]
    assert set_aside[0].reason.startswith("localizer/scout image mixed into")
    assert set_aside[0].fix
    np.testing.assert_array_equal(load_series(inventory.series[0]).array, volume.array)


def test_pixel_identical_duplicate_is_set_aside(tmp_path: Path) -> None:
    volume = _integer_volume(OBLIQUE, seed=8)
    files = _write(volume, tmp_path)
    copy = _copy_as_new_instance(files[1], tmp_path / "IM0001_copy.dcm", "dup")
    series, rejected = discover_series(tmp_path)
    assert rejected == []

    loaded, set_aside = load_series_checked(series[0])

    np.testing.assert_array_equal(loaded.array, volume.array)
    assert len(set_aside) == 1 and set_aside[0].path == str(copy)
    assert set_aside[0].reason.startswith(f"duplicate of {files[1].name}")


def test_missing_slice_raises_naming_the_gap(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS, shape=(6, 5, 6)), tmp_path)
    files[3].unlink()  # slices at z = -30.5 + 3k mm; k = 3 (z = -21.5) is missing
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="missing slices") as info:
        load_series(series[0])
    assert "between z=-24.50 and z=-18.50 mm" in info.value.reason
    assert "expected spacing 3 mm" in info.value.reason
    assert info.value.fix


def test_non_uniform_spacing_is_resampled_with_a_note(tmp_path: Path) -> None:
    volume = _integer_volume(AXIAL_RAS, shape=(6, 5, 5))
    files = _write(volume, tmp_path)
    ds = pydicom.dcmread(files[2])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 0.2]  # steps 3, 3.2, 2.8, 3 mm
    ds.save_as(files[2])
    series, _ = discover_series(tmp_path)

    loaded = load_series_with_notes(series[0])

    # 12 mm from first to last slice at (at most) the smallest step, 2.8 mm: 5 steps of 2.4.
    acquired = np.array([0.0, 3.0, 6.2, 9.0, 12.0])
    targets = 2.4 * np.arange(6)
    expected = np.apply_along_axis(lambda v: np.interp(targets, acquired, v), 2, volume.array)
    assert loaded.volume.shape == (6, 5, 6)
    # float32 holds values below 4096 to within 4096 * 2**-24: the interpolation is exact.
    np.testing.assert_allclose(loaded.volume.array, expected, rtol=0, atol=4096 * 2.0**-24)
    np.testing.assert_allclose(loaded.volume.spacing, (0.8, 1.2, 2.4), atol=1e-9)
    np.testing.assert_allclose(loaded.volume.affine[:3, 3], AXIAL_RAS[:3, 3], atol=1e-9)
    assert len(loaded.notes) == 1
    assert "resampled to 6 equidistant slices 2.4 mm apart" in loaded.notes[0]
    assert "2.8 to 3.2 mm" in loaded.notes[0]


def test_gantry_tilt_raises_with_angle_and_fix(tmp_path: Path) -> None:
    tilted = AXIAL_RAS.copy()
    tilted[1, 2] = 3.0 * np.tan(np.deg2rad(12.0))  # each slice shifted along y: 12 degrees
    _write(_integer_volume(tilted), tmp_path)
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="gantry tilt of 12.00 degrees") as info:
        load_series(series[0])
    assert "dcm2niix" in info.value.fix


def test_small_rounding_of_positions_is_not_a_tilt(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    ds = pydicom.dcmread(files[1])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x + 1e-4, y - 1e-4, z]
    ds.save_as(files[1])
    series, _ = discover_series(tmp_path)

    np.testing.assert_allclose(load_series(series[0]).affine, AXIAL_RAS, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Multi-frame (enhanced) images
# ---------------------------------------------------------------------------------------

ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def _item(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _enhanced_file(
    slices: list[Path], path: Path, order: list[int], *, per_frame_rescale: bool = False
) -> Path:
    """One Enhanced MR file holding the given single-frame slices as frames, in ``order``.

    Geometry goes into the functional groups: PixelMeasures, PlaneOrientation and (unless
    ``per_frame_rescale``) PixelValueTransformation shared; PlanePosition per frame.
    """
    datasets = [pydicom.dcmread(f) for f in slices]
    first = datasets[0]
    ds = Dataset()
    for element in first:
        if element.keyword not in _PER_SLICE_KEYWORDS:
            ds.add(element)
    uid = generate_uid(entropy_srcs=["enhanced", str(path.name)])
    ds.SOPClassUID = ENHANCED_MR_STORAGE
    ds.SOPInstanceUID = uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(order)
    rescale = _item(RescaleSlope=first.RescaleSlope, RescaleIntercept=first.RescaleIntercept)
    rescale.RescaleType = "US"
    shared = _item(
        PixelMeasuresSequence=[
            _item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness)
        ],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=first.ImageOrientationPatient)],
    )
    if not per_frame_rescale:
        shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for n, k in enumerate(order):
        item = _item(
            PlanePositionSequence=[_item(ImagePositionPatient=datasets[k].ImagePositionPatient)],
            FrameContentSequence=[_item(InStackPositionNumber=n + 1)],
        )
        if per_frame_rescale:
            item.PixelValueTransformationSequence = [rescale]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(datasets[k].PixelData for k in order)
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


_PER_SLICE_KEYWORDS = {
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "InstanceNumber",
    "SOPInstanceUID",
    "PixelData",
}


@pytest.mark.parametrize("per_frame_rescale", [False, True])
def test_enhanced_multiframe_loads_like_the_single_frame_series(
    tmp_path: Path, per_frame_rescale: bool
) -> None:
    rng = np.random.default_rng(9)
    array = rng.uniform(-1000.0, 2000.0, size=SHAPE).astype(np.float32)
    files = _write(
        Volume(array, OBLIQUE), tmp_path / "single", rescale_slope=0.5, rescale_intercept=-100.0
    )
    enhanced = _enhanced_file(
        files,
        tmp_path / "multi" / "enhanced.dcm",
        [2, 0, 3, 1],
        per_frame_rescale=per_frame_rescale,
    )
    single = _load_only_series(tmp_path / "single")

    inventory = discover(tmp_path / "multi")

    assert inventory.rejected == [] and inventory.labels == []
    assert [s.files for s in inventory.series] == [(enhanced,)]
    loaded, set_aside = load_series_checked(inventory.series[0])
    assert set_aside == []
    np.testing.assert_array_equal(loaded.array, single.array)
    np.testing.assert_allclose(loaded.affine, single.affine, atol=1e-6)
    np.testing.assert_allclose(loaded.affine, OBLIQUE, atol=1e-4)
    assert loaded.source_uids == single.source_uids


def test_enhanced_multiframe_with_a_missing_frame_raises(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS, shape=(6, 5, 5)), tmp_path / "single")
    _enhanced_file(files, tmp_path / "multi" / "enhanced.dcm", [0, 1, 3, 4])
    series, _ = discover_series(tmp_path / "multi")

    with pytest.raises(InputError, match="missing slices") as info:
        load_series(series[0])
    assert "frame 2 and enhanced.dcm frame 3" in info.value.reason


def test_multiframe_without_plane_positions_is_rejected(tmp_path: Path) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path / "single")
    path = _enhanced_file(files, tmp_path / "multi" / "cine.dcm", [0, 1, 2, 3])
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)

    inventory = discover(tmp_path / "multi")

    assert inventory.series == []
    assert "plane position per frame" in inventory.rejected[0].reason


# ---------------------------------------------------------------------------------------
# Compressed pixel data
# ---------------------------------------------------------------------------------------

COMPRESSED = {
    "rle": "1.2.840.10008.1.2.5",
    "jpeg2000_lossless": "1.2.840.10008.1.2.4.90",
    "jpeg_ls_lossless": "1.2.840.10008.1.2.4.80",
}


def _compress_files(files: list[Path], syntax: str) -> None:
    from pydicom.pixels import get_encoder

    if not get_encoder(syntax).is_available:
        pytest.skip(f"no encoder for {syntax} installed")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(f, enforce_file_format=True)


@pytest.mark.parametrize("name", sorted(COMPRESSED))
def test_compressed_series_decodes(tmp_path: Path, name: str) -> None:
    volume = _integer_volume(OBLIQUE, seed=10, shape=(40, 33, 3))  # JPEG 2000 needs >= 32
    files = _write(volume, tmp_path)
    _compress_files(files, COMPRESSED[name])
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == COMPRESSED[name]

    loaded = _load_only_series(tmp_path)

    np.testing.assert_array_equal(loaded.array, volume.array)


def test_deflated_series_loads(tmp_path: Path) -> None:
    volume = _integer_volume(AXIAL_RAS, seed=11)
    files = _write(volume, tmp_path)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)

    np.testing.assert_array_equal(_load_only_series(tmp_path).array, volume.array)


def test_missing_decoder_names_the_transfer_syntax_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _write(_integer_volume(AXIAL_RAS), tmp_path)
    _compress_files(files, COMPRESSED["rle"])
    monkeypatch.setattr(dicom_pixels, "_decoder_available", lambda syntax: False)
    series, _ = discover_series(tmp_path)

    with pytest.raises(InputError, match="RLE Lossless") as info:
        load_series(series[0])
    assert "pip install pylibjpeg" in info.value.fix


def test_file_without_preamble_and_meta_is_read(tmp_path: Path) -> None:
    volume = _integer_volume(AXIAL_RAS, seed=12)
    files = _write(volume, tmp_path)
    ds = pydicom.dcmread(files[1])
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    ds.save_as(files[1], implicit_vr=True, little_endian=True)  # old ACR-NEMA style
    assert files[1].read_bytes()[128:132] != b"DICM"

    np.testing.assert_array_equal(_load_only_series(tmp_path).array, volume.array)


# ---------------------------------------------------------------------------------------
# Inventory: label objects, DICOMDIR, parallel discovery
# ---------------------------------------------------------------------------------------


def _meta(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _rtstruct_file(path: Path, series_uids: list[str], tag: str = "a") -> Path:
    """A minimal RT Structure Set referring to ``series_uids`` of study ``tag``."""
    uids = _uids(tag)
    ds = _item(
        SOPClassUID=RTSTRUCT_STORAGE,
        SOPInstanceUID=generate_uid(entropy_srcs=["rtstruct", str(path)]),
        Modality="RTSTRUCT",
        PatientID="PAT-001",
        StudyInstanceUID=uids["study_uid"],
        SeriesInstanceUID=generate_uid(entropy_srcs=["rtstruct-series", str(path)]),
        StructureSetLabel="contours",
    )
    study = _item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
        ReferencedSOPInstanceUID=uids["study_uid"],
        RTReferencedSeriesSequence=[_item(SeriesInstanceUID=uid) for uid in series_uids],
    )
    ds.ReferencedFrameOfReferenceSequence = [
        _item(
            FrameOfReferenceUID=uids["frame_of_reference_uid"],
            RTReferencedStudySequence=[study],
        )
    ]
    _meta(ds, path)
    ds.save_as(path, enforce_file_format=True)
    return path


def _seg_file(path: Path, series_uid: str, tag: str = "a") -> Path:
    """A minimal DICOM-SEG (one 2 x 2 binary frame) referring to ``series_uid``."""
    uids = _uids(tag)
    ds = _item(
        SOPClassUID=SEGMENTATION_STORAGE,
        SOPInstanceUID=generate_uid(entropy_srcs=["seg", str(path)]),
        Modality="SEG",
        PatientID="PAT-001",
        StudyInstanceUID=uids["study_uid"],
        SeriesInstanceUID=generate_uid(entropy_srcs=["seg-series", str(path)]),
        FrameOfReferenceUID=uids["frame_of_reference_uid"],
        ReferencedSeriesSequence=[_item(SeriesInstanceUID=series_uid)],
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        Rows=2,
        Columns=2,
        BitsAllocated=1,
        BitsStored=1,
        HighBit=0,
        PixelRepresentation=0,
        NumberOfFrames=1,
    )
    ds.PixelData = b"\x09\x00"
    ds["PixelData"].VR = "OB"
    _meta(ds, path)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rtstruct_and_seg_are_labels_with_their_referenced_series(tmp_path: Path) -> None:
    _write(_integer_volume(AXIAL_RAS), tmp_path / "image")
    series_uid = _uids("a")["series_uid"]
    other = generate_uid(entropy_srcs=["other"])
    rtstruct = _rtstruct_file(tmp_path / "labels" / "rs.dcm", [series_uid, other, series_uid])
    seg = _seg_file(tmp_path / "labels" / "seg.dcm", series_uid)

    inventory = discover(tmp_path)

    assert inventory.rejected == []
    assert len(inventory.series) == 1
    by_kind = {label.kind: label for label in inventory.labels}
    assert sorted(by_kind) == ["RTSTRUCT", "SEG"]
    assert by_kind["RTSTRUCT"].path == rtstruct and by_kind["SEG"].path == seg
    assert by_kind["RTSTRUCT"].referenced_series_uids == (series_uid, other)
    assert by_kind["SEG"].referenced_series_uids == (series_uid,)
    for label in inventory.labels:
        assert label.patient_key == "PAT-001"
        assert label.study_uid == _uids("a")["study_uid"]
        assert label.frame_of_reference_uid == _uids("a")["frame_of_reference_uid"]
        assert label.sop_instance_uid == pydicom.dcmread(label.path).SOPInstanceUID
    assert discover_series(tmp_path) == (inventory.series, [])  # labels are not rejections


def test_dicomdir_is_skipped_with_its_reason(tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    volume = _integer_volume(AXIAL_RAS, seed=13)
    files = _write(volume, tmp_path / "written")
    file_set = FileSet()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyTime, ds.StudyID = "120000", "1"  # required by the DICOMDIR STUDY record
        file_set.add(ds)
    file_set.write(tmp_path / "media")  # DICOMDIR + PT000000/ST000000/SE000000/IM00000x

    inventory = discover(tmp_path / "media")

    assert [Path(r.path).name for r in inventory.rejected] == ["DICOMDIR"]
    assert inventory.rejected[0].reason == DICOMDIR_REASON and inventory.rejected[0].fix
    assert len(inventory.series) == 1 and len(inventory.series[0].files) == len(files)
    np.testing.assert_array_equal(load_series(inventory.series[0]).array, volume.array)


def test_parallel_discovery_gives_the_same_inventory_as_one_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for n, affine in enumerate((AXIAL_RAS, LPS, OBLIQUE)):
        _write(_integer_volume(affine, seed=n), tmp_path / f"p{n}" / "s", tag=f"t{n}")
    _rtstruct_file(tmp_path / "rs.dcm", [_uids("t0")["series_uid"]], tag="t0")
    _sr_file(tmp_path / "report.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM")

    serial = discover(tmp_path, workers=1)
    parallel = discover(tmp_path, workers=4, progress=True)

    assert parallel == serial
    assert len(serial.series) == 3 and len(serial.labels) == 1 and len(serial.rejected) == 2
    assert "DICOM headers" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers"):
        discover(tmp_path, workers=0)


def test_series_are_grouped_by_patient_and_study(tmp_path: Path) -> None:
    volume = _integer_volume(AXIAL_RAS)
    _write(volume, tmp_path / "b", patient_id="PAT-B")
    files = _write(volume, tmp_path / "a", patient_id="PAT-A")
    # The same SeriesInstanceUID under another patient (a bad anonymisation) stays apart.
    inventory = discover(tmp_path)

    assert [s.patient_key for s in inventory.series] == ["PAT-A", "PAT-B"]
    assert inventory.series[0].files == tuple(files)
