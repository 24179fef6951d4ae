"""Tests for DICOM → NIfTI conversion (medtl.io.convert, ``medtl convert``)."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.io.convert import REJECTED_COLUMNS, SERIES_COLUMNS, ConvertOptions, convert_dicom
from medtl.io.deid import hash_id
from medtl.io.dicom import _get, _native_pixels, discover, load_series_checked
from medtl.io.dicom_write import write_series
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError

PATIENT_ID = "PAT-SECRET-042"
PATIENT_NAME = "Secretname^Jane"
IDENTIFIERS = [PATIENT_ID, "SECRET", "Secretname", "19611224"]
SHAPE = (9, 7, 6)


def _affine() -> np.ndarray:
    """An oblique, anisotropic RAS affine (right-handed, so the slice order survives)."""
    angle = np.deg2rad(20.0)
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = (-20.0, 11.5, 40.25)
    return affine


def _write(
    folder: Path,
    tag: str,
    *,
    values: np.ndarray | None = None,
    patient: str = PATIENT_ID,
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> tuple[Volume, list[Path]]:
    """A small CT series of known values, written with medtl's own writer."""
    if values is None:
        rng = np.random.default_rng(abs(hash(tag)) % 2**32)
        values = rng.integers(-1024, 2000, size=SHAPE).astype(np.float32)
    volume = Volume(values, _affine(), modality="CT")
    files = write_series(
        volume,
        folder,
        patient_id=patient,
        patient_name=PATIENT_NAME,
        birth_date="19611224",
        study_uid=generate_uid(entropy_srcs=["study", tag]),
        series_uid=generate_uid(entropy_srcs=["series", tag]),
        frame_of_reference_uid=generate_uid(entropy_srcs=["for", tag]),
        study_date="20240315",
        series_description=f"series {tag}",
        modality="CT",
        rescale_slope=slope,
        rescale_intercept=intercept,
    )
    return volume, files


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _by_uid(out: Path) -> dict[str, nib.Nifti1Image]:
    return {row["series_uid"]: nib.load(out / row["file"]) for row in _rows(out / "series.tsv")}


def _uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


# ------------------------------------------------------------------ conversion


def test_converted_volume_equals_the_source(tmp_path: Path) -> None:
    volume, files = _write(tmp_path / "in" / "a", "a")

    result = convert_dicom(tmp_path / "in", tmp_path / "out", ConvertOptions(salt="s", workers=1))

    assert len(result.series) == 1 and result.rejected == []
    image = _by_uid(tmp_path / "out")[_uid(files)]
    assert image.get_data_dtype() == np.int16  # exact integers: int16, as dcm2niix writes CT
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume.array)
    np.testing.assert_allclose(image.affine, volume.affine, atol=1e-4)
    np.testing.assert_allclose(image.header.get_sform(), volume.affine, atol=1e-4)
    row = result.series[0]
    assert (row.shape, row.dtype, row.slices, row.modality) == ("9x7x6", "int16", 6, "CT")


def test_non_integer_rescale_is_written_as_float(tmp_path: Path) -> None:
    values = np.random.default_rng(1).integers(-400, 400, size=SHAPE) * 0.5
    volume, files = _write(
        tmp_path / "in" / "a", "a", values=values.astype(np.float32), slope=0.5, intercept=0.0
    )

    convert_dicom(
        tmp_path / "in", tmp_path / "out", ConvertOptions(salt="s", workers=1, compress=False)
    )

    image = _by_uid(tmp_path / "out")[_uid(files)]
    assert image.get_filename().endswith(".nii")
    assert image.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume.array)


def test_integer_values_in_the_smallest_type(tmp_path: Path) -> None:
    """Slope 2 doubles the range past int16; values 0-255 fit uint8."""
    wide = np.where(np.indices(SHAPE).sum(axis=0) % 2, -40000.0, 40000.0).astype(np.float32)
    _write(tmp_path / "wide", "w", values=wide, slope=2.0)
    _write(tmp_path / "byte", "b", values=np.full(SHAPE, 200.0, np.float32), intercept=0.0)

    for folder, dtype in (("wide", np.int32), ("byte", np.uint8)):
        (series,) = discover(tmp_path / folder).series
        volume, _ = load_series_checked(series, keep_integers=True)
        assert volume.array.dtype == dtype and volume.array.flags.f_contiguous
        float_volume, _ = load_series_checked(series)
        assert float_volume.array.dtype == np.float32
        np.testing.assert_array_equal(volume.array, float_volume.array)


def test_several_workers_write_the_same_files(tmp_path: Path) -> None:
    for tag in "abc":
        _write(tmp_path / "in" / tag, tag, patient=f"{PATIENT_ID}-{tag}")

    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        convert_dicom(tmp_path / "in", out, ConvertOptions(salt="s", workers=workers))
        outs[workers] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    assert len(outs[1]) == 3 + 2 + 1  # the images, series.tsv, rejected.tsv, the marker
    assert outs[1] == outs[2]


@pytest.mark.parametrize(
    ("allocated", "stored", "signed"),
    [(16, 16, 1), (16, 12, 1), (16, 12, 0), (8, 8, 0), (32, 32, 1)],
)
def test_direct_pixel_read_equals_pydicom(allocated: int, stored: int, signed: int) -> None:
    rng = np.random.default_rng(allocated + stored + signed)
    raw = rng.integers(0, 2**allocated, size=(5, 3), dtype=np.uint64).astype(f"<u{allocated // 8}")
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.Rows, ds.Columns, ds.SamplesPerPixel = 5, 3, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
        ds.PixelRepresentation = signed
        ds.PixelData = raw.tobytes() + (b"\0" if raw.nbytes % 2 else b"")

        direct = _native_pixels(ds, syntax)

        assert direct is not None
        np.testing.assert_array_equal(direct, ds.pixel_array)
        assert direct.dtype == ds.pixel_array.dtype


def _reread(ds: Dataset, syntax: str) -> Dataset:
    """``ds`` written with ``syntax`` and read back, so that its elements are raw."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_direct_values_equal_pydicom(syntax: str) -> None:
    ds = Dataset()
    ds.Rows = 512
    ds.ImagePositionPatient = ["-250.5", " 1e2", "+3.25 "]
    ds.PixelSpacing = ["0.976562", "0.976562"]
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024.0"
    ds.SeriesNumber = " 12"
    ds.SeriesInstanceUID = "1.2.840.113619.2.55.3"  # odd length: padded with a NUL
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "Thorax 1.0 B31f"
    ds.SliceThickness = ""
    keywords = [e.keyword for e in ds] + ["NumberOfFrames"]
    fresh, converted = _reread(ds, syntax), _reread(ds, syntax)

    for keyword in keywords:
        direct = _get(fresh, keyword, "default")
        expected = converted.get(keyword, "default")
        if isinstance(expected, pydicom.multival.MultiValue):
            assert list(direct) == list(expected), keyword
        else:
            assert direct == expected and type(direct) in (type(expected), float, int, str)
    for keyword in ("Rows", "ImagePositionPatient", "SeriesInstanceUID", "ImageType"):
        assert isinstance(fresh.get_item(keyword), RawDataElement)  # read directly


# ------------------------------------------------------------------ bad input


def test_broken_series_are_set_aside_and_good_ones_written(tmp_path: Path) -> None:
    good, good_files = _write(tmp_path / "in" / "good", "good")
    _, gap_files = _write(tmp_path / "in" / "gap", "gap")
    gap_files[2].unlink()  # a missing slice in the middle
    _, cut_files = _write(tmp_path / "in" / "cut", "cut")
    cut_files[0].write_bytes(cut_files[0].read_bytes()[:-100])  # cut short in the pixels

    result = convert_dicom(tmp_path / "in", tmp_path / "out", ConvertOptions(salt="s", workers=2))

    images = _by_uid(tmp_path / "out")
    assert set(images) == {_uid(good_files), _uid(cut_files)}
    np.testing.assert_array_equal(np.asarray(images[_uid(good_files)].dataobj), good.array)
    assert images[_uid(cut_files)].shape == (*SHAPE[:2], SHAPE[2] - 1)  # the first slice left out
    rejected = {row["path"]: row for row in _rows(tmp_path / "out" / "rejected.tsv")}
    assert list(_rows(tmp_path / "out" / "rejected.tsv")[0]) == REJECTED_COLUMNS
    assert "missing slices" in rejected["gap"]["reason"]
    assert rejected["gap"]["fix"]
    truncated = str(Path("cut") / cut_files[0].name)
    assert "truncated" in rejected[truncated]["reason"]
    assert len(result.rejected) == 2


def test_nothing_to_convert_is_an_error_naming_the_folder(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")

    with pytest.raises(InputError) as info:
        convert_dicom(tmp_path / "in", tmp_path / "out", ConvertOptions(salt="s", workers=1))

    assert str(tmp_path / "in") in str(info.value)
    assert "rejected.tsv" in info.value.fix
    (row,) = _rows(tmp_path / "out" / "rejected.tsv")
    assert row["path"] == "notes.txt" and "DICOM" in row["reason"]


def test_bad_options_say_how_to_fix(tmp_path: Path) -> None:
    for options in (ConvertOptions(salt="s", workers=0), ConvertOptions(salt="s", level=12)):
        with pytest.raises(ValueError, match="fix"):
            convert_dicom(tmp_path, tmp_path / "out", options)


def test_out_inside_the_input_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a", "a")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    for out in (tmp_path / "in" / "nifti", tmp_path / "in", tmp_path):
        with pytest.raises(InputError, match="never writes over or inside its input") as info:
            convert_dicom(tmp_path / "in", out, ConvertOptions(salt="s", workers=1))
        assert "--out" in info.value.fix

    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_second_run_leaves_no_file_of_the_first(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a", "a")
    _, files = _write(tmp_path / "in" / "b", "b")
    options = ConvertOptions(salt="s", workers=1)
    first = convert_dicom(tmp_path / "in", tmp_path / "out", options)
    assert len(first.series) == 2
    for path in files:
        path.unlink()

    second = convert_dicom(tmp_path / "in", tmp_path / "out", options)

    written = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert written == [second.series[0].file]
    assert [row["file"] for row in _rows(tmp_path / "out" / "series.tsv")] == written
    assert second.series_tsv == tmp_path / "out" / "series.tsv"


def test_out_holding_other_files_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a", "a")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.docx").write_text("mine")

    with pytest.raises(InputError, match="did not write"):
        convert_dicom(tmp_path / "in", tmp_path / "out", ConvertOptions(salt="s", workers=1))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["thesis.docx"]


def test_variable_spacing_is_resampled_and_noted_in_series_tsv(tmp_path: Path) -> None:
    from tests.support import dicom_builders

    dicom_builders.write_series_at(tmp_path / "in" / "ct", [0.0, 5.0, 10.0, 17.0, 24.0])

    result = convert_dicom(tmp_path / "in", tmp_path / "out", ConvertOptions(salt="s", workers=1))

    (row,) = _rows(tmp_path / "out" / "series.tsv")
    assert "resampled to 6 equidistant slices 4.8 mm apart" in row["note"]
    assert row["shape"] == "8x6x6" and row["dtype"] == "float32"
    assert result.series[0].note == row["note"]


# ------------------------------------------------------------------ no identifiers


def test_no_patient_identifiers_in_the_output(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a", "a")
    _write(tmp_path / "in" / "b", "b")

    convert_dicom(tmp_path / "in", tmp_path / "out", ConvertOptions(salt="pepper", workers=1))

    out = tmp_path / "out"
    rows = _rows(out / "series.tsv")
    assert list(rows[0]) == SERIES_COLUMNS
    assert {row["patient_id"] for row in rows} == {hash_id(PATIENT_ID, "pepper")}
    for path in out.iterdir():
        text = path.name + (
            gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        ).decode("latin-1")
        for identifier in IDENTIFIERS:
            assert identifier.lower() not in text.lower(), (identifier, path.name)
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert len(names) == 2 and all(n.startswith(hash_id(PATIENT_ID, "pepper") + "_") for n in names)


def test_names_depend_on_the_salt(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a", "a")
    names = []
    for salt in ("one", "two"):
        result = convert_dicom(
            tmp_path / "in", tmp_path / salt, ConvertOptions(salt=salt, workers=1)
        )
        names.append(result.series[0].file)
    assert names[0] != names[1]


# ------------------------------------------------------------------ command line


def test_cli_converts_and_lists(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a", "a")
    _, files = _write(tmp_path / "in" / "gap", "gap")
    files[3].unlink()

    result = CliRunner().invoke(
        app,
        ["convert", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--workers", "2"]
        + ["--salt", "s", "--no-compress", "--quiet"],
    )

    assert result.exit_code == 0, result.output
    assert "convert: 1 series" in result.output and "1 set aside" in result.output
    assert len(list((tmp_path / "out").glob("*.nii"))) == 1
    assert "missing slices" in (tmp_path / "out" / "rejected.tsv").read_text()


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["convert", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--quiet"]
    )

    assert result.exit_code == 1
    assert "medtl: error:" in result.output and "How to fix" in result.output
    assert "Traceback" not in result.output
