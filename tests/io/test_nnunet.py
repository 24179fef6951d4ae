"""Tests for the nnU-Net v2 / MSD interchange (medtl.io.nnunet)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.io.nnunet import (
    ExternalCase,
    check_same_folds,
    detect_format,
    export_nnunet,
    nnunet_case_id,
    nnunet_splits,
    read_external,
)
from medtl.kernel.errors import InputError, MedtlError

SHAPE = (4, 5, 6)
# oblique-free but not identity: flipped axis, anisotropic spacing, offset origin
AFFINE = np.array(
    [[-1.5, 0, 0, 10.0], [0, 1.2, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]], dtype=float
)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _image(seed: int, channels: int | None = None) -> np.ndarray:
    shape = SHAPE if channels is None else (*SHAPE, channels)
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _label(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, SHAPE).astype(np.uint8)


def _write_json(folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(meta))


def _junk(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x05\x16\x07 macOS resource fork")


@pytest.fixture
def nnunet_dir(tmp_path: Path) -> Path:
    """Two channels, three training cases (case_c lacks channel 1), one test case."""
    d = tmp_path / "Dataset042_Tiny"
    _write_json(
        d,
        {
            "channel_names": {"0": "CT", "1": "T2"},
            "labels": {"background": 0, "tumour": 1, "cyst": 2},
            "numTraining": 3,
            "file_ending": ".nii.gz",
        },
    )
    for i, case in enumerate(["case_a", "case_b", "case_c"]):
        _save(d / "imagesTr" / f"{case}_0000.nii.gz", _image(i))
        if case != "case_c":
            _save(d / "imagesTr" / f"{case}_0001.nii.gz", _image(10 + i))
        _save(d / "labelsTr" / f"{case}.nii.gz", _label(i))
    _save(d / "imagesTs" / "test_x_0000.nii.gz", _image(20))
    _save(d / "imagesTs" / "test_x_0001.nii.gz", _image(21))
    _junk(d / "imagesTr" / "._case_a_0000.nii.gz")
    _junk(d / "labelsTr" / "._case_a.nii.gz")
    _junk(d / ".DS_Store")
    return d


@pytest.fixture
def msd_dir(tmp_path: Path) -> Path:
    """MSD task: 4-D two-channel images, macOS junk, a test list of plain strings."""
    d = tmp_path / "Task01_Tiny"
    training = []
    for i, case in enumerate(["brain_001", "brain_002"]):
        _save(d / "imagesTr" / f"{case}.nii.gz", _image(i, channels=2))
        _save(d / "labelsTr" / f"{case}.nii.gz", _label(i))
        training.append(
            {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
        )
    _save(d / "imagesTs" / "brain_101.nii.gz", _image(5, channels=2))
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        _junk(d / sub / "._brain_001.nii.gz")
    _write_json(
        d,
        {
            "name": "Tiny",
            "modality": {"0": "FLAIR", "1": "T1w"},
            "labels": {"0": "background", "1": "edema", "2": "enhancing tumour"},
            "numTraining": 2,
            "training": training,
            "test": ["./imagesTs/brain_101.nii.gz"],
        },
    )
    return d


# ----------------------------------------------------------------------------- reading


def test_read_nnunet_rejects_case_missing_a_channel(nnunet_dir: Path) -> None:
    assert detect_format(nnunet_dir) == "nnunet"
    ds = read_external(nnunet_dir)
    assert ds.kind == "nnunet"
    assert ds.channel_names == {0: "CT", 1: "T2"}
    assert ds.classes == {1: "tumour", 2: "cyst"}
    assert [c.case_id for c in ds.cases] == ["case_a", "case_b", "test_x"]
    a = ds.cases[0]
    assert [p.name for p in a.channels] == ["case_a_0000.nii.gz", "case_a_0001.nii.gz"]
    assert a.label == nnunet_dir / "labelsTr" / "case_a.nii.gz"
    assert not a.four_d
    assert ds.cases[2].label is None
    # junk files are silent; case_c is rejected once (its label is not reported again)
    assert len(ds.rejected) == 1
    rej = ds.rejected[0]
    assert rej.path.endswith("case_c_0001.nii.gz")
    assert "T2" in rej.reason and "case_c_0000.nii.gz" in rej.reason
    assert rej.fix


def test_read_nnunet_reports_stray_files(nnunet_dir: Path) -> None:
    _save(nnunet_dir / "labelsTr" / "orphan.nii.gz", _label(0))
    (nnunet_dir / "imagesTr" / "notes.txt").write_text("x")
    _save(nnunet_dir / "imagesTr" / "case_d_0000.nii.gz", _image(0))
    _save(nnunet_dir / "imagesTr" / "case_d_0001.nii.gz", _image(1))  # no label
    _save(nnunet_dir / "imagesTr" / "case_e_0002.nii.gz", _image(0))  # no channel 2
    ds = read_external(nnunet_dir)
    assert [c.case_id for c in ds.cases] == ["case_a", "case_b", "test_x"]
    by_name = {Path(r.path).name: r for r in ds.rejected}
    assert set(by_name) == {
        "case_c_0001.nii.gz",
        "orphan.nii.gz",
        "notes.txt",
        "case_d.nii.gz",
        "case_e_0002.nii.gz",
    }
    assert "no image" in by_name["orphan.nii.gz"].reason
    assert "has no label" in by_name["case_d.nii.gz"].reason


def test_read_nnunet_rejects_channel_of_other_shape(nnunet_dir: Path) -> None:
    _save(nnunet_dir / "imagesTr" / "case_b_0001.nii.gz", np.zeros((3, 3, 3), np.float32))
    ds = read_external(nnunet_dir)
    assert "case_b" not in [c.case_id for c in ds.cases]
    assert any("differ in shape" in r.reason for r in ds.rejected)


def test_read_nnunet_explicit_dataset_listing(tmp_path: Path) -> None:
    d = tmp_path / "Dataset043_Listed"
    _save(d / "somewhere" / "x_ct.nii.gz", _image(0))
    _save(d / "somewhere" / "x_seg.nii.gz", _label(0))
    _write_json(
        d,
        {
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, "organ": 1},
            "numTraining": 1,
            "file_ending": ".nii.gz",
            "dataset": {
                "x": {"images": ["somewhere/x_ct.nii.gz"], "label": "somewhere/x_seg.nii.gz"}
            },
        },
    )
    ds = read_external(d)
    assert ds.cases == [
        ExternalCase("x", (d / "somewhere" / "x_ct.nii.gz",), d / "somewhere" / "x_seg.nii.gz")
    ]


def test_read_msd_four_d_and_junk(msd_dir: Path) -> None:
    assert detect_format(msd_dir) == "msd"
    ds = read_external(msd_dir)
    assert ds.kind == "msd"
    assert ds.channel_names == {0: "FLAIR", 1: "T1w"}
    assert ds.classes == {1: "edema", 2: "enhancing tumour"}
    assert [c.case_id for c in ds.cases] == ["brain_001", "brain_002", "brain_101"]
    assert all(c.four_d and len(c.channels) == 1 for c in ds.cases)
    assert ds.cases[0].label == msd_dir / "labelsTr" / "brain_001.nii.gz"
    assert ds.cases[2].label is None
    assert ds.rejected == []


def test_read_msd_rejections(msd_dir: Path) -> None:
    meta = json.loads((msd_dir / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"})
    meta["training"].append({"image": "./imagesTr/._brain_001.nii.gz", "label": "./x.nii.gz"})
    _write_json(msd_dir, meta)
    _save(msd_dir / "imagesTr" / "brain_003.nii.gz", _image(3, channels=2))  # not listed
    (msd_dir / "labelsTr" / "brain_002.nii.gz").unlink()
    ds = read_external(msd_dir)
    assert [c.case_id for c in ds.cases] == ["brain_001", "brain_101"]
    reasons = {Path(r.path).name: r.reason for r in ds.rejected}
    assert set(reasons) == {"gone.nii.gz", "brain_002.nii.gz", "brain_003.nii.gz"}
    assert "not listed" in reasons["brain_003.nii.gz"]


def test_read_msd_style_without_modality(tmp_path: Path) -> None:
    """medtl's demo writes an MSD-style dataset.json; 'modality' may be absent."""
    d = tmp_path / "source"
    _save(d / "imagesTr" / "src_000.nii.gz", _image(0))
    _save(d / "labelsTr" / "src_000.nii.gz", _label(0))
    _write_json(
        d,
        {
            "labels": {"0": "background", "1": "body", "2": "lesion"},
            "training": [
                {"image": "./imagesTr/src_000.nii.gz", "label": "./labelsTr/src_000.nii.gz"}
            ],
        },
    )
    assert detect_format(d) == "msd"
    ds = read_external(d)
    assert ds.channel_names == {0: "unknown"}
    assert ds.classes == {1: "body", 2: "lesion"}
    assert [(c.case_id, c.four_d) for c in ds.cases] == [("src_000", False)]


def test_read_nnunet_v1_task_with_split_channels(tmp_path: Path) -> None:
    d = tmp_path / "Task005_Prostate"
    _save(d / "imagesTr" / "p_00_0000.nii.gz", _image(0))
    _save(d / "imagesTr" / "p_00_0001.nii.gz", _image(1))
    _save(d / "labelsTr" / "p_00.nii.gz", _label(0))
    _write_json(
        d,
        {
            "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ"},
            "training": [{"image": "./imagesTr/p_00.nii.gz", "label": "./labelsTr/p_00.nii.gz"}],
            "test": [],
        },
    )
    ds = read_external(d)
    assert ds.rejected == []
    (case,) = ds.cases
    assert [p.name for p in case.channels] == ["p_00_0000.nii.gz", "p_00_0001.nii.gz"]
    assert not case.four_d


@pytest.mark.parametrize(
    "labels",
    [
        {"background": 0, "whole tumour": [1, 2, 3], "core": [2, 3]},
        {"background": 0, "tumour": 1, "ignore": 2},
    ],
    ids=["region-based", "ignore-label"],
)
def test_region_based_and_ignore_labels_refused(tmp_path: Path, labels: dict) -> None:
    d = tmp_path / "Dataset044_Regions"
    meta = {"channel_names": {"0": "MR"}, "labels": labels, "file_ending": ".nii.gz"}
    _write_json(d, meta)
    with pytest.raises(InputError) as info:
        read_external(d)
    assert info.value.path.endswith("dataset.json")
    assert "integer" in info.value.fix or "relabel" in info.value.fix


def test_regions_class_order_refused(tmp_path: Path) -> None:
    d = tmp_path / "Dataset045_Regions"
    meta = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "a": 1},
        "regions_class_order": [1],
        "file_ending": ".nii.gz",
    }
    _write_json(d, meta)
    with pytest.raises(InputError, match="region"):
        read_external(d)


def test_dataset_json_not_json(tmp_path: Path) -> None:
    d = tmp_path / "Dataset046_Broken"
    d.mkdir()
    (d / "dataset.json").write_text("{'channel_names': oops")
    with pytest.raises(InputError) as info:
        read_external(d)
    assert info.value.path == str(d / "dataset.json")
    assert "not valid JSON" in info.value.reason
    with pytest.raises(InputError):
        detect_format(d)


def test_dataset_json_missing(tmp_path: Path) -> None:
    assert detect_format(tmp_path) is None
    with pytest.raises(InputError, match="dataset.json not found"):
        read_external(tmp_path)


def test_non_nifti_file_ending_refused(tmp_path: Path) -> None:
    d = tmp_path / "Dataset047_Png"
    meta = {"channel_names": {"0": "R"}, "labels": {"background": 0, "a": 1}, "file_ending": ".png"}
    _write_json(d, meta)
    with pytest.raises(InputError, match="NIfTI only"):
        read_external(d)


# ----------------------------------------------------------------------------- export


def test_round_trip_four_d_two_channels(tmp_path: Path) -> None:
    src = tmp_path / "ingested"
    images = {c: _image(i, channels=2) for i, c in enumerate(["p01.a", "p02", "p03"])}
    rows = []
    for case, data in images.items():
        image = _save(src / "images" / f"{case}.nii.gz", data)
        label = "" if case == "p03" else str(_save(src / "labels" / f"{case}.nii.gz", _label(1)))
        rows.append({"case_id": case, "patient_id": "x", "image": str(image), "label": label})
    # as read back from manifest.tsv: the empty label becomes NaN
    (src / "manifest.tsv").write_text(pd.DataFrame(rows).to_csv(sep="\t", index=False))
    manifest = pd.read_csv(src / "manifest.tsv", sep="\t")
    classes, channels = {1: "tumour", 2: "cyst"}, {0: "T1", 1: "T2"}

    out = export_nnunet(manifest, tmp_path / "nnUNet_raw", 501, "Tiny", classes, channels)

    assert out == tmp_path / "nnUNet_raw" / "Dataset501_Tiny"
    assert [p.name for p in (tmp_path / "nnUNet_raw").iterdir()] == ["Dataset501_Tiny"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == {"background": 0, "tumour": 1, "cyst": 2}
    assert meta["numTraining"] == 2
    assert meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        "p03_0000.nii.gz",
        "p03_0001.nii.gz",
    ]

    ds = read_external(out)
    assert ds.rejected == []
    assert (ds.kind, ds.channel_names, ds.classes) == ("nnunet", channels, classes)
    assert [c.case_id for c in ds.cases] == ["p01_a", "p02", "p03"]
    for case, original in zip(ds.cases, images, strict=True):
        assert len(case.channels) == 2
        source = nib.load(str(src / "images" / f"{original}.nii.gz"))
        for c, path in enumerate(case.channels):
            img = nib.load(str(path))
            assert img.shape == SHAPE
            np.testing.assert_array_equal(np.asanyarray(img.dataobj), images[original][..., c])
            np.testing.assert_array_equal(img.affine, source.affine)
            np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)
            for key in ("qform_code", "sform_code", "quatern_b", "srow_x", "srow_y", "pixdim"):
                np.testing.assert_array_equal(img.header[key], source.header[key])
        if original == "p03":
            assert case.label is None
        else:
            assert case.label.read_bytes() == (src / "labels" / f"{original}.nii.gz").read_bytes()


def test_round_trip_three_d_single_channel(tmp_path: Path) -> None:
    img1 = _save(tmp_path / "in" / "a.nii.gz", _image(0))
    lab1 = _save(tmp_path / "in" / "a_seg.nii.gz", _label(0))
    img2 = _save(tmp_path / "in" / "b.nii", _image(1))  # other ending: re-saved, not copied
    manifest = pd.DataFrame(
        {
            "case_id": ["a", "b"],
            "image": ["in/a.nii.gz", "in/b.nii"],
            "label": ["in/a_seg.nii.gz", None],
        }
    )
    out = export_nnunet(
        manifest, tmp_path / "raw", 7, "One", {1: "organ"}, {0: "CT"}, base_dir=tmp_path
    )
    assert (out / "imagesTr" / "a_0000.nii.gz").read_bytes() == img1.read_bytes()
    assert (out / "labelsTr" / "a.nii.gz").read_bytes() == lab1.read_bytes()
    ds = read_external(out)
    assert [(c.case_id, len(c.channels), c.label is not None) for c in ds.cases] == [
        ("a", 1, True),
        ("b", 1, False),
    ]
    b, b_source = nib.load(str(ds.cases[1].channels[0])), nib.load(img2)
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(b_source.dataobj))
    np.testing.assert_array_equal(b.affine, b_source.affine)


def test_export_channel_count_must_match(tmp_path: Path) -> None:
    image = _save(tmp_path / "a.nii.gz", _image(0))
    manifest = pd.DataFrame({"case_id": ["a"], "image": [str(image)], "label": [""]})
    with pytest.raises(MedtlError, match=r"1 channel\(s\), expected 2"):
        export_nnunet(manifest, tmp_path / "raw", 8, "X", {1: "a"}, {0: "T1", 1: "T2"})
    assert not (tmp_path / "raw").exists()


def test_export_sanitises_ids_and_refuses_collisions(tmp_path: Path) -> None:
    assert nnunet_case_id("pat 01.ct") == "pat_01_ct"
    assert nnunet_case_id("ok-id_2") == "ok-id_2"
    image = str(_save(tmp_path / "a.nii.gz", _image(0)))
    for ids in (["a.b", "a_b"], ["Case1", "case1"]):
        manifest = pd.DataFrame({"case_id": ids, "image": [image, image], "label": ["", ""]})
        with pytest.raises(MedtlError, match="both become"):
            export_nnunet(manifest, tmp_path / "raw", 9, "X", {1: "a"}, {0: "CT"})


def test_export_refuses_bad_classes_and_existing_output(tmp_path: Path) -> None:
    image = str(_save(tmp_path / "a.nii.gz", _image(0)))
    manifest = pd.DataFrame({"case_id": ["a"], "image": [image], "label": [""]})
    with pytest.raises(MedtlError, match="consecutive"):
        export_nnunet(manifest, tmp_path / "raw", 10, "X", {1: "a", 3: "c"}, {0: "CT"})
    with pytest.raises(MedtlError, match="1 to 999"):
        export_nnunet(manifest, tmp_path / "raw", 1000, "X", {1: "a"}, {0: "CT"})

    out = export_nnunet(manifest, tmp_path / "raw", 10, "X", {1: "a"}, {0: "CT"})
    (out / "imagesTs" / "stale_0000.nii.gz").write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        export_nnunet(manifest, tmp_path / "raw", 10, "X", {1: "a"}, {0: "CT"})
    with pytest.raises(InputError, match="already used"):
        export_nnunet(manifest, tmp_path / "raw", 10, "Other", {1: "a"}, {0: "CT"})
    export_nnunet(manifest, tmp_path / "raw", 10, "X", {1: "a"}, {0: "CT"}, overwrite=True)
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["a_0000.nii.gz"]
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset010_X"]


def test_export_keeps_stored_integers_and_scaling(tmp_path: Path) -> None:
    stored = np.random.default_rng(0).integers(-1000, 2000, (*SHAPE, 2)).astype(np.int16)
    img = nib.Nifti1Image(stored, AFFINE)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "ct.nii.gz"
    nib.save(img, str(path))
    manifest = pd.DataFrame({"case_id": ["ct"], "image": [str(path)], "label": [""]})
    out = export_nnunet(manifest, tmp_path / "raw", 11, "Scaled", {1: "a"}, {0: "CT", 1: "PET"})
    for c in range(2):
        written = nib.load(str(out / "imagesTs" / f"ct_{c:04d}.nii.gz"))
        assert written.get_data_dtype() == np.int16
        assert (written.dataobj.slope, written.dataobj.inter) == (0.5, -10.0)
        np.testing.assert_array_equal(written.dataobj.get_unscaled(), stored[..., c])


def test_ingest_of_nnunet_dataset_stacks_channels(nnunet_dir: Path, tmp_path: Path) -> None:
    from medtl.io.ingest import ingest_path

    manifest, rejected = ingest_path(nnunet_dir, tmp_path / "out", salt="s", progress=False)
    labelled = manifest[manifest["label"] != ""]
    assert sorted(labelled["case_id"]) == ["case_a", "case_b"]
    assert set(manifest["channels"]) == {2}
    image = nib.load(labelled["image"].iloc[0])
    assert image.shape[3] == 2
    first = nib.load(nnunet_dir / "imagesTr" / "case_a_0000.nii.gz")
    row = labelled[labelled["case_id"] == "case_a"].iloc[0]
    np.testing.assert_allclose(
        np.asarray(nib.load(row["image"]).dataobj)[..., 0], np.asarray(first.dataobj)
    )
    assert any("case_c" in p for p in rejected["path"])


def test_export_nnunet_command(nnunet_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from medtl.cli.main import app
    from medtl.io.ingest import ingest_path

    monkeypatch.chdir(tmp_path)
    ingest_path(nnunet_dir, Path("ing"), salt="s", progress=False)
    result = CliRunner().invoke(
        app,
        [
            "export-nnunet",
            "--manifest",
            "ing/manifest.tsv",
            "--out",
            "raw",
            "--dataset-id",
            "7",
            "--name",
            "Back",
            "--classes",
            '{"1": "tumour", "2": "cyst"}',
            "--channel-names",
            '{"0": "CT", "1": "T2"}',
        ],
    )
    assert result.exit_code == 0, result.output
    back = read_external(tmp_path / "raw" / "Dataset007_Back")
    assert back.channel_names == {0: "CT", 1: "T2"}
    assert {c.case_id for c in back.cases if c.label} == {"case_a", "case_b"}


FOLDS = {
    "k": 2,
    "folds": [
        {"fold": 1, "train": ["p3.1", "p4"], "val": ["p1"], "test": ["p2"]},
        {"fold": 0, "train": ["p2"], "val": ["p1"], "test": ["p3.1", "p4"]},
    ],
}


def test_nnunet_splits_hold_medtl_folds() -> None:
    splits = nnunet_splits(FOLDS)
    # in fold order; medtl's held-out cases are nnU-Net's val, train + val its train
    assert splits == [
        {"train": ["p1", "p2"], "val": ["p3_1", "p4"]},
        {"train": ["p1", "p3_1", "p4"], "val": ["p2"]},
    ]
    check_same_folds(FOLDS, splits)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda s: s[:1], "hold 1 folds"),
        (lambda s: [{"train": ["p1", "p2", "p4"], "val": ["p3_1"]}, s[1]], "fold 0"),
        (
            lambda s: [s[0], {"train": ["p1", "p3_1"], "val": ["p2", "p4"]}],
            "only in nnU-Net: ['p4']",
        ),
    ],
)
def test_check_same_folds_names_the_difference(tamper, message) -> None:
    with pytest.raises(MedtlError, match=re.escape(message)):
        check_same_folds(FOLDS, tamper(nnunet_splits(FOLDS)))


def test_export_nnunet_command_writes_the_folds(
    nnunet_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from medtl.cli.main import app
    from medtl.io.ingest import ingest_path, read_manifest
    from medtl.split.folds import make_folds, save_folds

    monkeypatch.chdir(tmp_path)
    ingest_path(nnunet_dir, Path("ing"), salt="s", progress=False)
    manifest = read_manifest(Path("ing/manifest.tsv"))
    labelled = manifest[manifest["label"] != ""]
    folds = make_folds(labelled, k=2, seed=0, val_fraction=0.0)
    save_folds(folds, Path("folds.json"))
    args = ["export-nnunet", "--manifest", "ing/manifest.tsv", "--out", "raw"]
    args += ["--dataset-id", "8", "--name", "Folds", "--channel-names", '{"0": "CT", "1": "T2"}']
    result = CliRunner().invoke(app, [*args, "--folds", "folds.json"])
    assert result.exit_code == 0, result.output
    dataset = tmp_path / "raw" / "Dataset008_Folds"
    splits = json.loads((dataset / "splits_final.json").read_text())
    check_same_folds(folds, splits)
    # every case nnU-Net is told about exists in the exported dataset
    exported = {p.name.rsplit("_", 1)[0] for p in (dataset / "imagesTr").iterdir()}
    assert {c for s in splits for part in s.values() for c in part} == exported


def test_ingest_of_msd_keeps_the_declared_channels(msd_dir: Path, tmp_path: Path) -> None:
    from medtl.io.ingest import ingest_path

    manifest, rejected = ingest_path(msd_dir, tmp_path / "out", salt="s", progress=False)
    assert set(manifest["channels"]) == {2}
    assert nib.load(manifest["image"].iloc[0]).shape == (*SHAPE, 2)
    assert not any("4-D" in r for r in rejected["reason"])


def test_ingest_checks_labels_against_the_dataset_labels(nnunet_dir: Path, tmp_path: Path) -> None:
    from medtl.io.ingest import ingest_path

    label = _label(1)
    label[0, 0, 0] = 3  # dataset.json declares 0, 1, 2
    _save(nnunet_dir / "labelsTr" / "case_b.nii.gz", label)
    manifest, rejected = ingest_path(nnunet_dir, tmp_path / "out", salt="s", progress=False)
    assert "case_b" not in set(manifest["case_id"])
    (reason,) = rejected.loc[rejected["path"].str.contains("case_b"), "reason"]
    assert "label values 3 are not classes" in reason and "2 (cyst)" in reason
    # given classes win over the dataset's own
    manifest, _ = ingest_path(
        nnunet_dir, tmp_path / "out2", salt="s", progress=False, classes={1: "t", 2: "c", 3: "x"}
    )
    assert "case_b" in set(manifest["case_id"])
