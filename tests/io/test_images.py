"""Tests for reading image files (medtl.io.images): NIfTI, NRRD, MetaImage."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medtl.io.image_file import describe_error, image_stem, is_image_file, suffix_of
from medtl.io.images import companion_files, read_image
from medtl.io.ingest import ingest_path
from medtl.io.itk_files import itk_image
from medtl.kernel.errors import InputError

SHAPE = (7, 6, 5)
# not axial: rotated 20 degrees about z and 10 about x, anisotropic, off-centre
_RZ = np.array([[np.cos(0.35), -np.sin(0.35), 0], [np.sin(0.35), np.cos(0.35), 0], [0, 0, 1]])
_RX = np.array([[1, 0, 0], [0, np.cos(0.17), -np.sin(0.17)], [0, np.sin(0.17), np.cos(0.17)]])
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = _RZ @ _RX @ np.diag([0.8, 1.1, 3.0])
OBLIQUE[:3, 3] = [-120.5, 33.25, 71.0]
# NIfTI stores the affine as float32: one rounding of each entry (2**-24 relative); NRRD
# and MetaImage keep doubles. Twice that bound covers both files read side by side.
AFFINE_TOL = float(np.abs(OBLIQUE).max()) * 2.0**-23


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 3000, SHAPE).astype(np.int16)


def _write_itk(path: Path, array: np.ndarray, affine: np.ndarray, compress: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(itk_image(array, affine), str(path), useCompression=compress)
    return path


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_itk_formats_read_like_nifti(tmp_path: Path, suffix: str) -> None:
    data = _volume()
    nifti = read_image(_write_nifti(tmp_path / "a.nii.gz", data, OBLIQUE))
    other = read_image(_write_itk(tmp_path / f"a{suffix}", data, OBLIQUE))
    np.testing.assert_array_equal(other.array, data)
    np.testing.assert_array_equal(nifti.array, data)
    np.testing.assert_allclose(other.affine, nifti.affine, rtol=0, atol=AFFINE_TOL)
    # the voxel [i, j, k] is where both formats put it: SimpleITK's own index order
    itk = sitk.ReadImage(str(tmp_path / f"a{suffix}"))
    i, j, k = 5, 1, 3
    assert itk.GetPixel(i, j, k) == data[i, j, k]
    lps = itk.TransformIndexToPhysicalPoint((i, j, k))
    ras = other.affine @ [i, j, k, 1]
    np.testing.assert_allclose([-lps[0], -lps[1], lps[2]], ras[:3], atol=1e-9)


def test_nifti_and_nrrd_ingest_to_the_same_voxels_and_affine(tmp_path: Path) -> None:
    data = _volume(1)
    _write_nifti(tmp_path / "nifti" / "scan.nii.gz", data, OBLIQUE)
    _write_itk(tmp_path / "nrrd" / "scan.nrrd", data, OBLIQUE)
    a, _ = ingest_path(tmp_path / "nifti", tmp_path / "out_a", salt="s", progress=False)
    b, _ = ingest_path(tmp_path / "nrrd", tmp_path / "out_b", salt="s", progress=False)
    img_a, img_b = nib.load(a["image"].iloc[0]), nib.load(b["image"].iloc[0])
    np.testing.assert_array_equal(np.asarray(img_a.dataobj), np.asarray(img_b.dataobj))
    np.testing.assert_array_equal(np.asarray(img_a.dataobj), data.astype(np.float32))
    # both written as float32 NIfTI: the same rounding of nearly the same doubles
    np.testing.assert_allclose(img_a.affine, img_b.affine, rtol=0, atol=AFFINE_TOL)
    np.testing.assert_allclose(img_b.affine, OBLIQUE, rtol=0, atol=AFFINE_TOL)
    for column in ("shape", "spacing", "orientation"):
        assert a[column].iloc[0] == b[column].iloc[0]


def test_multi_member_gzip_is_read(tmp_path: Path) -> None:
    """A .nii.gz of two gzip members: the size trailer is the last member's, not the file's."""
    data = _volume(2)
    plain = _write_nifti(tmp_path / "plain.nii", data, OBLIQUE).read_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(plain[:500]) + gzip.compress(plain[500:]))
    np.testing.assert_array_equal(read_image(path).array, data)


def test_gzip_with_data_beyond_the_header_is_refused_when_short(tmp_path: Path) -> None:
    data = _volume(3)
    plain = _write_nifti(tmp_path / "plain.nii", data, OBLIQUE).read_bytes()
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(plain[:-10]))
    with pytest.raises(InputError, match=r"the file decompresses to 762 bytes"):
        read_image(path)


def test_nhdr_names_its_data_file(tmp_path: Path) -> None:
    header = _write_itk(tmp_path / "x.nhdr", _volume(), OBLIQUE, compress=False)
    assert companion_files(header) == [tmp_path / "x.raw"]
    nifti_pair = tmp_path / "p.hdr"
    assert companion_files(nifti_pair) == [tmp_path / "p.img"]
    assert companion_files(tmp_path / "a.nii.gz") == []


def test_names() -> None:
    assert suffix_of(Path("A.Seg.NRRD")) == ".seg.nrrd"
    assert image_stem(Path("case.seg.nrrd")) == "case"
    assert is_image_file(Path("x.mhd")) and not is_image_file(Path("x.raw"))
    assert not is_image_file(Path("notes.txt"))


def test_describe_error_is_never_empty() -> None:
    assert describe_error(EOFError()) == "EOFError (no message)"
    assert describe_error(ValueError("bad")) == "ValueError: bad"


def test_itk_geometry_checked_before_voxels(tmp_path: Path) -> None:
    path = _write_itk(tmp_path / "x.mha", _volume(), OBLIQUE, compress=False)
    text = path.read_bytes()
    start = text.index(b"ElementSpacing = ")
    end = text.index(b"\n", start)
    path.write_bytes(text[:start] + b"ElementSpacing = 0.8 1.1 0" + text[end:])
    with pytest.raises(InputError, match=r"voxel size 0 mm along axis 2"):
        read_image(path)


def test_channels_only_when_asked(tmp_path: Path) -> None:
    four = np.stack([_volume(4), _volume(5)], axis=3)
    path = _write_nifti(tmp_path / "two.nii.gz", four, OBLIQUE)
    with pytest.raises(InputError, match=r"4-D image with 2 volumes"):
        read_image(path)
    assert read_image(path, channels=True).array.shape == (*SHAPE, 2)


def test_four_d_itk_image_with_one_volume_is_three_d(tmp_path: Path) -> None:
    data = _volume(6)
    series = sitk.JoinSeries([itk_image(data, np.diag([0.5, 0.5, 2.0, 1.0]))])
    assert series.GetDimension() == 4
    path = tmp_path / "t1.mha"
    sitk.WriteImage(series, str(path))
    image = read_image(path)
    np.testing.assert_array_equal(image.array, data)
    np.testing.assert_allclose(image.affine, np.diag([0.5, 0.5, 2.0, 1.0]), atol=1e-12)
    two = tmp_path / "t2.mha"
    sitk.WriteImage(sitk.JoinSeries([itk_image(data, np.eye(4))] * 2), str(two))
    with pytest.raises(InputError, match=r"4-D image with 2 volumes"):
        read_image(two)
