"""Dice and HD95 against hand-computed values, and evaluate_predictions on NIfTI files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.evaluate.metrics import (
    EvaluationError,
    case_metrics,
    dice_score,
    evaluate_predictions,
    hd95_mm,
)

# MONAI 1.5-1.6 passes a deprecated argument to itself inside compute_hausdorff_distance.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

CLASSES = {1: "tumour"}


def cube(shape=(20, 20, 20), start=(5, 5, 5), size=(6, 6, 6), value=1) -> np.ndarray:
    arr = np.zeros(shape, dtype=np.int16)
    sl = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    arr[sl] = value
    return arr


def test_dice_of_two_overlapping_cubes_is_exact():
    a = cube(start=(5, 5, 5), size=(6, 6, 6))  # 216 voxels
    b = cube(start=(8, 5, 5), size=(6, 6, 6))  # overlap 3 x 6 x 6 = 108
    assert dice_score(a, b) == pytest.approx(2 * 108 / (216 + 216))
    row = case_metrics(b, a, (1.0, 1.0, 1.0), CLASSES)[0]
    assert row["class"] == "tumour"
    assert row["dice"] == pytest.approx(0.5)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_hd95_of_cube_shifted_along_anisotropic_axis(d):
    spacing = (0.8, 0.8, 3.0)
    ref = cube(shape=(24, 24, 24), start=(6, 6, 6), size=(10, 10, 10))
    pred = cube(shape=(24, 24, 24), start=(6, 6, 6 + d), size=(10, 10, 10))
    assert hd95_mm(pred, ref, spacing) == pytest.approx(d * 3.0, rel=1e-5)
    # the same shift along an in-plane axis is measured with the in-plane spacing
    pred_x = cube(shape=(24, 24, 24), start=(6 + d, 6, 6), size=(10, 10, 10))
    assert hd95_mm(pred_x, ref, spacing) == pytest.approx(d * 0.8, rel=1e-5)


def test_identical_masks_have_dice_one_and_hd95_zero():
    a = cube()
    row = case_metrics(a, a, (1.5, 1.5, 3.0), CLASSES)[0]
    assert row == {"class": "tumour", "dice": 1.0, "hd95": 0.0}


def test_both_empty_gives_dice_one_and_nan_hd95():
    empty = np.zeros((8, 8, 8), np.int16)
    row = case_metrics(empty, empty, (1.0, 1.0, 1.0), CLASSES)[0]
    assert row["dice"] == 1.0
    assert math.isnan(row["hd95"])


@pytest.mark.parametrize("which", ["pred", "ref"])
def test_one_empty_gives_dice_zero_and_nan_hd95(which):
    empty, full = np.zeros((12, 12, 12), np.int16), cube(shape=(12, 12, 12), size=(3, 3, 3))
    pred, ref = (empty, full) if which == "pred" else (full, empty)
    row = case_metrics(pred, ref, (1.0, 1.0, 1.0), CLASSES)[0]
    assert row["dice"] == 0.0
    assert math.isnan(row["hd95"])


def test_classes_are_scored_separately():
    ref = cube(value=1) + cube(start=(12, 12, 12), size=(4, 4, 4), value=2)
    pred = cube(value=1)
    rows = case_metrics(pred, ref, (1.0, 1.0, 1.0), {1: "a", 2: "b"})
    assert [r["class"] for r in rows] == ["a", "b"]
    assert rows[0]["dice"] == 1.0
    assert rows[1]["dice"] == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), CLASSES)


# --------------------------------------------------------------- evaluate_predictions


def _save(arr: np.ndarray, path: Path, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(np.int16), affine), str(path))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """Two cases, one fold each as test, two arms; paths relative to the working dir."""
    monkeypatch.chdir(tmp_path)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    rows = []
    for case in ("c1", "c2"):
        ref = cube(shape=(16, 16, 16), start=(4, 4, 4), size=(6, 6, 6))
        _save(ref, Path("data") / f"{case}_label.nii.gz", affine)
        _save(ref, Path("data") / f"{case}_image.nii.gz", affine)
        rows.append(
            {
                "case_id": case,
                "patient_id": f"p_{case}",
                "image": f"data/{case}_image.nii.gz",
                "label": f"data/{case}_label.nii.gz",
                "modality": "MR",
                "spacing": "1.00x1.00x2.00",
                "shape": "16x16x16",
                "orientation": "RAS",
            }
        )
    Path("results/ingest").mkdir(parents=True)
    pd.DataFrame(rows).to_csv("results/ingest/manifest.tsv", sep="\t", index=False)
    folds = {
        "k": 2,
        "seed": 1,
        "groups": {"c1": "p_c1", "c2": "p_c2"},
        "folds": [
            {"fold": 0, "train": ["c2"], "val": [], "test": ["c1"]},
            {"fold": 1, "train": ["c1"], "val": [], "test": ["c2"]},
        ],
    }
    Path("results/splits").mkdir(parents=True)
    Path("results/splits/folds.json").write_text(json.dumps(folds))
    for arm, shift in (("scratch", 1), ("finetune", 0)):
        for k, case in ((0, "c1"), (1, "c2")):
            pred = cube(shape=(16, 16, 16), start=(4, 4, 4 + shift), size=(6, 6, 6))
            _save(pred, Path("results/predictions") / arm / f"fold{k}" / f"{case}.nii.gz", affine)
    return tmp_path


def _run(tmp_path: Path, arms=("scratch", "finetune"), threads=2) -> pd.DataFrame:
    return evaluate_predictions(
        Path("results/ingest/manifest.tsv"),
        Path("results/splits/folds.json"),
        Path("results/predictions"),
        list(arms),
        CLASSES,
        Path("results/evaluation/metrics.csv"),
        threads=threads,
    )


def test_evaluate_predictions_writes_sorted_csv(tree):
    df = _run(tree)
    assert list(df.columns) == ["arm", "fold", "case", "class", "dice", "hd95"]
    assert list(zip(df["arm"], df["fold"], df["case"], strict=True)) == [
        ("finetune", 0, "c1"),
        ("finetune", 1, "c2"),
        ("scratch", 0, "c1"),
        ("scratch", 1, "c2"),
    ]
    assert df.loc[df["arm"] == "finetune", "dice"].tolist() == [1.0, 1.0]
    scratch = df[df["arm"] == "scratch"]
    assert scratch["dice"].tolist() == pytest.approx([2 * 180 / 432] * 2)
    assert scratch["hd95"].tolist() == pytest.approx([2.0, 2.0])  # one voxel of 2 mm
    written = pd.read_csv(tree / "results/evaluation/metrics.csv")
    pd.testing.assert_frame_equal(written, df, check_dtype=False)
    leftovers = [p.name for p in (tree / "results/evaluation").iterdir()]
    assert leftovers == ["metrics.csv"]


def test_missing_prediction_names_file_and_rule(tree):
    missing = tree / "results/predictions/scratch/fold1/c2.nii.gz"
    missing.unlink()
    with pytest.raises(EvaluationError, match=r"scratch/fold1/c2\.nii\.gz.*rule 'predict'"):
        _run(tree)
    assert not (tree / "results/evaluation/metrics.csv").exists()


def test_prediction_on_another_grid_names_both_files(tree):
    pred = tree / "results/predictions/finetune/fold0/c1.nii.gz"
    _save(cube(shape=(16, 16, 16)), pred, np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(EvaluationError, match=r"finetune/fold0/c1\.nii\.gz.*c1_label\.nii\.gz"):
        _run(tree, threads=1)
