"""Tiny nnU-Net v2 and MSD datasets on disk, for the reading and the export tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (4, 5, 6)
# oblique-free but not identity: flipped axis, anisotropic spacing, offset origin
AFFINE = np.array(
    [[-1.5, 0, 0, 10.0], [0, 1.2, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]], dtype=float
)


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def random_image(seed: int, channels: int | None = None) -> np.ndarray:
    shape = SHAPE if channels is None else (*SHAPE, channels)
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def random_label(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, SHAPE).astype(np.uint8)


def write_json(folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(meta))


def junk(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x05\x16\x07 macOS resource fork")


@pytest.fixture
def nnunet_dir(tmp_path: Path) -> Path:
    """Two channels, three training cases (case_c lacks channel 1), one test case."""
    d = tmp_path / "Dataset042_Tiny"
    write_json(
        d,
        {
            "channel_names": {"0": "CT", "1": "T2"},
            "labels": {"background": 0, "tumour": 1, "cyst": 2},
            "numTraining": 3,
            "file_ending": ".nii.gz",
        },
    )
    for i, case in enumerate(["case_a", "case_b", "case_c"]):
        save(d / "imagesTr" / f"{case}_0000.nii.gz", random_image(i))
        if case != "case_c":
            save(d / "imagesTr" / f"{case}_0001.nii.gz", random_image(10 + i))
        save(d / "labelsTr" / f"{case}.nii.gz", random_label(i))
    save(d / "imagesTs" / "test_x_0000.nii.gz", random_image(20))
    save(d / "imagesTs" / "test_x_0001.nii.gz", random_image(21))
    junk(d / "imagesTr" / "._case_a_0000.nii.gz")
    junk(d / "labelsTr" / "._case_a.nii.gz")
    junk(d / ".DS_Store")
    return d


@pytest.fixture
def msd_dir(tmp_path: Path) -> Path:
    """MSD task: 4-D two-channel images, macOS junk, a test list of plain strings."""
    d = tmp_path / "Task01_Tiny"
    training = []
    for i, case in enumerate(["brain_001", "brain_002"]):
        save(d / "imagesTr" / f"{case}.nii.gz", random_image(i, channels=2))
        save(d / "labelsTr" / f"{case}.nii.gz", random_label(i))
        training.append(
            {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
        )
    save(d / "imagesTs" / "brain_101.nii.gz", random_image(5, channels=2))
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        junk(d / sub / "._brain_001.nii.gz")
    write_json(
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
