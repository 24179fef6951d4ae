"""Tests for the nnU-Net v2 export and the splits (medtl.export.nnunet)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.export.nnunet import check_same_folds, export_nnunet, nnunet_case_id, nnunet_splits
from medtl.io.nnunet import read_external
from medtl.kernel.errors import InputError, MedtlError
from tests.support.nnunet_data import (
    AFFINE,
    SHAPE,
    nnunet_dir,
    random_image,
    random_label,
    save,
)

__all__ = ["nnunet_dir"]  # the fixture


# ----------------------------------------------------------------------------- export


def test_round_trip_four_d_two_channels(tmp_path: Path) -> None:
    src = tmp_path / "ingested"
    images = {c: random_image(i, channels=2) for i, c in enumerate(["p01.a", "p02", "p03"])}
    rows = []
    for case, data in images.items():
        image = save(src / "images" / f"{case}.nii.gz", data)
        label = (
            "" if case == "p03" else str(save(src / "labels" / f"{case}.nii.gz", random_label(1)))
        )
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
    img1 = save(tmp_path / "in" / "a.nii.gz", random_image(0))
    lab1 = save(tmp_path / "in" / "a_seg.nii.gz", random_label(0))
    img2 = save(tmp_path / "in" / "b.nii", random_image(1))  # other ending: re-saved, not copied
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
    image = save(tmp_path / "a.nii.gz", random_image(0))
    manifest = pd.DataFrame({"case_id": ["a"], "image": [str(image)], "label": [""]})
    with pytest.raises(MedtlError, match=r"1 channel\(s\), expected 2"):
        export_nnunet(manifest, tmp_path / "raw", 8, "X", {1: "a"}, {0: "T1", 1: "T2"})
    assert not (tmp_path / "raw").exists()


def test_export_sanitises_ids_and_refuses_collisions(tmp_path: Path) -> None:
    assert nnunet_case_id("pat 01.ct") == "pat_01_ct"
    assert nnunet_case_id("ok-id_2") == "ok-id_2"
    image = str(save(tmp_path / "a.nii.gz", random_image(0)))
    for ids in (["a.b", "a_b"], ["Case1", "case1"]):
        manifest = pd.DataFrame({"case_id": ids, "image": [image, image], "label": ["", ""]})
        with pytest.raises(MedtlError, match="both become"):
            export_nnunet(manifest, tmp_path / "raw", 9, "X", {1: "a"}, {0: "CT"})


def test_export_refuses_bad_classes_and_existing_output(tmp_path: Path) -> None:
    image = str(save(tmp_path / "a.nii.gz", random_image(0)))
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
    from medtl.io.ingest import ingest_path
    from medtl.io.manifest import read_manifest
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
