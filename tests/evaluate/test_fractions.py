"""Tests for the label-fraction table (medtl.evaluate.fractions)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medtl.evaluate.fractions import FRACTION_COLUMNS, evaluate_fractions
from medtl.evaluate.metrics import METRIC_COLUMNS
from medtl.layout import predictions_dir
from medtl.split.folds import save_folds
from medtl.split.subsets import write_subset_folds


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
