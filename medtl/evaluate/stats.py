"""Per-arm summaries and paired comparisons of arms on the same held-out cases.

The input is ``metrics.csv``: one row per arm, held-out case and class. Each case is
held out in exactly one fold, so the arms' results on a case are paired; a case
belongs to a patient, and several cases (studies) may share a patient.

Methods, precisely:

* **Per-case values.** :func:`per_case` averages an arm's rows of a case over its
  classes (NaN values left out); this is the unit of every comparison.
* **Confidence interval of a mean** (:func:`bootstrap_ci`). The resampling unit is the
  *patient*, not the case: cases of one patient are correlated, and resampling them
  independently would give intervals that are too narrow. ``scipy.stats.bootstrap``
  resamples the patient indices with replacement; the statistic of a resample is the
  sum of the case values of the drawn patients divided by the number of their cases
  (the cluster bootstrap of the case mean; on the full sample it is the plain mean over
  cases, so a patient with three cases weighs three times as much as a patient with
  one). The interval is BCa; where BCa is degenerate (NaN, e.g. all values equal) the
  percentile interval of the same bootstrap distribution is used. Without a patient
  map every case is its own patient, and the interval equals
  ``scipy.stats.bootstrap((x,), np.mean, method="BCa")`` with the same generator.
* **Paired comparison** (:func:`compare_arms`). Two arms are joined on the cases both
  were evaluated on; the per-case differences ``arm - reference`` are tested with a
  two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, its defaults; not
  reported with fewer than 6 cases or when all differences are zero), and the CI of the
  mean difference is :func:`bootstrap_ci` of the differences (resampling patients).
  The Wilcoxon test treats cases as independent; with many cases per patient its
  p-value is optimistic, while the interval is not.
* **Several arms** (:func:`compare_all_pairs`). Every unordered pair of arms is
  compared once, the better arm of the pair (by the mean over shared cases, in the
  metric's direction) as ``arm``. The family of Wilcoxon p-values is adjusted with
  Holm's step-down method (:func:`holm`), which controls the family-wise error rate:
  with the p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value is
  ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
* **Verdict** (:func:`verdict`). The best arm is the one with the best mean over cases
  (each case averaged over its classes). The evidence holds when the best arm beats
  every other arm with a Holm-adjusted p < 0.05 (and the paired difference in its
  favour); otherwise the sentence names the arms it cannot be separated from.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap, wilcoxon

from medtl.io.errors import MedtlError

#: Significance threshold of the Wilcoxon test (of the Holm-adjusted p in a family).
ALPHA = 0.05

#: Fewest paired cases for which the Wilcoxon test is reported.
MIN_CASES_FOR_TEST = 6

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


@dataclass(frozen=True)
class PairedComparison:
    """One arm against the reference arm on the same cases.

    Attributes:
        arm: the arm compared.
        reference: the reference arm (usually ``scratch``).
        metric: a column of ``metrics.csv`` (``dice``, ``hd95``, ...).
        n: paired cases.
        mean_diff: mean of ``arm - reference`` over cases.
        median_diff: median of ``arm - reference``.
        ci_low: lower end of the 95 % bootstrap CI of the mean difference
            (BCa, patients resampled; see :func:`bootstrap_ci`).
        ci_high: upper end of that CI.
        p_value: two-sided Wilcoxon signed-rank p (NaN when the test is not possible).
        statement: one English sentence stating the result and its meaning.
        p_holm: Holm-adjusted p within a family of comparisons (set by
            :func:`compare_all_pairs`; NaN for a single comparison or no test).
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
    p_holm: float = math.nan


def _check_columns(metrics: pd.DataFrame, metric: str, extra: tuple[str, ...] = ()) -> None:
    needed = {"arm", "case", "class", metric, *extra}
    missing = needed - set(metrics.columns)
    if missing:
        raise StatsError(
            f"metrics table: expected columns {sorted(needed)}, missing {sorted(missing)}. "
            "How to fix: pass the table written by evaluate_predictions (metrics.csv)."
        )


def _metric_info(metric: str) -> tuple[str, str, bool, int]:
    """Display name, unit, higher-is-better and decimal digits of a metric."""
    name, unit, higher_better = METRICS.get(metric, (metric, "", True))
    return name, unit, higher_better, (3 if not unit else 2)


# ----------------------------------------------------------------------------- bootstrap


def cluster_mean_statistic(
    values: pd.Series, groups: pd.Series | Mapping | None = None
) -> tuple[Callable[..., np.ndarray], int]:
    """The cluster-bootstrap statistic of the case mean, on patient indices.

    Args:
        values: one value per case, indexed by case; NaN values are dropped.
        groups: maps case → patient (a Series indexed by case, or a mapping). ``None``:
            every case is its own patient. Cases missing from it (or mapped to NaN)
            count as a patient of their own. Patients are numbered in order of first
            appearance in ``values``.

    Returns:
        ``(statistic, n_patients)``: ``statistic(idx, axis=-1)`` takes patient indices
        (any shape, resamples along ``axis``) and returns the sum of the drawn
        patients' case values divided by the number of their cases.

    Example:
        >>> v = pd.Series([1.0, 1.0, 1.0, 0.0], index=["a1", "a2", "a3", "b1"])
        >>> stat, n = cluster_mean_statistic(v, {"a1": "A", "a2": "A", "a3": "A", "b1": "B"})
        >>> n, float(stat(np.arange(n))), float(stat(np.array([1, 1])))
        (2, 0.75, 0.0)
    """
    values = pd.to_numeric(values, errors="coerce").dropna()
    x = values.to_numpy(dtype=float)
    if groups is None:
        codes, _ = pd.factorize(values.index)
    else:
        patients = values.index.map(groups)
        codes, uniques = pd.factorize(patients)
        alone = codes < 0
        if alone.any():
            own, _ = pd.factorize(values.index[alone])
            codes = codes.copy()
            codes[alone] = own + len(uniques)
    n_patients = int(codes.max()) + 1 if codes.size else 0
    sums = np.bincount(codes, weights=x, minlength=n_patients)
    counts = np.bincount(codes, minlength=n_patients).astype(float)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.intp)
        return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)

    return statistic, n_patients


def bootstrap_ci(
    values: pd.Series,
    groups: pd.Series | Mapping | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap CI of the mean over cases, resampling patients (the cluster bootstrap).

    ``scipy.stats.bootstrap`` resamples the patient indices with replacement
    (``n_boot`` times, generator ``numpy.random.default_rng(seed)``, vectorized); the
    statistic of a resample is the sum of the drawn patients' case values divided by
    the number of their cases (:func:`cluster_mean_statistic`). The interval is BCa;
    where BCa is degenerate (a NaN end, e.g. when all values are equal) the percentile
    interval of the same bootstrap distribution is returned instead. With one case per
    patient the result equals ``scipy.stats.bootstrap((x,), np.mean, method="BCa")``.

    Args:
        values: one value per case, indexed by case; NaN values are dropped first.
        groups: maps case → patient; ``None``: every case is its own patient. Cases
            missing from it count as a patient of their own.
        n_boot: bootstrap resamples.
        seed: seed of the generator.
        confidence: confidence level of the two-sided interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` with fewer than 2 patients.
    """
    statistic, n_patients = cluster_mean_statistic(values, groups)
    if n_patients < 2:
        return math.nan, math.nan
    data = (np.arange(n_patients),)
    common = dict(vectorized=True, axis=-1, confidence_level=confidence)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = bootstrap(
            data,
            statistic,
            n_resamples=n_boot,
            method="BCa",
            rng=np.random.default_rng(seed),
            **common,
        )
        low, high = res.confidence_interval
        if not (math.isfinite(low) and math.isfinite(high)):
            res = bootstrap(
                data,
                statistic,
                n_resamples=0,
                method="percentile",
                bootstrap_result=res,
                rng=np.random.default_rng(seed),
                **common,
            )
            low, high = res.confidence_interval
    return float(low), float(high)


# ----------------------------------------------------------------------------- summaries


def summarise_arms(
    metrics: pd.DataFrame,
    metric: str = "dice",
    *,
    groups: pd.Series | Mapping | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per arm and class: number of finite values, mean, SD, median and CI of the mean.

    Args:
        metrics: the ``metrics.csv`` table (columns ``arm, fold, case, class, ...``).
        metric: column to summarise (``dice``, ``hd95``, ...); NaN values are left out.
        groups: maps case → patient, for the CI (see :func:`bootstrap_ci`).
        n_boot: bootstrap resamples of the CI.
        seed: seed of the CI's generator.

    Returns:
        Columns ``arm, class, n, mean, sd, median, ci_low, ci_high`` (``sd`` with
        ddof=1, NaN for n < 2; the 95 % CI of the mean over cases resamples patients,
        NaN with fewer than 2 patients), one row per arm and class, in order of first
        appearance.
    """
    _check_columns(metrics, metric)
    values = pd.to_numeric(metrics[metric], errors="coerce")
    grouped = values.groupby([metrics["arm"], metrics["class"]], sort=False)
    out = grouped.agg(n="count", mean="mean", sd="std", median="median").reset_index()
    out["n"] = out["n"].astype(int)
    cis = []
    for (_, _), part in metrics.assign(_v=values).groupby(["arm", "class"], sort=False):
        by_case = pd.Series(part["_v"].to_numpy(), index=part["case"].to_numpy()).sort_index(
            kind="stable"
        )
        cis.append(bootstrap_ci(by_case, groups, n_boot=n_boot, seed=seed))
    out["ci_low"] = [c[0] for c in cis]
    out["ci_high"] = [c[1] for c in cis]
    return out[["arm", "class", "n", "mean", "sd", "median", "ci_low", "ci_high"]]


def fold_table(metrics: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per arm, fold and class: number of finite values, mean and SD.

    Args:
        metrics: the ``metrics.csv`` table.
        metric: column to summarise; NaN values are left out.

    Returns:
        Columns ``arm, fold, class, n, mean, sd`` (``sd`` with ddof=1, NaN for n < 2);
        arms and classes in order of first appearance, folds ascending within an arm.
    """
    _check_columns(metrics, metric, ("fold",))
    values = pd.to_numeric(metrics[metric], errors="coerce")
    keys = [metrics["arm"], metrics["fold"], metrics["class"]]
    out = values.groupby(keys, sort=False).agg(n="count", mean="mean", sd="std").reset_index()
    out["n"] = out["n"].astype(int)
    arm_rank = {a: i for i, a in enumerate(pd.unique(metrics["arm"]))}
    class_rank = {c: i for i, c in enumerate(pd.unique(metrics["class"]))}
    order = pd.DataFrame(
        {"a": out["arm"].map(arm_rank), "f": out["fold"], "c": out["class"].map(class_rank)}
    ).sort_values(["a", "f", "c"], kind="stable")
    return out.loc[order.index, ["arm", "fold", "class", "n", "mean", "sd"]].reset_index(drop=True)


def per_case(metrics: pd.DataFrame, arm: str, metric: str = "dice") -> pd.Series:
    """One value per case for an arm: the mean over classes (and folds, if repeated).

    Args:
        metrics: the ``metrics.csv`` table.
        arm: the arm to select.
        metric: column to average; NaN values are ignored, cases with none are dropped.

    Returns:
        A Series indexed by case, sorted by case.
    """
    _check_columns(metrics, metric)
    sel = metrics[metrics["arm"] == arm]
    values = pd.to_numeric(sel[metric], errors="coerce")
    return values.groupby(sel["case"]).mean().dropna()


def per_case_table(metrics: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One row per case: its fold and, per arm, the case value averaged over classes.

    Args:
        metrics: the ``metrics.csv`` table.
        metric: column to average; NaN values are ignored (NaN where an arm has none).

    Returns:
        Columns ``case, fold`` and one per arm (in order of first appearance), sorted
        by case.

    Raises:
        StatsError: if a column is missing or a case was held out in more than one fold.
    """
    _check_columns(metrics, metric, ("fold",))
    folds = metrics.groupby("case")["fold"].unique()
    several = folds[folds.map(len) > 1]
    if not several.empty:
        case = several.index[0]
        raise StatsError(
            f"metrics table: expected each case in one fold, found {case!r} in folds "
            f"{sorted(several[case].tolist())} ({len(several)} such cases). "
            "How to fix: pass the metrics of one cross-validation run."
        )
    values = pd.to_numeric(metrics[metric], errors="coerce")
    wide = values.groupby([metrics["case"], metrics["arm"]]).mean().unstack("arm")
    arms = list(pd.unique(metrics["arm"]))
    wide = wide.reindex(columns=arms)
    wide.columns.name = None
    out = pd.DataFrame({"fold": folds.map(lambda f: f[0])}).join(wide)
    out.index.name = "case"
    return out.sort_index().reset_index()


# ----------------------------------------------------------------------------- tests


def _wilcoxon_p(diff: np.ndarray) -> float:
    if diff.size < MIN_CASES_FOR_TEST or not np.any(diff != 0):
        return math.nan
    return float(wilcoxon(diff, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values.

    With the ``m`` finite p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted
    value of ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) p_(j))``: monotone in the
    raw p and capped at 1. NaN entries stay NaN and do not count in ``m``. Matches
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` (statsmodels is
    not a dependency, hence written here).

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
        >>> holm([0.5, float("nan"), 0.4])
        [0.8, nan, 0.8]
    """
    p = np.asarray(p_values, dtype=float).reshape(-1)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"holm: expected p-values in [0, 1], found {p[finite].tolist()}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        stepped = np.maximum.accumulate(p[order] * np.arange(m, 0, -1))
        out[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in out]


def format_p_value(p: float) -> str:
    """A p-value for text and tables: ``< 0.001``, two significant digits, or ``n/a``."""
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def _fmt_p(p: float) -> str:
    text = format_p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _statement(
    arm: str,
    reference: str,
    metric: str,
    n: int,
    mean_diff: float,
    ci: tuple,
    p: float,
    p_holm: float = math.nan,
    family: int = 0,
) -> str:
    """The sentence of a comparison; with ``family`` > 0 the decision uses ``p_holm``."""
    name, unit, higher_better, digits = _metric_info(metric)
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
    adjusted = family > 0 and math.isfinite(p_holm)
    decision = p_holm if adjusted else p
    plural = "s" if family != 1 else ""
    holm_txt = (
        f", Holm-adjusted {_fmt_p(p_holm)} over {family} comparison{plural}" if adjusted else ""
    )
    test_txt = f"Wilcoxon {_fmt_p(p)}{holm_txt}, n = {n} cases"
    if decision < ALPHA:
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
    decision_txt = f"Holm-adjusted {_fmt_p(p_holm)}" if adjusted else _fmt_p(p)
    return (
        f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
        f"({ci_txt}; {test_txt}): no evidence that {subject} helped ({decision_txt})."
    )


def _paired(metrics: pd.DataFrame, arm: str, reference: str, metric: str) -> pd.Series:
    """Per-case differences ``arm - reference`` on the shared cases, sorted by case."""
    a = per_case(metrics, arm, metric)
    r = per_case(metrics, reference, metric)
    joined = pd.concat({"arm": a, "ref": r}, axis=1, join="inner").sort_index()
    if joined.empty:
        raise StatsError(
            f"cannot compare {arm!r} with {reference!r} on {metric}: expected shared cases, "
            f"found {len(a)} cases for {arm!r} and {len(r)} for {reference!r}, none in common. "
            "How to fix: evaluate both arms on the same folds."
        )
    return joined["arm"] - joined["ref"]


def compare_arms(
    metrics: pd.DataFrame,
    arm: str,
    reference: str,
    metric: str = "dice",
    seed: int = 0,
    n_boot: int = 2000,
    *,
    groups: pd.Series | Mapping | None = None,
) -> PairedComparison:
    """Paired comparison of ``arm`` against ``reference`` on the cases both were evaluated on.

    Args:
        metrics: the ``metrics.csv`` table.
        arm: the arm compared (e.g. ``finetune``).
        reference: the reference arm (e.g. ``scratch``).
        metric: ``dice`` (higher is better), ``hd95`` (lower is better), ...
        seed: seed of the bootstrap's ``numpy.random.default_rng``.
        n_boot: bootstrap resamples.
        groups: maps case → patient; the bootstrap resamples patients (``None``: cases).

    Returns:
        The comparison, differences taken as ``arm - reference``; the CI is
        :func:`bootstrap_ci` of the per-case differences. The Wilcoxon p is NaN with
        fewer than 6 cases or when all differences are zero; ``p_holm`` is NaN.

    Raises:
        StatsError: if a column is missing or the arms share no case.
    """
    diffs = _paired(metrics, arm, reference, metric)
    diff = diffs.to_numpy(dtype=float)
    mean_diff = float(diff.mean())
    ci = bootstrap_ci(diffs, groups, n_boot=n_boot, seed=seed)
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


def compare_all_pairs(
    metrics: pd.DataFrame,
    arms: Sequence[str],
    metric: str = "dice",
    *,
    groups: pd.Series | Mapping | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[PairedComparison]:
    """Every unordered pair of arms compared once, with Holm's adjustment over the family.

    Ordering: pairs follow ``arms`` (``arms[i]`` with ``arms[j]`` for ``i < j``). Within
    a pair, ``arm`` is the better of the two by the mean over their shared cases in the
    metric's direction (higher for Dice, lower for HD95; on a tie ``arms[i]``) and
    ``reference`` the other, so ``mean_diff >= 0`` for higher-is-better metrics and
    ``<= 0`` for lower-is-better ones. Each comparison is :func:`compare_arms` with the
    same ``seed``; ``p_holm`` is :func:`holm` of the family's Wilcoxon p-values, and the
    statement bases its conclusion on it.

    Args:
        metrics: the ``metrics.csv`` table.
        arms: the arms to compare (at least one; duplicates are an error).
        metric: column compared.
        groups: maps case → patient, for the bootstrap.
        n_boot: bootstrap resamples per comparison.
        seed: seed of each comparison's bootstrap.

    Returns:
        ``k (k - 1) / 2`` comparisons for ``k`` arms.

    Raises:
        StatsError: if an arm is repeated, a column is missing or a pair shares no case.
    """
    arms = list(arms)
    if len(set(arms)) != len(arms):
        raise StatsError(
            f"compare_all_pairs: expected distinct arms, found {arms}. "
            "How to fix: list each arm once."
        )
    higher_better = _metric_info(metric)[2]
    out = []
    for first, second in combinations(arms, 2):
        d = float(_paired(metrics, second, first, metric).mean())
        second_better = d > 0 if higher_better else d < 0
        arm, reference = (second, first) if second_better else (first, second)
        out.append(compare_arms(metrics, arm, reference, metric, seed, n_boot, groups=groups))
    return holm_family(out)


def holm_family(comparisons: Sequence[PairedComparison]) -> list[PairedComparison]:
    """The comparisons with Holm-adjusted p-values over them as one family.

    Each gets ``p_holm`` and a statement whose conclusion rests on the adjusted p.
    """
    adjusted = holm([c.p_value for c in comparisons])
    family = sum(math.isfinite(c.p_value) for c in comparisons)
    return [
        replace(
            c,
            p_holm=ph,
            statement=_statement(
                c.arm,
                c.reference,
                c.metric,
                c.n,
                c.mean_diff,
                (c.ci_low, c.ci_high),
                c.p_value,
                ph,
                family,
            ),
        )
        for c, ph in zip(comparisons, adjusted, strict=True)
    ]


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(
    metrics: pd.DataFrame,
    arms: Sequence[str],
    comparisons: Sequence[PairedComparison],
    metric: str = "dice",
) -> str:
    """One English sentence: the best arm by mean and whether the evidence singles it out.

    The best arm has the best mean over cases (each case averaged over its classes; the
    highest for Dice, the lowest for HD95; on a tie the first in ``arms``). The evidence
    holds when, for every other arm, the comparison of the pair (from
    :func:`compare_all_pairs`) favours the best arm with a Holm-adjusted p < 0.05;
    otherwise the sentence names the arms it could not be separated from, with their
    Holm-adjusted p (``n/a`` where there was no test).

    Raises:
        StatsError: if no arm is given, an arm has no value, or a pair has no comparison.
    """
    arms = list(arms)
    name, unit, higher_better, digits = _metric_info(metric)
    if not arms:
        raise StatsError("verdict: expected at least one arm, found none.")
    means = {}
    for arm in arms:
        cases = per_case(metrics, arm, metric)
        if cases.empty:
            raise StatsError(
                f"verdict: expected {metric} values for arm {arm!r}, found none. "
                "How to fix: evaluate the arm or leave it out of the list."
            )
        means[arm] = float(cases.mean())
    best = (max if higher_better else min)(arms, key=lambda a: means[a])
    head = f"{best} has the best mean {name} ({means[best]:.{digits}f}{unit})"
    if len(arms) == 1:
        return (
            f"{best} is the only arm, with mean {name} {means[best]:.{digits}f}{unit}: "
            "there is nothing to compare."
        )
    beaten, unresolved = [], []
    for other in arms:
        if other == best:
            continue
        match = [c for c in comparisons if {c.arm, c.reference} == {best, other}]
        if not match:
            raise StatsError(
                f"verdict: expected a comparison of {best!r} with {other!r}, found none. "
                "How to fix: pass compare_all_pairs(metrics, arms, ...)."
            )
        c = match[0]
        gain = c.mean_diff if c.arm == best else -c.mean_diff  # best - other
        favours_best = gain > 0 if higher_better else gain < 0
        if favours_best and math.isfinite(c.p_holm) and c.p_holm < ALPHA:
            beaten.append(other)
        elif math.isfinite(c.p_holm) and c.p_holm < ALPHA:
            unresolved.append(
                f"{other} (on their shared cases the difference favours {other}, "
                f"Holm-adjusted {_fmt_p(c.p_holm)})"
            )
        else:
            unresolved.append(f"{other} (Holm-adjusted {_fmt_p(c.p_holm)})")
    if not unresolved:
        return (
            f"{head}; the evidence holds: it beats {_join(beaten)} "
            f"with Holm-adjusted p < {ALPHA:g}."
        )
    return (
        f"{head}, but the evidence does not single it out: "
        f"it is not distinguishable from {_join(unresolved)}."
    )
