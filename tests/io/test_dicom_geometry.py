"""Geometry of loaded DICOM series (medtl.io.dicom) against the standard and dcm2niix.

Each series is written with :func:`medtl.io.dicom_write.write_series` from a known affine.
The expected patient coordinates of a pixel are computed from the files' own headers by
DICOM PS3.3 C.7.6.2.1.1 (ImagePositionPatient + in-plane offsets along the
ImageOrientationPatient cosines), independently of the loader, and converted LPS -> RAS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medtl.io.dicom import discover_series, load_series
from medtl.io.dicom_write import write_series
from medtl.io.volume import Volume

SHAPE = (8, 7, 5)
SPACING = (0.7, 1.3, 2.6)  # non-unit, anisotropic
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
TOL_MM = 1e-3


def _rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
    }[axis]


def _affine(directions: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    """RAS affine with unit ``directions`` as columns, scaled by SPACING."""
    affine = np.eye(4)
    affine[:3, :3] = directions @ np.diag(SPACING)
    affine[:3, 3] = origin
    return affine


# Columns: direction of array axes i, j, k in RAS; all right-handed.
GEOMETRIES = {
    "axial": _affine(np.eye(3), (-12.0, 30.5, -40.25)),
    "sagittal": _affine(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]]), (5.0, 20.0, 60.0)),
    "coronal": _affine(np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]), (-30.0, 12.0, 45.0)),
    "oblique": _affine(_rotation("x", 20.0) @ _rotation("y", -30.0), (3.5, -7.25, 11.0)),
}
CASES = [*((name, False) for name in GEOMETRIES), ("axial", True), ("oblique", True)]
CASE_IDS = [f"{name}{'-reversed' if reversed_ else ''}" for name, reversed_ in CASES]


def _write_case(folder: Path, name: str, reverse: bool) -> tuple[Volume, list[Path]]:
    """Write the series; with ``reverse``, file names and InstanceNumbers run backwards."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    # Even values minus 1000: exactly representable with slope 2, intercept -1000.
    array = (2.0 * rng.integers(0, 1500, size=SHAPE) - 1000.0).astype(np.float32)
    volume = Volume(array, GEOMETRIES[name], modality="CT")
    files = write_series(
        volume,
        folder,
        patient_id="GEO-1",
        patient_name="Geo^Metry",
        birth_date="",
        study_uid=generate_uid(entropy_srcs=["geo-study", name]),
        series_uid=generate_uid(entropy_srcs=["geo-series", name, str(reverse)]),
        frame_of_reference_uid=generate_uid(entropy_srcs=["geo-for", name]),
        study_date="20240101",
        modality="CT",
        rescale_slope=2.0,
        rescale_intercept=-1000.0,
    )
    if reverse:
        datasets = [pydicom.dcmread(f) for f in files]
        for n, ds in enumerate(reversed(datasets)):
            ds.InstanceNumber = n + 1
            ds.save_as(files[n], enforce_file_format=True)
    return volume, files


def _patient_ras(ds: pydicom.Dataset, column: int, row: int) -> np.ndarray:
    """RAS position of pixel (column, row) of a slice, by PS3.3 C.7.6.2.1.1."""
    iop = [float(v) for v in ds.ImageOrientationPatient]
    x, y = np.array(iop[:3]), np.array(iop[3:])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    return RAS_FROM_LPS @ (ipp + x * column_spacing * column + y * row_spacing * row)


def _load(folder: Path) -> Volume:
    series, rejected = discover_series(folder)
    assert rejected == [] and len(series) == 1
    return load_series(series[0])


@pytest.mark.parametrize(("name", "reverse"), CASES, ids=CASE_IDS)
def test_affine_maps_voxels_to_dicom_patient_coordinates(
    tmp_path: Path, name: str, reverse: bool
) -> None:
    _, files = _write_case(tmp_path / "series", name, reverse)
    loaded = _load(tmp_path / "series")
    inverse = np.linalg.inv(loaded.affine)
    pixels_checked = 0

    for f in files:
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array  # [row, column]
        values = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for column, row in [(0, 0), (SHAPE[0] - 1, 0), (0, SHAPE[1] - 1), (5, 3), (7, 6)]:
            expected = _patient_ras(ds, column, row)
            ijk = (inverse @ np.append(expected, 1.0))[:3]
            voxel = np.rint(ijk).astype(int)
            assert np.all(voxel >= 0) and np.all(voxel < np.array(loaded.shape))
            mapped = (loaded.affine @ np.append(voxel, 1.0))[:3]
            np.testing.assert_allclose(mapped, expected, atol=TOL_MM)
            assert loaded.array[tuple(voxel)] == values[row, column]
            pixels_checked += 1
    assert pixels_checked == 5 * len(files)


@pytest.mark.parametrize(("name", "reverse"), CASES, ids=CASE_IDS)
def test_loaded_volume_matches_the_written_one(tmp_path: Path, name: str, reverse: bool) -> None:
    volume, _ = _write_case(tmp_path / "series", name, reverse)
    loaded = _load(tmp_path / "series")

    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=TOL_MM)


def _dcm2niix() -> str | None:
    """The dcm2niix binary beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "dcm2niix"
    return str(beside) if beside.is_file() else shutil.which("dcm2niix")


@pytest.mark.parametrize(("name", "reverse"), CASES, ids=CASE_IDS)
def test_same_image_as_dcm2niix(tmp_path: Path, name: str, reverse: bool) -> None:
    binary = _dcm2niix()
    if binary is None:
        pytest.skip("dcm2niix is not installed")
    _write_case(tmp_path / "series", name, reverse)
    out = tmp_path / "nifti"
    out.mkdir()
    result = subprocess.run(
        [binary, "-z", "n", "-b", "n", "-f", "out", "-o", str(out), str(tmp_path / "series")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(out.glob("*.nii"))
    assert [p.name for p in written] == ["out.nii"], result.stdout

    theirs = nib.as_closest_canonical(nib.load(written[0]))
    ours = nib.as_closest_canonical(_load(tmp_path / "series").to_nifti())

    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), atol=1e-3)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=TOL_MM)
