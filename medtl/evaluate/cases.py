"""One value per case (and seed) of an arm, from ``metrics.csv``: what every statistic rests on.

Also the vocabulary the statistics share: the metrics known to them, the significance
threshold, the names of the methods and the error of a comparison that cannot be made.
"""

from __future__ import annotations

import pandas as pd

from medtl.kernel.errors import MedtlError

#: Significance threshold of the Wilcoxon test (of the Holm-adjusted p in a family).
ALPHA = 0.05

#: How comparisons and intervals that count patients and training runs are described.
METHOD_RUNS = "patients and runs (t, Cochran–Cox)"

#: How comparisons and intervals that resample patients only are described.
METHOD_PATIENTS = "patients only (bootstrap, Wilcoxon)"

#: Method of a comparison of arms that share fewer than 2 seeds while other arms have 2
#: or more: the run variance of each arm's mean is taken from those arms (pooled).
METHOD_POOLED = "patients and runs, run SD pooled over other arms (t, Cochran–Cox)"

#: Metrics known to the summaries: display name, unit, and whether higher is better.
METRICS: dict[str, tuple[str, str, bool]] = {
    "dice": ("Dice", "", True),
    "iou": ("IoU", "", True),
    "hd95": ("HD95", " mm", False),
    "assd": ("ASSD", " mm", False),
    "nsd": ("NSD", "", True),
}


class StatsError(MedtlError):
    """A comparison that cannot be made with the metrics given."""


def check_columns(metrics: pd.DataFrame, metric: str, extra: tuple[str, ...] = ()) -> None:
    """Refuse a table without the columns a statistic of ``metric`` needs."""
    needed = {"arm", "case", "class", metric, *extra}
    missing = needed - set(metrics.columns)
    if missing:
        raise StatsError(
            f"metrics table: expected columns {sorted(needed)}, missing {sorted(missing)}. "
            "How to fix: pass the table written by evaluate_predictions (metrics.csv)."
        )


def metric_info(metric: str) -> tuple[str, str, bool, int]:
    """Display name, unit, higher-is-better and decimal digits of a metric."""
    name, unit, higher_better = METRICS.get(metric, (metric, "", True))
    return name, unit, higher_better, (3 if not unit else 2)


def seeds_of(metrics: pd.DataFrame) -> pd.Series:
    """The ``seed`` column of a metrics table; all 0 for a table without one (one seed).

    Tables written before training had a seeds axis have no ``seed`` column; they are one
    training run per arm and fold, here seed 0.
    """
    if "seed" in metrics.columns:
        return metrics["seed"]
    return pd.Series(0, index=metrics.index, name="seed")


def per_case_runs(metrics: pd.DataFrame, arm: str, metric: str = "dice") -> pd.DataFrame:
    """One value per case and seed for an arm: the mean over classes.

    Args:
        metrics: the ``metrics.csv`` table (with or without a ``seed`` column; without
            one the table is a single seed, column 0).
        arm: the arm to select.
        metric: column to average; NaN values are ignored (NaN where a case has none in a
            seed); cases without any value are dropped.

    Returns:
        A DataFrame indexed by case (sorted), one column per seed (ascending).

    Example:
        >>> m = pd.DataFrame({"arm": "A", "fold": 0, "seed": [1, 1, 2, 2], "case": "c",
        ...                   "class": ["x", "y", "x", "y"], "dice": [0.2, 0.4, 0.6, 0.8]})
        >>> per_case_runs(m, "A").round(3).to_dict()
        {1: {'c': 0.3}, 2: {'c': 0.7}}
    """
    check_columns(metrics, metric)
    sel = metrics["arm"] == arm
    values = pd.to_numeric(metrics.loc[sel, metric], errors="coerce")
    keys = [metrics.loc[sel, "case"], seeds_of(metrics)[sel].rename("seed")]
    wide = values.groupby(keys).mean().unstack("seed")
    wide = wide.dropna(how="all").sort_index().sort_index(axis=1)
    wide.columns.name = "seed"
    return wide


def arm_runs(metrics: pd.DataFrame, arm: str, metric: str, where: str, fix: str) -> pd.DataFrame:
    """:func:`per_case_runs` of an arm that must have values.

    Args:
        metrics: the ``metrics.csv`` table.
        arm: the arm.
        metric: the column.
        where: the function asking, for the message.
        fix: what the user can do, for the message.

    Raises:
        StatsError: if the arm has no value of ``metric``.
    """
    runs = per_case_runs(metrics, arm, metric)
    if runs.empty:
        raise StatsError(
            f"{where}: expected {metric} values for arm {arm!r}, found none. How to fix: {fix}"
        )
    return runs


def per_case(metrics: pd.DataFrame, arm: str, metric: str = "dice") -> pd.Series:
    """One value per case for an arm: the mean over classes, then over seeds.

    Args:
        metrics: the ``metrics.csv`` table (with or without a ``seed`` column).
        arm: the arm to select.
        metric: column to average; NaN values are ignored, cases with none are dropped.

    Returns:
        A Series indexed by case, sorted by case: the mean over seeds of
        :func:`per_case_runs` (seeds without a value left out). With one seed, the mean
        over classes.
    """
    runs = per_case_runs(metrics, arm, metric)
    return runs.mean(axis=1).rename(metric).dropna()


def per_case_table(metrics: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One row per case: its fold and, per arm, the case value (:func:`per_case`).

    A case is held out in one fold; with several seeds it appears once per seed, in
    that fold, and its value is averaged over classes and then over seeds.

    Args:
        metrics: the ``metrics.csv`` table (with or without a ``seed`` column).
        metric: column to average; NaN values are ignored (NaN where an arm has none).

    Returns:
        Columns ``case, fold`` and one per arm (in order of first appearance), sorted
        by case.

    Raises:
        StatsError: if a column is missing or a case was held out in more than one fold.
    """
    check_columns(metrics, metric, ("fold",))
    folds = metrics.groupby("case")["fold"].unique()
    several = folds[folds.map(len) > 1]
    if not several.empty:
        case = several.index[0]
        raise StatsError(
            f"metrics table: expected each case in one fold, found {case!r} in folds "
            f"{sorted(several[case].tolist())} ({len(several)} such cases). "
            "How to fix: pass the metrics of one cross-validation run."
        )
    arms = list(pd.unique(metrics["arm"]))
    wide = pd.DataFrame({arm: per_case(metrics, arm, metric) for arm in arms})
    wide = wide.reindex(index=folds.index, columns=arms)
    wide.columns.name = None
    out = pd.DataFrame({"fold": folds.map(lambda f: f[0])}).join(wide)
    out.index.name = "case"
    return out.sort_index().reset_index()
