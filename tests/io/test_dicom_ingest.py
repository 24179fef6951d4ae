"""A DICOM tree through ``medtl.io.ingest.ingest_path``: every input file is accounted for.

Every file under the input folder must end up used (a file of a series in the manifest,
or the label object of such a series) or listed in ``rejected.tsv`` (itself, or a folder
that holds it); medtl's own unfinished temporaries are the one exception, skipped by
design. The label object of a series that is set aside must not vanish.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.io.dicom import discover, pair_labels
from medtl.io.ingest import ingest_path
from medtl.io.rtstruct_write import write_rtstruct
from tests.support import dicom_builders

CLASSES = {0: "background", 1: "foreground"}


def _rtstruct_on(folder: Path, out: Path) -> Path:
    """A real RTSTRUCT (one ROI, 'foreground') drawn on the series in ``folder``."""
    (series,) = discover(folder).series
    mask = np.zeros((8, 6, len(series.files)), np.uint8)
    mask[2:6, 1:5, :] = 1
    return write_rtstruct(mask, series, CLASSES, out)


def _accounted(root: Path, out: Path, manifest: pd.DataFrame, rejected: pd.DataFrame):
    """Files under ``root`` used, listed, and neither (relative paths)."""
    used_series = set(manifest["series_uid"])
    used = set()
    pairs, _ = pair_labels(discover(root))
    for pair in pairs:
        if pair.series.series_uid in used_series:
            paths = [*pair.series.files, *([pair.label.path] if pair.label else [])]
            used |= {str(p.relative_to(root)) for p in paths}
    listed = set(rejected["path"])
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    covered = {f for f in files if any(f == r or f.startswith(r.rstrip("/") + "/") for r in listed)}
    return used, covered, files - used - covered


def test_every_input_file_ends_up_in_the_manifest_or_rejected(tmp_path: Path) -> None:
    root = tmp_path / "in"
    good = dicom_builders.write_series_at(root / "good", 3.0 * np.arange(5), tag="good")
    _rtstruct_on(root / "good", root / "labels" / "good_rs.dcm")
    # A series of one slice: set aside when it is loaded. Its RTSTRUCT must not vanish.
    lone = dicom_builders.write_series_at(root / "lone", [0.0], tag="lone", patient_id="P2")
    dicom_builders.write_rtstruct_header(root / "labels" / "lone_rs.dcm", lone, tag="lone")
    # A series with a slice missing: set aside at load too.
    gap = dicom_builders.write_series_at(root / "gap", [0.0, 3.0, 9.0, 12.0], tag="gap")
    dicom_builders.write_rtstruct_header(root / "labels" / "gap_rs.dcm", gap, tag="gap")
    dicom_builders.write_structured_report(root / "other" / "report.dcm")
    (root / "other" / "notes.txt").write_text("not DICOM\n")
    (root / ".DS_Store").write_bytes(b"\0\1")
    temporary = root / "good" / ".IM0009.dcm.q1w2e3r4.tmp.dcm"
    temporary.write_bytes(b"")

    manifest, rejected = ingest_path(root, tmp_path / "out", "salt", progress=False)

    assert list(manifest["series_uid"]) == [good.series_uid]
    assert manifest["label_source"].tolist() == ["RTSTRUCT"]
    used, covered, neither = _accounted(root, tmp_path / "out", manifest, rejected)
    assert "labels/good_rs.dcm" in used
    assert neither == {str(temporary.relative_to(root))}
    by_path = {row.path: row for row in rejected.itertuples()}
    for name, cause in (("lone", "at least 2 slices"), ("gap", "missing slices")):
        row = by_path[f"labels/{name}_rs.dcm"]
        assert row.reason.startswith("RTSTRUCT not used: its image series was set aside")
        assert cause in row.reason and row.fix
    assert temporary.name not in " ".join(rejected["path"])


def test_rtstruct_of_a_series_rejected_at_discovery_says_why(tmp_path: Path) -> None:
    root = tmp_path / "in"
    dicom_builders.write_series_at(root / "good", 3.0 * np.arange(4), tag="good")
    bad = dicom_builders.write_series_at(root / "bad", 3.0 * np.arange(4), tag="bad")
    for path in bad.files:  # every file of the series loses its position
        dicom_builders.edit(path, ImagePositionPatient=None)
    dicom_builders.write_rtstruct_header(root / "bad_rs.dcm", bad, tag="bad")

    manifest, rejected = ingest_path(root, tmp_path / "out", "salt", progress=False)

    assert len(manifest) == 1
    (row,) = rejected[rejected["path"] == "bad_rs.dcm"].itertuples()
    assert "its image series was set aside" in row.reason
    assert "ImagePositionPatient" in row.reason


def test_the_scanner_the_headers_name_goes_into_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "in"
    named = dicom_builders.write_series_at(root / "named", 3.0 * np.arange(4), tag="named")
    for path in named.files:
        dicom_builders.edit(path, Manufacturer="SIEMENS", ManufacturerModelName="Skyra")
    dicom_builders.write_series_at(root / "plain", 3.0 * np.arange(4), tag="plain", patient_id="P2")

    manifest, _ = ingest_path(root, tmp_path / "out", "salt", progress=False)

    scanner = dict(zip(manifest["series_uid"], manifest["scanner"], strict=True))
    assert scanner.pop(named.series_uid) == "SIEMENS Skyra"
    assert list(scanner.values()) == [""]  # headers without Manufacturer: left empty
