"""Tests for reading nnU-Net v2 / MSD datasets (medtl.io.nnunet, medtl.io.msd)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtl.io.nnunet import ExternalCase, detect_format, read_external
from medtl.kernel.errors import InputError
from tests.support.nnunet_data import (
    SHAPE,
    msd_dir,
    nnunet_dir,
    random_image,
    random_label,
    save,
    write_json,
)

__all__ = ["msd_dir", "nnunet_dir"]  # fixtures


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
    save(nnunet_dir / "labelsTr" / "orphan.nii.gz", random_label(0))
    (nnunet_dir / "imagesTr" / "notes.txt").write_text("x")
    save(nnunet_dir / "imagesTr" / "case_d_0000.nii.gz", random_image(0))
    save(nnunet_dir / "imagesTr" / "case_d_0001.nii.gz", random_image(1))  # no label
    save(nnunet_dir / "imagesTr" / "case_e_0002.nii.gz", random_image(0))  # no channel 2
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
    save(nnunet_dir / "imagesTr" / "case_b_0001.nii.gz", np.zeros((3, 3, 3), np.float32))
    ds = read_external(nnunet_dir)
    assert "case_b" not in [c.case_id for c in ds.cases]
    assert any("differ in shape" in r.reason for r in ds.rejected)


def test_read_nnunet_explicit_dataset_listing(tmp_path: Path) -> None:
    d = tmp_path / "Dataset043_Listed"
    save(d / "somewhere" / "x_ct.nii.gz", random_image(0))
    save(d / "somewhere" / "x_seg.nii.gz", random_label(0))
    write_json(
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
    write_json(msd_dir, meta)
    save(msd_dir / "imagesTr" / "brain_003.nii.gz", random_image(3, channels=2))  # not listed
    (msd_dir / "labelsTr" / "brain_002.nii.gz").unlink()
    ds = read_external(msd_dir)
    assert [c.case_id for c in ds.cases] == ["brain_001", "brain_101"]
    reasons = {Path(r.path).name: r.reason for r in ds.rejected}
    assert set(reasons) == {"gone.nii.gz", "brain_002.nii.gz", "brain_003.nii.gz"}
    assert "not listed" in reasons["brain_003.nii.gz"]


def test_read_msd_style_without_modality(tmp_path: Path) -> None:
    """medtl's demo writes an MSD-style dataset.json; 'modality' may be absent."""
    d = tmp_path / "source"
    save(d / "imagesTr" / "src_000.nii.gz", random_image(0))
    save(d / "labelsTr" / "src_000.nii.gz", random_label(0))
    write_json(
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
    save(d / "imagesTr" / "p_00_0000.nii.gz", random_image(0))
    save(d / "imagesTr" / "p_00_0001.nii.gz", random_image(1))
    save(d / "labelsTr" / "p_00.nii.gz", random_label(0))
    write_json(
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
    write_json(d, meta)
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
    write_json(d, meta)
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
    write_json(d, meta)
    with pytest.raises(InputError, match="NIfTI only"):
        read_external(d)


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


def test_ingest_of_msd_keeps_the_declared_channels(msd_dir: Path, tmp_path: Path) -> None:
    from medtl.io.ingest import ingest_path

    manifest, rejected = ingest_path(msd_dir, tmp_path / "out", salt="s", progress=False)
    assert set(manifest["channels"]) == {2}
    assert nib.load(manifest["image"].iloc[0]).shape == (*SHAPE, 2)
    assert not any("4-D" in r for r in rejected["reason"])


def test_ingest_checks_labels_against_the_dataset_labels(nnunet_dir: Path, tmp_path: Path) -> None:
    from medtl.io.ingest import ingest_path

    label = random_label(1)
    label[0, 0, 0] = 3  # dataset.json declares 0, 1, 2
    save(nnunet_dir / "labelsTr" / "case_b.nii.gz", label)
    manifest, rejected = ingest_path(nnunet_dir, tmp_path / "out", salt="s", progress=False)
    assert "case_b" not in set(manifest["case_id"])
    (reason,) = rejected.loc[rejected["path"].str.contains("case_b"), "reason"]
    assert "label values 3 are not classes" in reason and "2 (cyst)" in reason
    # given classes win over the dataset's own
    manifest, _ = ingest_path(
        nnunet_dir, tmp_path / "out2", salt="s", progress=False, classes={1: "t", 2: "c", 3: "x"}
    )
    assert "case_b" in set(manifest["case_id"])
