"""Nested, patient-grouped subsets of a fold's training cases, for label-fraction curves.

A label-fraction curve trains each arm on a share of each fold's training cases and
evaluates it on the same held-out cases as the full run. The subsets are drawn per fold
from one seeded permutation of the fold's training *patients*, so they are

* grouped by patient (all studies of a patient are in, or none),
* nested (the 10 % subset is part of the 25 % subset, which is part of the 50 % one),
* reproducible (the same folds, fold and seed give the same subsets), and
* independent of which other fractions are asked for.

The fold's ``val`` (checkpoint selection) and ``test`` (held-out) cases never change.
:func:`medtl.evaluate.fractions.evaluate_fractions` then gathers the metrics of every
fraction into one table.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np

from medtl.kernel.errors import MedtlError
from medtl.split.folds import fold_cases, load_folds, save_folds


class SubsetError(MedtlError):
    """A label fraction or subset that cannot be used."""


def fraction_pct(fraction: float) -> int:
    """The fraction as a whole percentage, as it appears in folder names (``frac25``).

    Args:
        fraction: a share of the training cases, above 0 and at most 1.

    Raises:
        SubsetError: if the fraction is outside (0, 1] or rounds to 0 %.

    Example:
        >>> fraction_pct(0.25)
        25
    """
    check_fraction(fraction)
    pct = round(100 * float(fraction))
    if pct < 1:
        raise SubsetError(
            f"label fraction {fraction}: expected at least 1 % (folders are named by whole "
            f"percent), found {pct} % once rounded. How to fix: use a fraction of 0.01 or more."
        )
    return pct


def fraction_folders(fractions: list[float] | None) -> dict[int, float]:
    """Whole percent (the ``frac<pct>`` folder) → fraction, for the workflow's config.

    Args:
        fractions: the config key ``label_fractions`` (shares below 1), or None.

    Raises:
        SubsetError: if a fraction is outside (0, 1), rounds to 0 or 100 %, or two
            fractions round to the same percent.

    Example:
        >>> fraction_folders([0.5, 0.1])
        {10: 0.1, 50: 0.5}
    """
    out: dict[int, float] = {}
    for fraction in fractions or []:
        pct = fraction_pct(fraction)
        if pct >= 100 or pct in out:
            clash = "100 % is the normal run" if pct >= 100 else f"so does {out[pct]}"
            raise SubsetError(
                "config key 'label_fractions': expected distinct shares below 1 in whole "
                f"percent, found {fraction} ({pct} %; {clash}). How to fix: drop or change it."
            )
        out[pct] = float(fraction)
    return dict(sorted(out.items()))


def folder_fraction(folders: dict[int, float], pct: int | str) -> float:
    """The configured fraction behind a ``frac<pct>`` folder.

    Raises:
        SubsetError: if ``pct`` is not one of the configured fractions.
    """
    if int(pct) not in folders:
        raise SubsetError(
            f"fractions/frac{pct}: expected one of the configured label fractions "
            f"{sorted(folders.values())}, found {int(pct)} %. How to fix: add "
            f"{int(pct) / 100} to the config key 'label_fractions'."
        )
    return folders[int(pct)]


def check_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float after checking 0 < fraction <= 1.

    Raises:
        SubsetError: naming the value, if it is not a number in (0, 1].
    """
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = math.nan
    if not (0.0 < value <= 1.0):
        raise SubsetError(
            f"label fraction: expected a number above 0 and at most 1, found {fraction!r}. "
            "How to fix: write shares of the training cases, e.g. label_fractions: [0.1, 0.25]."
        )
    return value


def _fold_entry(folds: dict[str, Any], fold: int) -> dict[str, Any]:
    for entry in folds.get("folds", []):
        if int(entry["fold"]) == int(fold):
            return entry
    found = [int(f["fold"]) for f in folds.get("folds", [])]
    raise SubsetError(
        f"folds: expected fold {fold}, found folds {found}. "
        "How to fix: ask for a fold the split stage wrote."
    )


def training_patients(folds: dict[str, Any], fold: int) -> dict[str, list[str]]:
    """The fold's training patients (sorted) and, per patient, its training cases (sorted).

    Cases missing from ``folds["groups"]`` count as a patient of their own.
    """
    groups = folds.get("groups") or {}
    out: dict[str, list[str]] = {}
    for case in _fold_entry(folds, fold).get("train", []):
        out.setdefault(str(groups.get(case, case)), []).append(str(case))
    return {p: sorted(out[p]) for p in sorted(out)}


def nested_subsets(
    folds: dict[str, Any], fold: int, fractions: list[float], seed: int
) -> dict[float, list[str]]:
    """Nested, patient-grouped subsets of one fold's training cases.

    The fold's training patients are permuted once with a generator seeded by
    ``(seed, fold)``; each fraction ``f`` takes the cases of the first
    ``ceil(f × n_patients)`` patients (at least one). The permutation does not depend
    on ``fractions``, so subsets of different calls are nested too.

    Args:
        folds: the contents of ``folds.json`` (``groups`` maps case → patient).
        fold: the fold index.
        fractions: shares of the training patients, each in (0, 1].
        seed: seed of the permutation.

    Returns:
        ``{fraction: sorted training cases}``, in the order of ``fractions``.

    Raises:
        SubsetError: on a fraction outside (0, 1], an unknown fold, or a fold without
            training cases.

    Example:
        >>> f = {"groups": {"a": "p", "b": "p", "c": "q", "d": "r"},
        ...      "folds": [{"fold": 0, "train": ["a", "b", "c", "d"], "val": [], "test": []}]}
        >>> s = nested_subsets(f, 0, [0.3, 1.0], seed=0)
        >>> set(s[0.3]) <= set(s[1.0]), s[1.0]
        (True, ['a', 'b', 'c', 'd'])
    """
    checked = [check_fraction(f) for f in fractions]
    patients = training_patients(folds, fold)
    if not patients:
        raise SubsetError(
            f"fold {fold}: expected training cases to subsample, found none. "
            "How to fix: rerun the split stage with more labelled patients."
        )
    names = list(patients)
    order = np.random.default_rng([int(seed), int(fold)]).permutation(len(names))
    ranked = [names[i] for i in order]
    out: dict[float, list[str]] = {}
    for original, f in zip(fractions, checked, strict=True):
        n = min(len(ranked), max(1, math.ceil(f * len(ranked) - 1e-9)))
        out[original] = sorted(c for p in ranked[:n] for c in patients[p])
    return out


def fold_with_subset(folds: dict[str, Any], fold: int, train_cases: list[str]) -> dict[str, Any]:
    """A copy of ``folds`` whose fold ``fold`` trains on ``train_cases`` only.

    The fold's ``val`` and ``test`` cases and every other fold are unchanged, so
    ``train_arm`` and ``predict_fold`` run on the derived folds file as on the original.

    Args:
        folds: the contents of ``folds.json``.
        fold: the fold index.
        train_cases: the training cases to keep; a non-empty subset of the fold's own.

    Raises:
        SubsetError: if ``train_cases`` is empty or holds cases outside the fold's
            training cases.
    """
    full = set(_fold_entry(folds, fold).get("train", []))
    extra = sorted(set(train_cases) - full)
    if not train_cases or extra:
        found = f"cases outside it: {extra[:3]}" if extra else "no cases"
        raise SubsetError(
            f"fold {fold}: expected a non-empty subset of the fold's {len(full)} training "
            f"cases, found {found}. How to fix: draw the subset with nested_subsets."
        )
    out = copy.deepcopy(folds)
    entry = _fold_entry(out, fold)
    entry["train"] = sorted(train_cases)
    return out


def write_subset_folds(folds_path: Path, fold: int, fraction: float, seed: int, out: Path) -> Path:
    """Write a folds file whose fold ``fold`` trains on a ``fraction`` of its patients.

    The file is ``folds.json`` with that fold's ``train`` replaced by the subset of
    :func:`nested_subsets`, plus a ``subset`` record (fold, fraction, seed, number of
    training cases and patients kept, and of the full fold).

    Args:
        folds_path: the split stage's ``folds.json``.
        fold: the fold index.
        fraction: share of the fold's training patients, in (0, 1].
        seed: seed of the patient permutation.
        out: the folds file to write (atomically).

    Returns:
        ``out``.
    """
    folds = load_folds(Path(folds_path))
    cases = nested_subsets(folds, fold, [fraction], seed)[fraction]
    derived = fold_with_subset(folds, fold, cases)
    groups = folds.get("groups") or {}
    derived["subset"] = {
        "fold": int(fold),
        "fraction": check_fraction(fraction),
        "seed": int(seed),
        "train_cases": len(cases),
        "train_patients": len({groups.get(c, c) for c in cases}),
        "full_train_cases": len(fold_cases(folds, fold, "train")),
        "full_train_patients": len(training_patients(folds, fold)),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_folds(derived, out)
    return out


def subset_train_cases(path: Path, fold: int, fraction: float) -> int:
    """Number of training cases of fold ``fold`` in a subset folds file.

    Raises:
        SubsetError: if the file is missing, or was written for another fold or fraction.
    """
    path = Path(path)
    if not path.is_file():
        raise SubsetError(
            f"subset folds file not found: expected {path}. How to fix: run the workflow's "
            "'subset_folds' rule (or `medtl subset`) for this fraction and fold."
        )
    data = load_folds(path)
    record = data.get("subset") or {}
    if int(record.get("fold", -1)) != int(fold) or not math.isclose(
        float(record.get("fraction", math.nan)), float(fraction), abs_tol=1e-9
    ):
        raise SubsetError(
            f"{path}: expected the subset of fold {fold} at fraction {fraction}, found "
            f"fold {record.get('fold')} at fraction {record.get('fraction')}. "
            "How to fix: delete the file and rerun the 'subset_folds' rule."
        )
    return len(fold_cases(data, fold, "train"))
