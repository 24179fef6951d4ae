"""The workflow on a messy DICOM folder, as a PACS export arrives, and DICOM-SEG output."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from medtl.demo.generate import generate_demo
from medtl.io.dicom import discover
from medtl.io.rtstruct_write import write_rtstruct
from tests.support.workflow import run_snakemake

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("config_tiny_dicom.yaml")


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def build_messy_folder(work: Path) -> dict[str, str]:
    """Demo series with RTSTRUCT labels, mixed up the way PACS exports are.

    Two patients share one folder; one series has a scout mixed in, another a duplicate
    slice; a corrupt file sits among them. Returns what each problem file is called.
    """
    demo = work / "demo"
    generate_demo(demo, seed=5, n_source=4, n_patients=5, second_study_fraction=0.0, progress=False)
    messy = work / "messy"
    inventory = discover(demo / "target" / "dicom", workers=1)
    sheet = pd.read_csv(demo / "target" / "cases.tsv", sep="\t")
    labels = {
        str((demo / "target" / r.image).resolve()): demo / "target" / r.label
        for r in sheet.itertuples()
    }
    problems = {}
    for n, series in enumerate(inventory.series):
        folder = messy / ("mixed" if n < 2 else f"series{n}")  # two patients in one folder
        folder.mkdir(parents=True, exist_ok=True)
        for f in series.files:
            shutil.copy(f, folder / f"s{n}_{f.name}")
        mask = np.asarray(nib.load(labels[str(series.files[0].parent.resolve())]).dataobj)
        write_rtstruct(mask, series, {1: "GTV"}, folder / f"s{n}_rtstruct.dcm")
        if n == 2:  # a scout: same series UID, other orientation, one slice
            ds = pydicom.dcmread(series.files[0])
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / "scout.dcm")
            problems["scout"] = "scout.dcm"
        if n == 3:  # a duplicate slice: same pixels and position, another instance
            ds = pydicom.dcmread(series.files[5])
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / "duplicate.dcm")
            problems["duplicate"] = "duplicate.dcm"
    (messy / "series4" / "corrupt.dcm").write_bytes(b"DICM" + os.urandom(300))
    problems["corrupt"] = "corrupt.dcm"
    return problems


@pytest.mark.slow
def test_workflow_on_messy_dicom_folder(tmp_path: Path) -> None:
    problems = build_messy_folder(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "messy").rglob("*") if p.is_file()}
    result = run_snakemake(tmp_path, "--cores", "2", configfile=CONFIG)
    assert result.returncode == 0, result.stderr[-4000:]

    manifest = pd.read_csv(tmp_path / "results" / "ingest" / "manifest.tsv", sep="\t")
    assert len(manifest) == 5
    assert set(manifest["label_source"]) == {"RTSTRUCT"}
    assert manifest["patient_id"].nunique() == 5
    rejected = pd.read_csv(tmp_path / "results" / "ingest" / "rejected.tsv", sep="\t")
    text = "\n".join(f"{r.path}: {r.reason}" for r in rejected.itertuples())
    for name in problems.values():
        assert name in text, (name, text)
    assert rejected["fix"].str.len().gt(0).all()
    scout = rejected[rejected["path"].str.endswith("scout.dcm")]["reason"].iloc[0]
    assert "localizer" in scout.lower() or "scout" in scout.lower()
    duplicate = rejected[rejected["reason"].str.contains("duplicate.dcm")]["reason"].iloc[0]
    assert duplicate.startswith("duplicate of")

    # The labels came from the RTSTRUCTs: every case has tumour voxels on its image grid.
    for row in manifest.itertuples():
        lab = nib.load(tmp_path / row.label)
        assert lab.shape == nib.load(tmp_path / row.image).shape
        assert np.asarray(lab.dataobj).max() == 1
    metrics = pd.read_csv(tmp_path / "results" / "evaluation" / "metrics.csv")
    assert set(metrics["arm"]) == {"scratch", "finetune"} and len(metrics) == 10

    # No patient identifier (ID, name, birth date) in any output or log.
    identifiers = [b"DEMO-", b"Demo^", b"19500115", b"19510215"]
    for path in [*(tmp_path / "results").rglob("*"), *(tmp_path / "logs").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert not any(i in data for i in identifiers), path

    # The input folder was not modified.
    after = {p: p.read_bytes() for p in (tmp_path / "messy").rglob("*") if p.is_file()}
    assert after == before

    # New cases segmented as DICOM-SEG that reference the source series and read back.
    series_dir = tmp_path / "messy" / "series4"
    out = tmp_path / "masks"
    pred = subprocess.run(
        [
            sys.executable,
            "-m",
            "medtl",
            "predict",
            str(series_dir),
            "--model",
            str(tmp_path / "results"),
            "--out",
            str(out),
            "--arm",
            "finetune",
            "--format",
            "nifti,seg",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        cwd=tmp_path,
    )
    assert pred.returncode == 0, pred.stderr
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    seg_path = Path(table.loc[0, "dicom"])
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG"
    series = discover(series_dir, workers=1).series[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid

    from medtl.io.dicom import load_series
    from medtl.io.dicomseg import read_seg

    back = read_seg(seg_path, load_series(series), series, {"tumour": 1})
    nifti = np.asarray(nib.load(out / f"{table.loc[0, 'case_id']}.nii.gz").dataobj)
    np.testing.assert_array_equal(back.array, nifti)
