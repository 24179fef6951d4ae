"""Tests for patient-grouped cross-validation folds (medtl.split.folds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medtl.kernel.errors import InputError
from medtl.split.folds import fold_cases, load_folds, make_folds, save_folds


def _manifest(n_patients: int = 12, unlabelled: int = 2) -> pd.DataFrame:
    """Patients with one to three studies each, plus unlabelled cases."""
    rows = []
    for p in range(n_patients):
        for s in range(1 + p % 3):
            rows.append({"case_id": f"p{p:02d}_s{s}", "patient_id": f"pat{p:02d}", "label": "x"})
    for u in range(unlabelled):
        rows.append({"case_id": f"new{u}", "patient_id": f"pat{u:02d}", "label": ""})
    rows.append({"case_id": "nan_label", "patient_id": "patNaN", "label": None})
    return pd.DataFrame(rows)


def _patient_of(manifest: pd.DataFrame) -> dict[str, str]:
    return dict(zip(manifest["case_id"], manifest["patient_id"], strict=True))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_test_sets_partition_labelled_cases_by_patient(k: int) -> None:
    m = _manifest()
    folds = make_folds(m, k=k, seed=0)
    labelled = sorted(m.loc[m["label"].fillna("") != "", "case_id"])
    tests = [c for f in folds["folds"] for c in f["test"]]
    assert sorted(tests) == labelled  # every labelled case held out exactly once
    assert len(tests) == len(set(tests))
    assert [f["fold"] for f in folds["folds"]] == list(range(k))
    patient = _patient_of(m)
    owner: dict[str, int] = {}
    for f in folds["folds"]:
        for c in f["test"]:
            assert owner.setdefault(patient[c], f["fold"]) == f["fold"]  # one fold per patient


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_disjoint_within_fold(seed: int) -> None:
    m = _manifest()
    patient = _patient_of(m)
    folds = make_folds(m, k=3, seed=seed, val_fraction=0.25)
    for f in folds["folds"]:
        train, val, test = set(f["train"]), set(f["val"]), set(f["test"])
        assert train and val and test
        assert not train & val and not train & test and not val & test
        train_p = {patient[c] for c in train}
        val_p = {patient[c] for c in val}
        test_p = {patient[c] for c in test}
        assert not train_p & val_p
        assert not (train_p | val_p) & test_p
        # train + val + test cover all labelled cases
        assert len(train | val | test) == len(folds["groups"])


def test_val_fraction_sets_number_of_val_patients() -> None:
    m = _manifest(n_patients=10)
    patient = _patient_of(m)
    folds = make_folds(m, k=2, seed=0, val_fraction=0.4)
    for f in folds["folds"]:
        n_train_patients = len({patient[c] for c in f["train"] + f["val"]})
        assert len({patient[c] for c in f["val"]}) == -(-4 * n_train_patients // 10)  # ceil


def test_same_seed_same_folds_other_seed_other_folds() -> None:
    m = _manifest(n_patients=20)
    a = make_folds(m, k=4, seed=3)
    b = make_folds(m, k=4, seed=3)
    assert a == b
    others = [make_folds(m, k=4, seed=s)["folds"] for s in range(4, 9)]
    assert any(o != a["folds"] for o in others)


def test_unlabelled_cases_are_excluded() -> None:
    m = _manifest()
    folds = make_folds(m, k=3, seed=0)
    everywhere = {c for f in folds["folds"] for part in ("train", "val", "test") for c in f[part]}
    assert not {"new0", "new1", "nan_label"} & everywhere
    assert "new0" not in folds["groups"]
    assert folds["groups"]["p01_s1"] == "pat01"


def test_too_many_folds_for_patients() -> None:
    m = _manifest(n_patients=3)
    with pytest.raises(InputError) as info:
        make_folds(m, k=5, seed=0)
    err = info.value
    assert "5 folds" in err.reason and "found 3" in err.reason
    assert "splits.folds" in err.fix and "3" in err.fix
    assert "How to fix" in str(err)


def test_unlabelled_patients_do_not_count_towards_folds() -> None:
    m = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d"],
            "patient_id": ["p1", "p2", "p3", "p4"],
            "label": ["x", "x", "", ""],
        }
    )
    with pytest.raises(InputError, match="found 2"):
        make_folds(m, k=3, seed=0)
    assert len(make_folds(m, k=2, seed=0)["folds"]) == 2


def test_fewer_than_two_folds_refused() -> None:
    with pytest.raises(InputError, match="splits.folds"):
        make_folds(_manifest(), k=1, seed=0)


def test_save_load_and_fold_cases(tmp_path: Path) -> None:
    folds = make_folds(_manifest(), k=3, seed=0)
    path = tmp_path / "splits" / "folds.json"
    save_folds(folds, path)
    loaded = load_folds(path)
    assert loaded == folds
    assert fold_cases(loaded, 1, "test") == folds["folds"][1]["test"]
    assert fold_cases(loaded, 2, "val") == folds["folds"][2]["val"]
    with pytest.raises(InputError, match="fold 7 not found"):
        fold_cases(loaded, 7, "train")
    with pytest.raises(InputError, match="run the split stage"):
        load_folds(tmp_path / "missing.json")
