"""Tests for nested, patient-grouped training subsets (medtl.split.subsets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.split.folds import make_folds, save_folds
from medtl.split.subsets import (
    SubsetError,
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
