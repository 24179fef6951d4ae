"""Corpus entries: DICOM image series, and their label objects (RTSTRUCT / DICOM-SEG).

Each entry writes a small DICOM tree (series of 8 x 6 pixels, a handful of slices, with
the builders of ``tests/support/dicom_builders.py``) holding a good series beside the bad
input, so that the bad one is set aside while the good one carries on.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np

from tests.reliability.corpus import ACCEPTED, ERROR, SET_ASIDE, case, cli_outcome, ingest_outcome
from tests.support import dicom_builders as build

GE_SPACING = 7.013  # mm, positions written to 0.1 mm: steps alternate about 6.96 / 7.07


def _good(root: Path) -> build.WrittenSeries:
    """A usable 5-slice series under ``in/good`` that must carry on."""
    return build.write_series_at(
        root / "in" / "good", 3.0 * np.arange(5), tag="good", patient_id="PAT-GOOD"
    )


def _ingest(root: Path, target: str):
    return lambda: ingest_outcome(root / "in", root / "out" / "ingest", target)


def _manifest_row(outcome, series_uid: str) -> dict:
    manifest = outcome.details["manifest"]
    rows = manifest[manifest["series_uid"] == series_uid].to_dict("records")
    assert len(rows) == 1, f"expected one manifest row for the series, found {len(rows)}"
    return rows[0]


# --------------------------------------------------------------------------- DICOM

_GE = {}


def _check_ge(outcome) -> None:
    row = _manifest_row(outcome, _GE["series_uid"])
    assert row["shape"] == "8x6x20", row["shape"]
    # The fitted spacing: within 0.01 mm of the true 7.013 (two decimals in the manifest).
    assert abs(float(row["spacing"].split("x")[2]) - GE_SPACING) < 0.01, row["spacing"]


@case(
    "dicom_ge_positions_rounded_to_0.1mm",
    "DICOM",
    "an oblique 20-slice MR series with ImagePositionPatient written to 0.1 mm (GE)",
    ACCEPTED,
    r"^$",
    check=_check_ge,
)
def _(root):
    _good(root)
    written = build.write_series_at(
        root / "in" / "ge",
        GE_SPACING * np.arange(20),
        orientation="oblique",
        decimals=1,
        tag="ge",
        patient_id="PAT-GE",
    )
    _GE["series_uid"] = written.series_uid
    return _ingest(root, "ge")


_VARIABLE = {}


def _check_variable(outcome) -> None:
    row = _manifest_row(outcome, _VARIABLE["series_uid"])
    assert "note" in row, "the manifest has no note column"
    assert "resampled to 9 equidistant slices 4.5 mm apart" in row["note"], row["note"]
    assert row["shape"] == "8x6x9", row["shape"]


@case(
    "dicom_variable_slice_spacing",
    "DICOM",
    "a series with steps of 5 mm, then 7 mm (no slice missing)",
    ACCEPTED,
    r"variable slice spacing \(5 to 7 mm between 7 slices\) resampled to 9 equidistant",
    check=_check_variable,
)
def _(root):
    _good(root)
    written = build.write_series_at(
        root / "in" / "variable",
        [0.0, 5.0, 10.0, 15.0, 22.0, 29.0, 36.0],
        tag="variable",
        patient_id="PAT-VAR",
    )
    _VARIABLE["series_uid"] = written.series_uid
    return _ingest(root, "variable")


def _check_not_listed(outcome) -> None:
    rejected = outcome.details["rejected"]
    assert not rejected["path"].str.contains(".tmp", regex=False).any(), rejected
    assert len(outcome.details["manifest"]) == 1


@case(
    "dicom_killed_pull_temporary",
    "DICOM",
    "a 0-byte hidden temporary a killed `medtl pull` left beside the series",
    ACCEPTED,
    r"^$",
    check=_check_not_listed,
)
def _(root):
    good = _good(root)
    (good.files[0].parent / ".1.2.3.4.dcm.m3n4b5v6.tmp.2.3.4.dcm").write_bytes(b"")
    return _ingest(root, ".tmp")


@case(
    "dicom_hidden_system_file",
    "DICOM",
    "a `.DS_Store` beside the series",
    SET_ASIDE,
    r"hidden file.*not read",
    names=".DS_Store",
)
def _(root):
    _good(root)
    (root / "in" / "good" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return _ingest(root, ".DS_Store")


@case(
    "dicom_empty_folder",
    "DICOM",
    "an empty folder",
    ERROR,
    r"no usable case|no .*found|found no",
    names="empty",
)
def _(root):
    (root / "in" / "empty").mkdir()
    (root / "in" / "README.txt").write_text("the folder beside this file is empty\n")
    return lambda: ingest_outcome(root / "in" / "empty", root / "out" / "ingest", "empty")


@case(
    "dicom_not_dicom",
    "DICOM",
    "a text file named `.dcm` among the series",
    SET_ASIDE,
    r"no DICOM marker",
    names="notes.dcm",
)
def _(root):
    _good(root)
    (root / "in" / "good" / "notes.dcm").write_text("scanned on Tuesday\n")
    return _ingest(root, "notes.dcm")


@case(
    "dicom_truncated_pixel_data",
    "DICOM",
    "a slice cut short inside its pixel data",
    SET_ASIDE,
    r"truncated",
    names="IM0004.dcm",
)
def _(root):
    _good(root)
    cut = build.write_series_at(root / "in" / "cut", 3.0 * np.arange(5), tag="cut")
    data = cut.files[4].read_bytes()
    cut.files[4].write_bytes(data[:-10])
    return _ingest(root, "cut/IM0004.dcm")


@case(
    "dicom_missing_image_position",
    "DICOM",
    "a slice without ImagePositionPatient",
    SET_ASIDE,
    r"found no ImagePositionPatient",
    names="IM0004.dcm",
)
def _(root):
    _good(root)
    series = build.write_series_at(root / "in" / "nopos", 3.0 * np.arange(5), tag="nopos")
    build.edit(series.files[4], ImagePositionPatient=None)
    return _ingest(root, "nopos/IM0004.dcm")


@case(
    "dicom_mixed_orientations",
    "DICOM",
    "one series UID holding two axial and two sagittal slices",
    SET_ASIDE,
    r"expected one ImageOrientationPatient.*no majority",
    names="mixed",
)
def _(root):
    _good(root)
    series = build.write_series_at(root / "in" / "mixed", 3.0 * np.arange(4), tag="mixed")
    sagittal = ["0", "1", "0", "0", "0", "-1"]
    for path in series.files[2:]:
        build.edit(path, ImageOrientationPatient=sagittal)
    return _ingest(root, "mixed")


@case(
    "dicom_scout_mixed_in",
    "DICOM",
    "a localizer (ImageType LOCALIZER) inside the series",
    SET_ASIDE,
    r"localizer/scout image mixed into",
    names="scout.dcm",
)
def _(root):
    good = _good(root)
    build.copy_as_new_instance(
        good.files[2],
        root / "in" / "good" / "scout.dcm",
        "scout",
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
    )
    return _ingest(root, "scout.dcm")


@case(
    "dicom_duplicate_slice",
    "DICOM",
    "a second copy of one slice under another SOPInstanceUID",
    SET_ASIDE,
    r"duplicate of IM0002\.dcm",
    names="copy.dcm",
)
def _(root):
    good = _good(root)
    build.copy_as_new_instance(good.files[2], root / "in" / "good" / "copy.dcm", "copy")
    return _ingest(root, "copy.dcm")


@case(
    "dicom_missing_slices",
    "DICOM",
    "a series with two slices missing in the middle",
    SET_ASIDE,
    r"missing slices between",
    names="gap",
)
def _(root):
    _good(root)
    build.write_series_at(root / "in" / "gap", [0.0, 3.0, 6.0, 15.0, 18.0], tag="gap")
    return _ingest(root, "gap")


@case(
    "dicom_single_slice",
    "DICOM",
    "a series of one slice",
    SET_ASIDE,
    r"expected at least 2 slices",
    names="lone",
)
def _(root):
    _good(root)
    build.write_series_at(root / "in" / "lone", [0.0], tag="lone")
    return _ingest(root, "lone")


def _rle(files: list[Path]) -> None:
    import pydicom

    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress("1.2.840.10008.1.2.5")  # RLE Lossless: pydicom encodes it itself
        ds.save_as(path, enforce_file_format=True)


@case(
    "dicom_compressed_without_decoder",
    "DICOM",
    "an RLE-compressed series where no decoder is installed",
    SET_ASIDE,
    r"RLE Lossless .*no decoder.*pip install",
    names="rle",
)
def _(root):
    _good(root)
    series = build.write_series_at(root / "in" / "rle", 3.0 * np.arange(4), tag="rle")
    _rle(series.files)

    def run():
        with mock.patch("medtl.io.dicom.pixels._decoder_available", return_value=False):
            return ingest_outcome(root / "in", root / "out" / "ingest", "rle")

    return run


@case(
    "dicom_structured_report",
    "DICOM",
    "a structured report (SR) among the images",
    SET_ASIDE,
    r"found a structured report",
    names="report.dcm",
)
def _(root):
    _good(root)
    build.write_structured_report(root / "in" / "report.dcm")
    return _ingest(root, "report.dcm")


@case(
    "dicom_dicomdir",
    "DICOM",
    "a DICOMDIR index beside the series it lists",
    SET_ASIDE,
    r"DICOMDIR index",
    names="DICOMDIR",
)
def _(root):
    _good(root)
    build.write_dicomdir(root / "in" / "DICOMDIR")
    return _ingest(root, "DICOMDIR")


@case(
    "dicom_convert_out_inside_input",
    "DICOM",
    "`medtl convert` with --out inside the DICOM folder",
    ERROR,
    r"--out lies inside the input folder",
    names="nifti",
)
def _(root):
    _good(root)
    return lambda: cli_outcome(
        ["convert", root / "in", "--out", root / "in" / "nifti", "--workers", "1", "--quiet"]
    )


# ---------------------------------------------------------------------- RTSTRUCT / SEG


def _rtstruct(series_folder: Path, out: Path, names: dict[int, str]) -> Path:
    """A real RTSTRUCT with one contoured ROI per class, drawn on the series."""
    from medtl.io.dicom import discover
    from medtl.io.rtstruct_write import write_rtstruct

    (series,) = discover(series_folder).series
    mask = np.zeros((8, 6, len(series.files)), np.uint8)
    mask[2:6, 1:5, 1:-1] = 1
    return write_rtstruct(mask, series, {0: "background", **names}, out)


@case(
    "rtstruct_of_a_set_aside_series",
    "RTSTRUCT / SEG",
    "an RTSTRUCT drawn on a series that is set aside (a single slice)",
    SET_ASIDE,
    r"RTSTRUCT not used: its image series was set aside.*at least 2 slices",
    names="lone_rs.dcm",
)
def _(root):
    _good(root)
    lone = build.write_series_at(root / "in" / "lone", [0.0], tag="lone", patient_id="PAT-2")
    build.write_rtstruct_header(root / "in" / "lone_rs.dcm", lone, tag="lone")
    return _ingest(root, "lone_rs.dcm")


@case(
    "rtstruct_of_a_series_rejected_at_discovery",
    "RTSTRUCT / SEG",
    "an RTSTRUCT whose series' files all lack ImagePositionPatient",
    SET_ASIDE,
    r"its image series was set aside.*ImagePositionPatient",
    names="nopos_rs.dcm",
)
def _(root):
    _good(root)
    bad = build.write_series_at(root / "in" / "nopos", 3.0 * np.arange(4), tag="nopos")
    for path in bad.files:
        build.edit(path, ImagePositionPatient=None)
    build.write_rtstruct_header(root / "in" / "nopos_rs.dcm", bad, tag="nopos")
    return _ingest(root, "nopos_rs.dcm")


@case(
    "rtstruct_no_matching_roi",
    "RTSTRUCT / SEG",
    "an RTSTRUCT whose only ROI ('Heart') is none of the classes",
    SET_ASIDE,
    r"no ROI / segment of this RTSTRUCT matches a class.*Heart",
    names="heart_rs.dcm",
)
def _(root):
    _good(root)
    build.write_series_at(root / "in" / "chest", 3.0 * np.arange(5), tag="chest")
    _rtstruct(root / "in" / "chest", root / "in" / "heart_rs.dcm", {1: "Heart"})
    return _ingest(root, "heart_rs.dcm")


@case(
    "rtstruct_unknown_series",
    "RTSTRUCT / SEG",
    "an RTSTRUCT referencing a series that is not in the folder",
    SET_ASIDE,
    r"references no image series found",
    names="stray_rs.dcm",
)
def _(root):
    _good(root)
    elsewhere = build.write_series_at(root / "elsewhere", 3.0 * np.arange(3), tag="elsewhere")
    build.write_rtstruct_header(root / "in" / "stray_rs.dcm", elsewhere, tag="stray")
    return _ingest(root, "stray_rs.dcm")


@case(
    "seg_on_another_grid",
    "RTSTRUCT / SEG",
    "a DICOM-SEG referencing the series but made on a 6 x 5 grid",
    SET_ASIDE,
    r"label geometry does not match its image.*8 columns x 6 rows",
    names="other_grid_seg.dcm",
)
def _(root):
    import pydicom

    from medtl.io.dicom import discover
    from medtl.io.dicomseg import write_seg

    _good(root)
    target = build.write_series_at(root / "in" / "ct", 3.0 * np.arange(4), tag="ct")
    build.write_series_at(root / "scratch", 3.0 * np.arange(4), shape=(6, 5), tag="small")
    (small,) = discover(root / "scratch").series
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:4, 1:4, 1:3] = 1
    path = write_seg(mask, small, {0: "background", 1: "foreground"}, root / "seg.dcm")
    ds = pydicom.dcmread(path)
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = target.series_uid
    ds.FrameOfReferenceUID = target.frame_of_reference_uid
    ds.save_as(root / "in" / "other_grid_seg.dcm", enforce_file_format=True)
    return _ingest(root, "other_grid_seg.dcm")
