"""Tests for nested, patient-grouped training subsets (medtl.split.subsets)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.evaluate.metrics import METRIC_COLUMNS
from medtl.layout import predictions_dir
from medtl.split.folds import make_folds, save_folds
from medtl.split.subsets import (
    FRACTION_COLUMNS,
    SubsetError,
    evaluate_fractions,
    fold_with_subset,
    fraction_pct,
    nested_subsets,
    subset_train_cases,
    write_subset_folds,
)

FRACTIONS = [0.1, 0.25, 0.5, 1.0]


def _folds(n_patients: int = 20, k: int = 3) -> dict:
    """Folds of patients with one to three studies each."""
    rows = [
        {"case_id": f"p{p:02d}_s{s}", "patient_id": f"pat{p:02d}", "label": "x"}
        for p in range(n_patients)
        for s in range(1 + p % 3)
    ]
    return make_folds(pd.DataFrame(rows), k=k, seed=0)


def _train_patients(folds: dict, fold: int) -> set[str]:
    return {folds["groups"][c] for c in folds["folds"][fold]["train"]}


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_subsets_are_nested_and_patient_grouped(fold: int) -> None:
    folds = _folds()
    subsets = nested_subsets(folds, fold, FRACTIONS, seed=4)
    assert list(subsets) == FRACTIONS
    full = folds["folds"][fold]["train"]
    assert subsets[1.0] == sorted(full)
    for small, large in zip(FRACTIONS, FRACTIONS[1:], strict=False):
        assert set(subsets[small]) <= set(subsets[large])
    n_patients = len(_train_patients(folds, fold))
    for f, cases in subsets.items():
        patients = {folds["groups"][c] for c in cases}
        # Whole patients only: every training study of a chosen patient is in.
        assert set(cases) == {c for c in full if folds["groups"][c] in patients}
        assert len(patients) == max(1, int(np.ceil(f * n_patients - 1e-9)))


def test_nesting_holds_across_calls_and_seed_matters() -> None:
    folds = _folds()
    alone = nested_subsets(folds, 0, [0.25], seed=4)[0.25]
    together = nested_subsets(folds, 0, [0.5, 0.25], seed=4)
    assert alone == together[0.25]
    assert set(alone) <= set(together[0.5])
    assert nested_subsets(folds, 0, [0.25], seed=4) == nested_subsets(folds, 0, [0.25], seed=4)
    draws = {tuple(nested_subsets(folds, 0, [0.25], seed=s)[0.25]) for s in range(6)}
    assert len(draws) > 1
    # Folds draw their own permutations.
    assert nested_subsets(folds, 0, [0.5], 4) != nested_subsets(folds, 1, [0.5], 4)


def test_tiny_fraction_keeps_one_patient() -> None:
    folds = _folds(n_patients=6, k=2)
    cases = nested_subsets(folds, 0, [0.01], seed=0)[0.01]
    assert len({folds["groups"][c] for c in cases}) == 1


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "half", None])
def test_bad_fraction_is_refused(bad) -> None:
    with pytest.raises(SubsetError, match="expected a number above 0 and at most 1"):
        nested_subsets(_folds(), 0, [bad], seed=0)


def test_fraction_pct() -> None:
    assert [fraction_pct(f) for f in (0.1, 0.25, 0.5, 1.0)] == [10, 25, 50, 100]
    with pytest.raises(SubsetError, match="at least 1 %"):
        fraction_pct(0.001)


def test_fold_with_subset_changes_only_that_fold_train() -> None:
    folds = _folds()
    cases = nested_subsets(folds, 1, [0.25], seed=0)[0.25]
    derived = fold_with_subset(folds, 1, cases)
    assert derived["folds"][1]["train"] == sorted(cases)
    for key in ("val", "test"):
        assert derived["folds"][1][key] == folds["folds"][1][key]
    assert derived["folds"][0] == folds["folds"][0]
    assert derived["groups"] == folds["groups"]
    assert folds["folds"][1]["train"] != derived["folds"][1]["train"]  # input not mutated
    with pytest.raises(SubsetError, match="cases outside it"):
        fold_with_subset(folds, 1, [*cases, folds["folds"][1]["test"][0]])
    with pytest.raises(SubsetError, match="no cases"):
        fold_with_subset(folds, 1, [])
    with pytest.raises(SubsetError, match="expected fold 7"):
        fold_with_subset(folds, 7, cases)


def test_write_subset_folds_round_trip(tmp_path: Path) -> None:
    folds = _folds()
    src = tmp_path / "folds.json"
    save_folds(folds, src)
    out = write_subset_folds(src, 2, 0.5, 3, tmp_path / "frac50" / "fold2" / "folds.json")
    data = json.loads(out.read_text())
    assert data["folds"][2]["train"] == nested_subsets(folds, 2, [0.5], 3)[0.5]
    assert data["folds"][2]["test"] == folds["folds"][2]["test"]
    record = data["subset"]
    assert record["fold"] == 2 and record["fraction"] == 0.5 and record["seed"] == 3
    assert record["train_cases"] == len(data["folds"][2]["train"])
    assert record["full_train_patients"] == len(_train_patients(folds, 2))
    assert subset_train_cases(out, 2, 0.5) == record["train_cases"]
    with pytest.raises(SubsetError, match="expected the subset of fold 1 at fraction 0.5"):
        subset_train_cases(out, 1, 0.5)
    with pytest.raises(SubsetError, match="subset_folds"):
        subset_train_cases(tmp_path / "nope.json", 2, 0.5)


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.eye(4)), str(path))


def test_evaluate_fractions_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cases = [f"c{i}" for i in range(4)]
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:6, 2:6, 1:3] = 1
    for c in cases:
        _save(label, Path("data") / f"{c}.nii.gz")
    pd.DataFrame(
        {"case_id": cases, "image": "", "label": [f"data/{c}.nii.gz" for c in cases]}
    ).to_csv("manifest.tsv", sep="\t", index=False)
    folds = {
        "k": 2,
        "groups": {c: c for c in cases},
        "folds": [
            {"fold": 0, "train": cases[2:], "val": cases[2:3], "test": cases[:2]},
            {"fold": 1, "train": cases[:2], "val": cases[:1], "test": cases[2:]},
        ],
    }
    save_folds(folds, Path("folds.json"))
    root = Path("fractions")
    for k in (0, 1):
        write_subset_folds(
            Path("folds.json"), k, 0.5, 0, root / "frac50" / f"fold{k}" / "folds.json"
        )
        for arm, pred in (("scratch", np.zeros_like(label)), ("finetune", label)):
            for c in folds["folds"][k]["test"]:
                _save(pred, predictions_dir(root / "frac50", arm, 1, k) / f"{c}.nii.gz")
    full = pd.DataFrame(
        [[a, k, c, "fg", 0.9, 1.0] for a in ("scratch", "finetune") for k in (0, 1) for c in cases]
    )
    full.columns = ["arm", "fold", "case", "class", "dice", "hd95"]
    full = full.reindex(columns=METRIC_COLUMNS, fill_value=0.0).assign(empty="", seed=1)
    full.to_csv("metrics.csv", index=False)

    out = Path("evaluation") / "label_fraction.csv"
    table = evaluate_fractions(
        Path("manifest.tsv"),
        Path("folds.json"),
        root,
        [0.5],
        ["scratch", "finetune"],
        {1: "fg"},
        out,
        full_metrics=Path("metrics.csv"),
        seeds={"scratch": [1], "finetune": [1]},
    )
    assert list(pd.read_csv(out).columns) == FRACTION_COLUMNS
    assert set(table["seed"]) == {1}
    half = table[table["fraction"] == 0.5]
    assert len(half) == 2 * len(cases)
    assert set(half["labelled_cases"]) == {1.0}  # one of two patients per fold
    assert (half.loc[half["arm"] == "finetune", "dice"] == 1.0).all()
    assert (half.loc[half["arm"] == "scratch", "dice"] == 0.0).all()
    whole = table[table["fraction"] == 1.0]
    assert len(whole) == len(full) and set(whole["labelled_cases"]) == {2.0}
    assert sorted(p.name for p in out.parent.iterdir()) == ["label_fraction.csv"]
