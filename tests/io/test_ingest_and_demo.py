"""Tests for the demo data (medtl.demo.generate), ingest (medtl.io.ingest) and
pseudonymisation (medtl.io.deid)."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.demo.generate import generate_demo
from medtl.io.deid import hash_id
from medtl.io.ingest import ingest_path
from medtl.io.manifest import MANIFEST_COLUMNS, REJECTED_COLUMNS
from medtl.kernel.errors import InputError

N_PATIENTS = 3
PATIENT_IDS = [f"DEMO-{p:03d}" for p in range(N_PATIENTS)]
# what generate_demo writes into the DICOM headers
IDENTIFIERS = ["DEMO-", "Demo^", *(f"19{50 + p:02d}0{1 + p % 9}15" for p in range(N_PATIENTS))]


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _readable_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo set in which every patient has two studies."""
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, n_source=2, n_patients=N_PATIENTS, second_study_fraction=1.0, progress=False)
    return out


@pytest.fixture(scope="module")
def ingested(demo: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ingest") / "out"
    manifest, rejected = ingest_path(demo / "target" / "cases.tsv", out, salt="s", progress=False)
    return out, manifest, rejected


# ------------------------------------------------------------------ demo


def test_generate_demo_layout(demo: Path) -> None:
    sheet = pd.read_csv(demo / "target" / "cases.tsv", sep="\t")
    assert list(sheet.columns) == ["image", "label"]
    assert len(sheet) == 2 * N_PATIENTS
    for row in sheet.itertuples():
        assert (demo / "target" / row.image).is_dir()
        assert (demo / "target" / row.label).is_file()
    dataset = json.loads((demo / "source" / "dataset.json").read_text())
    assert dataset["numTraining"] == len(dataset["training"]) == 2
    for pair in dataset["training"]:
        assert (demo / "source" / pair["image"]).is_file()
        assert (demo / "source" / pair["label"]).is_file()


def test_generate_demo_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sa = generate_demo(a, n_source=2, n_patients=N_PATIENTS, progress=False)
    generate_demo(b, n_source=2, n_patients=N_PATIENTS, progress=False)
    generate_demo(c, seed=8, n_source=2, n_patients=N_PATIENTS, progress=False)
    assert sa.target_patients == N_PATIENTS
    assert sa.source_cases == 2
    label = Path("target/labels/patient000_study0.nii.gz")
    assert (a / label).read_bytes() == (b / label).read_bytes()
    assert (a / "target/cases.tsv").read_bytes() == (b / "target/cases.tsv").read_bytes()
    assert _tree_hashes(a) == _tree_hashes(b)  # DICOM files included
    src = Path("source/labelsTr/src_000.nii.gz")
    assert (a / src).read_bytes() != (c / src).read_bytes()  # the seed matters


# ------------------------------------------------------------------ ingest of a case sheet


def test_ingest_sheet_manifest(ingested) -> None:
    out, manifest, rejected = ingested
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 2 * N_PATIENTS
    assert rejected.empty and list(rejected.columns) == REJECTED_COLUMNS
    on_disk = pd.read_csv(out / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(on_disk.columns) == MANIFEST_COLUMNS
    assert on_disk["case_id"].tolist() == manifest["case_id"].tolist()
    assert manifest["case_id"].is_unique
    assert all(re.fullmatch(r"[0-9a-f]{10}", p) for p in manifest["patient_id"])
    assert set(manifest["modality"]) == {"MR"}
    assert set(manifest["orientation"]) == {"LPS"}
    assert set(manifest["shape"]) == {"48x48x24"}
    assert set(manifest["spacing"]) == {"2.00x2.00x4.00"}


def test_ingest_groups_studies_by_hashed_patient(ingested) -> None:
    _, manifest, _ = ingested
    counts = manifest.groupby("patient_id")["case_id"].count()
    assert len(counts) == N_PATIENTS
    assert set(counts) == {2}  # both studies of each patient share the patient_id
    assert set(manifest["patient_id"]) == {hash_id(p, "s") for p in PATIENT_IDS}
    for row in manifest.itertuples():
        assert row.case_id.startswith(row.patient_id + "_")


def test_ingest_nifti_geometry(ingested, demo: Path) -> None:
    _, manifest, _ = ingested
    originals = {}
    for path in sorted((demo / "target" / "labels").glob("*.nii.gz")):
        lab = nib.load(str(path))
        originals[hashlib.sha256(np.asarray(lab.dataobj).tobytes()).hexdigest()] = lab.affine
    for row in manifest.itertuples():
        img, lab = nib.load(row.image), nib.load(row.label)
        assert img.shape == lab.shape == (48, 48, 24)
        np.testing.assert_allclose(img.affine, lab.affine, atol=1e-4)
        assert img.get_data_dtype() == np.float32
        assert np.asarray(lab.dataobj).dtype == np.uint8
        # the label is the demo's label, on its original (DICOM) grid
        key = hashlib.sha256(np.asarray(lab.dataobj).tobytes()).hexdigest()
        assert key in originals
        np.testing.assert_allclose(lab.affine, originals[key], atol=1e-3)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")


def test_ingest_writes_no_patient_identifiers(ingested, demo: Path) -> None:
    out, _, _ = ingested
    # the identifiers are in the input, so finding none in the output means something
    dicom = next((demo / "target" / "dicom").rglob("*.dcm")).read_bytes()
    assert b"DEMO-" in dicom and b"Demo^" in dicom
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".nii.gz") for p in files)
    for path in files:
        data = _readable_bytes(path)
        for ident in IDENTIFIERS:
            assert ident.encode() not in data, f"{ident} found in {path.name}"


def test_ingest_rejects_bad_rows_and_keeps_good_ones(demo: Path, tmp_path: Path) -> None:
    target = demo / "target"
    sheet = pd.read_csv(target / "cases.tsv", sep="\t", dtype=str)
    # a label on another grid: the demo label of the first case, shifted by 10 mm
    first = nib.load(str(target / sheet.loc[0, "label"]))
    shifted = first.affine.copy()
    shifted[:3, 3] += 10.0
    extra = tmp_path / "extra"
    extra.mkdir()
    moved = extra / "moved_label.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(first.dataobj), shifted), str(moved))
    # the first case comes with the moved label instead of its own (a file listed twice
    # is set aside as such, so its own row is left out)
    rows = [
        {"image": str(target / r.image), "label": str(target / r.label)}
        for r in sheet.iloc[1:].itertuples()
    ]
    rows.insert(1, {"image": str(target / "dicom" / "missing_series"), "label": ""})
    rows.insert(3, {"image": str(target / sheet.loc[0, "image"]), "label": str(moved)})
    bad_sheet = extra / "cases.tsv"
    pd.DataFrame(rows).to_csv(bad_sheet, sep="\t", index=False)

    before = _tree_hashes(demo) | _tree_hashes(extra)
    out = tmp_path / "out"
    manifest, rejected = ingest_path(bad_sheet, out, salt="s", progress=False)
    assert _tree_hashes(demo) | _tree_hashes(extra) == before  # input untouched

    assert len(manifest) == len(sheet) - 1  # the good rows carried on
    assert len(rejected) == 2
    on_disk = pd.read_csv(out / "rejected.tsv", sep="\t", dtype=str)
    assert list(on_disk.columns) == ["path", "reason", "fix"]
    assert len(on_disk) == 2
    by_path = {Path(r.path).name: r for r in on_disk.itertuples()}
    assert "not found" in by_path["missing_series"].reason
    assert by_path["missing_series"].fix
    assert "affine" in by_path["moved_label.nii.gz"].reason
    assert "grid" in by_path["moved_label.nii.gz"].fix


def test_ingest_leaves_input_unchanged(demo: Path, tmp_path: Path) -> None:
    before = _tree_hashes(demo)
    ingest_path(demo / "target" / "cases.tsv", tmp_path / "o", salt="x", progress=False)
    ingest_path(demo / "source", tmp_path / "o2", salt="x", modality="MR", progress=False)
    assert _tree_hashes(demo) == before


def test_ingest_salt_changes_patient_ids(ingested, demo: Path, tmp_path: Path) -> None:
    _, manifest, _ = ingested
    other, _ = ingest_path(demo / "target" / "cases.tsv", tmp_path / "o", salt="t", progress=False)
    assert not set(other["patient_id"]) & set(manifest["patient_id"])
    assert set(other["patient_id"]) == {hash_id(p, "t") for p in PATIENT_IDS}


def test_ingest_msd_folder(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "src"
    manifest, rejected = ingest_path(demo / "source", out, salt="s", modality="MR", progress=False)
    assert rejected.empty
    assert manifest["case_id"].tolist() == ["src_000", "src_001"]
    assert set(manifest["modality"]) == {"MR"}
    assert set(manifest["orientation"]) == {"RAS"}
    assert set(manifest["spacing"]) == {"2.00x2.00x2.00"}
    assert manifest["patient_id"].tolist() == [hash_id("src_000", "s"), hash_id("src_001", "s")]
    for row in manifest.itertuples():
        lab = np.asarray(nib.load(row.label).dataobj)
        assert set(np.unique(lab).tolist()) == {0, 1, 2}
        src = demo / "source" / "labelsTr" / f"{row.case_id}.nii.gz"
        np.testing.assert_array_equal(lab, np.asarray(nib.load(str(src)).dataobj))


def test_ingest_path_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        ingest_path(tmp_path / "nowhere", tmp_path / "out", salt="s", progress=False)
    assert "nowhere" in str(info.value) and "does not exist" in str(info.value)
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("picture\tlabel\nx.nii.gz\t\n")
    with pytest.raises(InputError, match="unknown column 'picture'.*known columns are image"):
        ingest_path(sheet, tmp_path / "out", salt="s", progress=False)
    sheet.write_text("label\tpatient\nx.nii.gz\tp1\n")
    with pytest.raises(InputError, match="no 'image' column"):
        ingest_path(sheet, tmp_path / "out", salt="s", progress=False)
    sheet.write_text("image\tlabel\nmissing.nii.gz\t\n")
    with pytest.raises(InputError, match="no usable case") as info:
        ingest_path(sheet, tmp_path / "out", salt="s", progress=False)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.tsv", sep="\t")
    assert len(rejected) == 1 and rejected["path"].iloc[0].endswith("missing.nii.gz")


# ------------------------------------------------------------------ deid


def test_hash_id_is_keyed_and_stable() -> None:
    h = hash_id("DEMO-001", "s3cret")
    assert h == hash_id("DEMO-001", "s3cret")
    expected = hmac.new(b"s3cret", b"DEMO-001", hashlib.sha256).hexdigest()[:10]
    assert h == expected
    assert re.fullmatch(r"[0-9a-f]{10}", h)
    assert hash_id("DEMO-001", "other") != h
    assert hash_id("DEMO-002", "s3cret") != h
    assert len(hash_id("DEMO-001", "s3cret", length=16)) == 16
    assert hash_id("DEMO-001", "s3cret", length=16).startswith(h)


# ------------------------------------------------------------------ outputs and inputs


def _labelled_folder(root: Path, n: int = 2) -> Path:
    for i in range(n):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 100, (6, 5, 4)).astype(np.int16)
        label = (image > 50).astype(np.uint8)
        for sub, data in (("images", image), ("labels", label)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / sub / f"c{i}.nii.gz"))
    return root


def test_ingest_into_an_existing_empty_temporary_folder(tmp_path: Path) -> None:
    """What `medtl predict` does: ingest into a fresh temporary folder it then reads."""
    import tempfile

    source = _labelled_folder(tmp_path / "in")
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        manifest, _ = ingest_path(source, Path(tmp), salt="s", progress=False, labels=False)
        assert manifest["label"].tolist() == ["", ""]
        for image in manifest["image"]:
            assert Path(image).parent == Path(tmp) / "images" and Path(image).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no staging left behind


def test_ingest_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    source = _labelled_folder(tmp_path / "in")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    with pytest.raises(InputError, match="already holds files that `medtl ingest` did not write"):
        ingest_path(source, out, salt="s", progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_ingest_out_inside_the_input_is_refused_before_reading(tmp_path: Path) -> None:
    source = _labelled_folder(tmp_path / "in")
    before = _tree_hashes(source)
    with pytest.raises(InputError, match="--out lies inside the input folder"):
        ingest_path(source, source / "derived", salt="s", progress=False)
    assert _tree_hashes(source) == before and not (source / "derived").exists()


def test_bad_synonyms_stop_the_run_and_leave_out_as_it_was(tmp_path: Path) -> None:
    from medtl.kernel.errors import ConfigError

    source = _labelled_folder(tmp_path / "in")
    out = tmp_path / "out"
    ingest_path(source, out, salt="s", progress=False)
    before = _tree_hashes(out)
    with pytest.raises(ConfigError, match=r"--synonyms.*synonyms keyed by a class name"):
        ingest_path(source, out, salt="s", progress=False, classes={1: "a"}, synonyms={"b": ["x"]})
    assert _tree_hashes(out) == before


def test_ingest_command_classes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medtl.cli.main import app

    source = _labelled_folder(tmp_path / "in")
    args = ["ingest", str(source), "--out", str(tmp_path / "out"), "--quiet"]
    bad = CliRunner().invoke(app, [*args, "--classes", '{"one": "tumour"}'])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "--classes: expected label values (integers) as keys" in bad.output
    two = CliRunner().invoke(app, [*args, "--classes", '{"2": "tumour"}'])
    assert two.exit_code == 1  # labels hold 1, not a class: every case set aside
    assert "label values 1 are not classes" in two.output
    ok = CliRunner().invoke(app, [*args, "--classes", '{"1": "tumour"}'])
    assert ok.exit_code == 0, ok.output
    assert "ingest: 2 cases, 0 set aside" in ok.output
