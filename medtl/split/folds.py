"""Patient-grouped K-fold splits with an inner validation set per fold."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_write_text


def make_folds(
    manifest: pd.DataFrame, k: int, seed: int, val_fraction: float = 0.2
) -> dict[str, Any]:
    """Split labelled cases into ``k`` folds so that no patient spans two folds.

    Each fold holds ``test`` (held-out cases, predicted and evaluated), ``train`` and
    ``val`` (a patient-grouped share of the training cases, for checkpoint selection
    only, so that the held-out cases never steer training).

    Args:
        manifest: the ingest manifest (columns case_id, patient_id, label).
        k: number of folds.
        seed: shuffling seed.
        val_fraction: share of each fold's training patients used for validation.

    Example:
        >>> m = pd.DataFrame({"case_id": list("abcdef"), "patient_id": list("aabcde"),
        ...                   "label": ["x"] * 6})
        >>> f = make_folds(m, k=2, seed=0)
        >>> sorted(f["folds"][0]["test"] + f["folds"][1]["test"])
        ['a', 'b', 'c', 'd', 'e', 'f']
    """
    labelled = manifest[manifest["label"].fillna("").astype(str) != ""]
    patients = labelled["patient_id"].astype(str).to_numpy()
    cases = labelled["case_id"].astype(str).to_numpy()
    n_patients = len(set(patients))
    if k < 2 or n_patients < k:
        raise InputError(
            "manifest.tsv",
            f"{k} folds need at least {k} labelled patients, found {n_patients}",
            f"set splits.folds to at most {max(n_patients, 2)} (and at least 2), or add cases",
        )
    from sklearn.model_selection import GroupKFold  # slow to import; Snakefiles import this module

    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    rng = np.random.default_rng(seed)
    folds = []
    for fold, (train_idx, test_idx) in enumerate(splitter.split(cases, groups=patients)):
        train_patients = sorted(set(patients[train_idx]))
        n_val = max(1, math.ceil(val_fraction * len(train_patients)))
        if len(train_patients) - n_val < 1:
            n_val = 0
        val_patients = set(rng.choice(train_patients, n_val, replace=False).tolist())
        train = sorted(
            c
            for c, p in zip(cases[train_idx], patients[train_idx], strict=True)
            if p not in val_patients
        )
        val = sorted(
            c
            for c, p in zip(cases[train_idx], patients[train_idx], strict=True)
            if p in val_patients
        )
        entry = {"fold": fold, "train": train, "val": val, "test": sorted(cases[test_idx].tolist())}
        if not val:
            # A single training patient has to serve for checkpoint selection too.
            entry["val"] = train[:1]
            entry["note"] = "the validation case is also a training case (one training patient)"
        folds.append(entry)
    return {
        "k": k,
        "seed": seed,
        "val_fraction": val_fraction,
        "groups": dict(zip(cases.tolist(), patients.tolist(), strict=True)),
        "folds": folds,
    }


def save_folds(folds: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(folds, indent=2) + "\n")


def load_folds(path: Path) -> dict[str, Any]:
    """Read ``folds.json`` (the split stage's, or a label fraction's subset folds).

    The one reader of folds files: training, prediction, evaluation, post-processing and
    the report all read them here.

    Raises:
        InputError: if the file is missing or holds no ``folds`` list.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "folds file not found", "run the split stage first")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("folds"), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(
            path, f"expected a 'folds' list, found keys {found}", "rerun the split stage"
        )
    return data


def fold_cases(folds: dict[str, Any], fold: int, part: str) -> list[str]:
    """The cases of one part (``train``, ``val``, ``test``) of one fold."""
    for f in folds["folds"]:
        if f["fold"] == fold:
            return list(f[part])
    raise InputError(
        "folds.json",
        f"fold {fold} not found (k = {folds['k']})",
        f"use a fold between 0 and {folds['k'] - 1}",
    )
