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
import SimpleITK as sitk
from pydicom.uid import generate_uid

from medtl.io.dicom import discover_series, load_series, load_series_with_notes
from medtl.io.dicom_write import write_series
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError
from tests.support import dicom_builders
from tests.support.dicom_builders import rotation

SHAPE = (8, 7, 5)
SPACING = (0.7, 1.3, 2.6)  # non-unit, anisotropic
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
TOL_MM = 1e-3


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
    "oblique": _affine(rotation("x", 20.0) @ rotation("y", -30.0), (3.5, -7.25, 11.0)),
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


# ---------------------------------------------------------------------------------------
# Against SimpleITK, and positions rounded in the header (GE writes 0.1 mm)
# ---------------------------------------------------------------------------------------

GE_SPACING = 7.013  # mm: an oblique 20-slice GE MR series; steps alternate 6.96 / 7.07 mm
SITK_SERIES = {
    # name: (orientation, offsets along the normal (mm), decimals of ImagePositionPatient)
    "axial": ("axial", 2.5 * np.arange(6), None),
    "oblique": ("oblique", 2.5 * np.arange(6), None),
    "oblique-ge-rounded": ("oblique", GE_SPACING * np.arange(20), 1),
}


def _corners(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    return [
        (i, j, k) for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)
    ]


def _simpleitk(folder: Path):
    """SimpleITK's reading of the series in ``folder`` (GDCM orders the files by position)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    warnings = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # it warns for non-uniform steps
    try:
        return reader.Execute()
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(warnings)


def _simpleitk_ras(image, index: tuple[int, int, int]) -> np.ndarray:
    """RAS mm of a voxel of a SimpleITK image (index order x, y, z = column, row, slice)."""
    return RAS_FROM_LPS @ np.array(image.TransformIndexToPhysicalPoint(index))


def _medtl_ras(volume: Volume, index: tuple[int, int, int]) -> np.ndarray:
    return (volume.affine @ np.append(np.array(index, dtype=float), 1.0))[:3]


@pytest.mark.parametrize("name", sorted(SITK_SERIES))
def test_same_corners_and_voxels_as_simpleitk(tmp_path: Path, name: str) -> None:
    orientation, offsets, decimals = SITK_SERIES[name]
    dicom_builders.write_series_at(
        tmp_path / "series", offsets, orientation=orientation, decimals=decimals, tag=name
    )
    ours = _load(tmp_path / "series")
    theirs = _simpleitk(tmp_path / "series")

    # Both take the first slice's ImagePositionPatient as the origin. Positions written in
    # full (16 characters) leave only float64 arithmetic between the two; positions rounded
    # to 0.1 mm are known to +-0.05 mm per coordinate, so two readers may place a slice
    # that far apart (SimpleITK spaces the slices by first-to-last / (n - 1), medtl by a
    # least-squares fit through all of them).
    tolerance = 0.05 if decimals == 1 else 1e-6
    assert ours.shape == tuple(theirs.GetSize())
    for corner in _corners(ours.shape):
        np.testing.assert_allclose(
            _medtl_ras(ours, corner), _simpleitk_ras(theirs, corner), atol=tolerance
        )
    # GetArrayFromImage is indexed [slice, row, column]; medtl's arrays [column, row, slice].
    np.testing.assert_array_equal(ours.array, sitk.GetArrayFromImage(theirs).transpose(2, 1, 0))


def test_variable_spacing_has_the_corners_and_end_slices_of_simpleitk(tmp_path: Path) -> None:
    """SimpleITK keeps the 7 slices (spaced first-to-last / 6, with a warning); medtl
    resamples to 9 equidistant ones. Both span the acquired slices: same 8 corners, and the
    first and last slices are the acquired ones in both."""
    offsets = [0.0, 5.0, 10.0, 15.0, 22.0, 29.0, 36.0]
    dicom_builders.write_series_at(tmp_path / "series", offsets, orientation="oblique")
    ours = _load(tmp_path / "series")
    theirs = _simpleitk(tmp_path / "series")

    size = tuple(theirs.GetSize())
    assert ours.shape == (*size[:2], 9)
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k_ours, k_theirs in ((0, 0), (8, size[2] - 1)):
                np.testing.assert_allclose(
                    _medtl_ras(ours, (i, j, k_ours)),
                    _simpleitk_ras(theirs, (i, j, k_theirs)),
                    atol=1e-6,
                )
    array = sitk.GetArrayFromImage(theirs).transpose(2, 1, 0)
    np.testing.assert_array_equal(ours.array[:, :, 0], array[:, :, 0])
    np.testing.assert_array_equal(ours.array[:, :, -1], array[:, :, -1])


def test_ge_rounded_positions_are_accepted_with_the_fitted_spacing(tmp_path: Path) -> None:
    """A 20-slice oblique series with positions written to 0.1 mm, as GE scanners do."""
    written = dicom_builders.write_series_at(
        tmp_path / "series", GE_SPACING * np.arange(20), orientation="oblique", decimals=1
    )
    steps = np.diff(written.positions @ written.normal)
    assert steps.max() - steps.min() > 0.07  # more than 1 %: rejected before the fix

    series, rejected = discover_series(tmp_path / "series")
    loaded = load_series_with_notes(series[0])

    assert rejected == [] and loaded.set_aside == [] and loaded.notes == ()
    # The fit through 20 offsets, each within E = 0.05 * (|nx| + |ny| + |nz|) mm of the
    # truth, finds the spacing to within E * sum|u| / sum(u^2) (u: centred slice index).
    u = np.arange(20) - 9.5
    error = 0.05 * np.abs(written.normal).sum() * np.abs(u).sum() / (u @ u)
    assert abs(loaded.volume.spacing[2] - GE_SPACING) <= error
    np.testing.assert_array_equal(loaded.volume.array, written.values)


def test_steps_beyond_the_header_precision_are_resampled_not_accepted(tmp_path: Path) -> None:
    """Rounding explains steps within about 0.2 mm of 7 mm here; a 0.5 mm jump it does not."""
    offsets = GE_SPACING * np.arange(12)
    offsets[6:] += 0.5  # one step of 7.5 mm: no gap (under 1.5 x 7), but not rounding
    dicom_builders.write_series_at(tmp_path / "series", offsets, orientation="oblique", decimals=1)
    series, _ = discover_series(tmp_path / "series")

    loaded = load_series_with_notes(series[0])

    assert len(loaded.notes) == 1 and "resampled" in loaded.notes[0]
    assert loaded.volume.shape[2] > 12


def test_a_gap_in_rounded_positions_is_still_missing_slices(tmp_path: Path) -> None:
    offsets = np.delete(GE_SPACING * np.arange(12), 5)  # slice 5 missing: a 14 mm step
    dicom_builders.write_series_at(tmp_path / "series", offsets, orientation="oblique", decimals=1)
    series, _ = discover_series(tmp_path / "series")

    with pytest.raises(InputError, match="missing slices"):
        load_series_with_notes(series[0])


def test_variable_spacing_gives_the_same_image_as_dcm2niix_eq(tmp_path: Path) -> None:
    """Steps of 5 then 7 mm: resampled as dcm2niix's equidistant '_Eq' image."""
    binary = _dcm2niix()
    if binary is None:
        pytest.skip("dcm2niix is not installed")
    offsets = [0.0, 5.0, 10.0, 15.0, 22.0, 29.0, 36.0]
    dicom_builders.write_series_at(tmp_path / "series", offsets, orientation="oblique")
    out = tmp_path / "nifti"
    out.mkdir()
    result = subprocess.run(
        [binary, "-z", "n", "-b", "n", "-f", "out", "-o", str(out), str(tmp_path / "series")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    series, _ = discover_series(tmp_path / "series")
    loaded = load_series_with_notes(series[0])

    theirs = nib.as_closest_canonical(nib.load(out / "out_Eq_1.nii"))
    ours = nib.as_closest_canonical(loaded.volume.to_nifti())
    assert ours.shape == theirs.shape
    # dcm2niix computes positions in float32 (about 1e-5 mm here) and keeps the series'
    # integer type, rounding each interpolated value to the nearest integer.
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), rtol=0, atol=0.5)
    assert "variable slice spacing (5 to 7 mm" in loaded.notes[0]
