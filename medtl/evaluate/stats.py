"""Per-arm summaries and paired comparisons of arms on the same held-out cases.

Each case is held out in exactly one fold, so the arms' results on a case are paired:
:func:`compare_arms` averages each case over its classes, joins two arms on the case,
and tests the per-case differences with a two-sided Wilcoxon signed-rank test and a
paired bootstrap confidence interval of the mean difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from medtl.io.errors import MedtlError

#: Significance threshold of the Wilcoxon test.
ALPHA = 0.05

#: Fewest paired cases for which the Wilcoxon test is reported.
MIN_CASES_FOR_TEST = 6

#: Metrics known to the summaries: display name, unit, and whether higher is better.
METRICS: dict[str, tuple[str, str, bool]] = {
    "dice": ("Dice", "", True),
    "hd95": ("HD95", " mm", False),
}


class StatsError(MedtlError):
    """A comparison that cannot be made with the metrics given."""


@dataclass(frozen=True)
class PairedComparison:
    """One arm against the reference arm on the same cases.

    Attributes:
        arm: the arm compared.
        reference: the reference arm (usually ``scratch``).
        metric: ``dice`` or ``hd95``.
        n: paired cases.
        mean_diff: mean of ``arm - reference`` over cases.
        median_diff: median of ``arm - reference``.
        ci_low: lower end of the paired bootstrap 95 % CI of the mean difference.
        ci_high: upper end of that CI.
        p_value: two-sided Wilcoxon signed-rank p (NaN when the test is not possible).
        statement: one English sentence stating the result and its meaning.
    """

    arm: str
    reference: str
    metric: str
    n: int
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    statement: str


def _check_columns(metrics: pd.DataFrame, metric: str) -> None:
    needed = {"arm", "case", "class", metric}
    missing = needed - set(metrics.columns)
    if missing:
        raise StatsError(
            f"metrics table: expected columns {sorted(needed)}, missing {sorted(missing)}. "
            "How to fix: pass the table written by evaluate_predictions (metrics.csv)."
        )


def summarise_arms(metrics: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per arm and class: number of finite values, mean, standard deviation, median.

    Args:
        metrics: the ``metrics.csv`` table (columns ``arm, fold, case, class, ...``).
        metric: column to summarise (``dice`` or ``hd95``); NaN values are left out.

    Returns:
        Columns ``arm, class, n, mean, sd, median`` (``sd`` with ddof=1, NaN for n < 2),
        one row per arm and class, in order of first appearance.
    """
    _check_columns(metrics, metric)
    values = pd.to_numeric(metrics[metric], errors="coerce")
    grouped = values.groupby([metrics["arm"], metrics["class"]], sort=False)
    out = grouped.agg(n="count", mean="mean", sd="std", median="median").reset_index()
    out["n"] = out["n"].astype(int)
    return out[["arm", "class", "n", "mean", "sd", "median"]]


def per_case(metrics: pd.DataFrame, arm: str, metric: str = "dice") -> pd.Series:
    """One value per case for an arm: the mean over classes (and folds, if repeated).

    Args:
        metrics: the ``metrics.csv`` table.
        arm: the arm to select.
        metric: column to average; NaN values are ignored, cases with none are dropped.

    Returns:
        A Series indexed by case.
    """
    _check_columns(metrics, metric)
    sel = metrics[metrics["arm"] == arm]
    values = pd.to_numeric(sel[metric], errors="coerce")
    return values.groupby(sel["case"]).mean().dropna()


def _bootstrap_ci(diff: np.ndarray, seed: int, n_boot: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _wilcoxon_p(diff: np.ndarray) -> float:
    if diff.size < MIN_CASES_FOR_TEST or not np.any(diff != 0):
        return math.nan
    return float(wilcoxon(diff, alternative="two-sided").pvalue)


def format_p_value(p: float) -> str:
    """A p-value for text and tables: ``< 0.001``, two significant digits, or ``n/a``."""
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def _fmt_p(p: float) -> str:
    text = format_p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _statement(
    arm: str, reference: str, metric: str, n: int, mean_diff: float, ci: tuple, p: float
) -> str:
    name, unit, higher_better = METRICS.get(metric, (metric, "", True))
    digits = 3 if metric == "dice" else 2
    subject = "transfer" if reference == "scratch" else arm

    def num(x: float) -> str:
        return f"{x:.{digits}f}"

    improved = mean_diff > 0 if higher_better else mean_diff < 0
    size = f"{num(abs(mean_diff))}{unit}"
    ci_txt = f"95 % CI {num(ci[0])} to {num(ci[1])}{unit}"
    if math.isnan(p):
        why = "all differences are zero" if n >= MIN_CASES_FOR_TEST else f"n = {n} < 6"
        return (
            f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
            f"({ci_txt}, n = {n} cases): the Wilcoxon test is not possible ({why}), "
            f"so there is no evidence either way on whether {subject} helped."
        )
    test_txt = f"Wilcoxon {_fmt_p(p)}, n = {n} cases"
    if p < ALPHA:
        # the sentence gives a size; when the signed difference is negative, say so too
        signed = f"difference {mean_diff:+.{digits}f}{unit}, " if mean_diff < 0 else ""
        stats_txt = f"({signed}{ci_txt}; {test_txt})"
        if improved:
            return (
                f"{arm} improved mean {name} over {reference} by {size} {stats_txt}: "
                f"{subject} helped."
            )
        return (
            f"{arm} was worse than {reference} in mean {name} by {size} {stats_txt}: "
            f"{subject} hurt."
        )
    return (
        f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
        f"({ci_txt}; {test_txt}): no evidence that {subject} helped ({_fmt_p(p)})."
    )


def compare_arms(
    metrics: pd.DataFrame,
    arm: str,
    reference: str,
    metric: str = "dice",
    seed: int = 0,
    n_boot: int = 2000,
) -> PairedComparison:
    """Paired comparison of ``arm`` against ``reference`` on the cases both were evaluated on.

    Args:
        metrics: the ``metrics.csv`` table.
        arm: the arm compared (e.g. ``finetune``).
        reference: the reference arm (e.g. ``scratch``).
        metric: ``dice`` (higher is better) or ``hd95`` (lower is better).
        seed: seed of the bootstrap's ``numpy.random.default_rng``.
        n_boot: bootstrap resamples.

    Returns:
        The comparison, differences taken as ``arm - reference``. The Wilcoxon p is NaN
        with fewer than 6 cases or when all differences are zero.

    Raises:
        StatsError: if a column is missing or the arms share no case.
    """
    a = per_case(metrics, arm, metric)
    r = per_case(metrics, reference, metric)
    joined = pd.concat({"arm": a, "ref": r}, axis=1, join="inner").sort_index()
    if joined.empty:
        raise StatsError(
            f"cannot compare {arm!r} with {reference!r} on {metric}: expected shared cases, "
            f"found {len(a)} cases for {arm!r} and {len(r)} for {reference!r}, none in common. "
            "How to fix: evaluate both arms on the same folds."
        )
    diff = (joined["arm"] - joined["ref"]).to_numpy(dtype=float)
    mean_diff = float(diff.mean())
    ci = _bootstrap_ci(diff, seed, n_boot)
    p = _wilcoxon_p(diff)
    return PairedComparison(
        arm=arm,
        reference=reference,
        metric=metric,
        n=int(diff.size),
        mean_diff=mean_diff,
        median_diff=float(np.median(diff)),
        ci_low=ci[0],
        ci_high=ci[1],
        p_value=p,
        statement=_statement(arm, reference, metric, int(diff.size), mean_diff, ci, p),
    )
