"""Label-fraction curves evaluated: the metrics of every arm at every label fraction.

The runs of a fraction (:mod:`medtl.split.subsets` draws their training cases) are
evaluated on the same held-out cases as the full runs; the 100 % point of each curve is
the full runs' own ``metrics.csv``. The table is ``label_fraction.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtl.evaluate.metrics import evaluate_predictions, read_metrics
from medtl.kernel.files import atomic_write_text
from medtl.layout import fraction_dir, predictions_root, subset_folds_file
from medtl.split.folds import load_folds
from medtl.split.subsets import SubsetError, fraction_pct, subset_train_cases

#: Columns of ``label_fraction.csv``, in order.
FRACTION_COLUMNS = [
    "arm",
    "fraction",
    "labelled_cases",
    "fold",
    "seed",
    "case",
    "class",
    "dice",
    "hd95",
]


def full_label_rows(metrics: pd.DataFrame, arms: list[str], folds: dict[str, Any]) -> pd.DataFrame:
    """The full runs of ``arms`` as label-fraction rows: the 100 % point of each curve.

    Args:
        metrics: the full runs' ``metrics.csv`` table.
        arms: the arms whose rows to keep.
        folds: the split stage's ``folds.json`` (its training cases per fold).

    Returns:
        The rows of ``arms`` in :data:`FRACTION_COLUMNS`, with ``fraction`` 1 and
        ``labelled_cases`` the mean number of training cases per fold.

    Example:
        >>> m = pd.DataFrame({"arm": ["r", "s"], "fold": [0, 0], "case": ["x", "x"],
        ...                   "class": ["c", "c"], "dice": [0.7, 0.6]})
        >>> rows = full_label_rows(m, ["r"], {"folds": [{"train": ["y", "z"]}]})
        >>> rows[["arm", "fraction", "labelled_cases", "dice"]].to_dict("records")
        [{'arm': 'r', 'fraction': 1.0, 'labelled_cases': 2.0, 'dice': 0.7}]
    """
    full = metrics[metrics["arm"].isin(list(arms))].copy()
    full["fraction"] = 1.0
    full["labelled_cases"] = float(np.mean([len(f["train"]) for f in folds["folds"]]))
    return full[[c for c in FRACTION_COLUMNS if c in full]]


def evaluate_fractions(
    manifest: Path,
    folds: Path,
    fractions_root: Path,
    fractions: list[float],
    arms: list[str],
    classes: dict[int, str],
    out_csv: Path,
    full_metrics: Path | None = None,
    threads: int = 1,
    seeds: dict[str, list[int]] | None = None,
) -> pd.DataFrame:
    """Dice and HD95 of every arm at every label fraction, in one table.

    For each fraction, the predictions under
    ``fractions_root/frac<pct>/predictions/<arm>/seed<s>/fold<k>/`` are evaluated on the
    held-out cases of ``folds`` (the same as the full run's); the 100 % point is taken
    from the full run's ``metrics.csv`` when ``full_metrics`` is given.

    Args:
        manifest: ``results/ingest/manifest.tsv`` (reference labels).
        folds: the split stage's ``folds.json`` (the held-out cases).
        fractions_root: ``results/fractions`` (``frac<pct>/fold<k>/folds.json`` and
            ``frac<pct>/predictions/``).
        fractions: the label fractions below 1.
        arms: arm names.
        classes: ``{label value: class name}``, background excluded.
        out_csv: where to write ``label_fraction.csv`` (atomically).
        full_metrics: the full run's ``metrics.csv`` (the 100 % point), or None.
        threads: cases evaluated in parallel.
        seeds: per arm, its training seeds (:func:`medtl.config.training_seeds`). None:
            an earlier version's layout (``<arm>/fold<k>/``, no seed column).

    Returns:
        The table written: columns ``arm, fraction, labelled_cases, fold, seed, case,
        class, dice, hd95`` (no ``seed`` without ``seeds``); ``labelled_cases`` is the
        mean over folds of the number of training cases at that fraction.

    Raises:
        SubsetError: on a missing or stale subset folds file, or a full metrics table
            without an arm.
        EvaluationError: on a missing prediction or reference label.
    """
    folds_data = load_folds(Path(folds))
    fold_ids = [int(f["fold"]) for f in folds_data["folds"]]
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    runs = (
        [(arm, seed) for arm in arms for seed in seeds[arm]]
        if seeds
        else [(arm, None) for arm in arms]
    )
    frames = [
        _fraction_rows(
            manifest, folds, fold_ids, Path(fractions_root), fraction, runs, classes, threads
        )
        for fraction in fractions
    ]
    if full_metrics is not None:
        frames.append(_full_rows(full_metrics, arms, folds_data))
    table = _fraction_table(frames, full_metrics)
    atomic_write_text(Path(out_csv), table.to_csv(index=False))
    return table


def _fraction_rows(
    manifest: Path,
    folds: Path,
    fold_ids: list[int],
    root: Path,
    fraction: float,
    runs: list[tuple[str, int | None]],
    classes: dict[int, str],
    threads: int,
) -> pd.DataFrame:
    """The metrics of every (arm, seed) at one fraction, with ``fraction`` and
    ``labelled_cases`` (the mean over folds of its training cases) after ``arm``."""
    pct = fraction_pct(fraction)
    if pct >= 100:
        raise SubsetError(
            f"label fraction {fraction}: expected below 1 (the 100 % point is the full "
            "run), found a value that rounds to 100 %. How to fix: drop it from "
            "label_fractions."
        )
    counts = [subset_train_cases(subset_folds_file(root, pct, k), k, fraction) for k in fold_ids]
    predictions = predictions_root(fraction_dir(root, pct))
    parts = [
        evaluate_predictions(
            manifest, folds, predictions, [arm], classes, threads=threads, seed=seed
        )
        for arm, seed in runs
    ]
    df = pd.concat(parts, ignore_index=True)
    df.insert(1, "fraction", float(fraction))
    df.insert(2, "labelled_cases", float(np.mean(counts)))
    return df


def _full_rows(full_metrics: Path, arms: list[str], folds_data: dict) -> pd.DataFrame:
    """The 100 % point of each curve, from the full runs' ``metrics.csv``."""
    full = read_metrics(full_metrics)
    absent = [a for a in arms if a not in set(full["arm"])]
    if absent:
        raise SubsetError(
            f"{full_metrics}: expected results for arms {list(arms)}, missing {absent}. "
            "How to fix: rerun the 'evaluate' rule."
        )
    return full_label_rows(full, arms, folds_data)


def _fraction_table(frames: list[pd.DataFrame], full_metrics: Path | None) -> pd.DataFrame:
    """The rows of every fraction in :data:`FRACTION_COLUMNS`, sorted."""
    table = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FRACTION_COLUMNS)
    )
    if "seed" in table and table["seed"].isna().any():
        raise SubsetError(
            f"{full_metrics}: expected a seed column as in the label-fraction runs, found "
            "none (a table of an earlier version). How to fix: rerun the 'evaluate' rule."
        )
    table = table[[c for c in FRACTION_COLUMNS if c in table]]
    if len(table):
        table["fold"] = table["fold"].astype(int)
        key = [c for c in ("arm", "fraction", "seed", "fold", "case", "class") if c in table]
        if "seed" in table:
            table["seed"] = table["seed"].astype(int)
        table = table.sort_values(key, kind="stable").reset_index(drop=True)
    return table
