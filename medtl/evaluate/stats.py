"""Per-arm summaries and paired comparisons of arms on the same held-out cases.

The input is ``metrics.csv``: one row per arm, held-out case, class and (optionally)
training seed. Each case is held out in exactly one fold, so the arms' results on a case
are paired; a case belongs to a patient, and several cases (studies) may share a
patient. Each arm is trained once per fold and seed; a table without a ``seed`` column
is one seed. Seeds use common random numbers: seed ``s`` gives every arm the same batch
order and augmentation, so arm differences are paired within a seed as well.

Methods, precisely:

* **Per-case values.** :func:`per_case_runs` averages an arm's rows of a case and seed
  over its classes (NaN values left out); :func:`per_case` then averages over the
  arm's seeds. The case is the unit of every comparison.
* **Two sources of variance.** Patients vary, and so do training runs (a run is one
  trained model, a (seed, fold) pair shared by the patients of the fold). With one seed
  the run-to-run variance is not measured: the patient-only intervals and tests below
  are then a lower bound on the uncertainty. With at least 2 seeds both sources enter
  (:mod:`medtl.evaluate.runs`).
* **Confidence interval of a mean, patients only** (:func:`bootstrap_ci`). The
  resampling unit is the *patient*, not the case: cases of one patient are correlated,
  and resampling them independently would give intervals that are too narrow.
  ``scipy.stats.bootstrap`` resamples the patient indices with replacement; the
  statistic of a resample is the sum of the case values of the drawn patients divided
  by the number of their cases (the cluster bootstrap of the case mean; on the full
  sample it is the plain mean over cases, so a patient with three cases weighs three
  times as much as a patient with one). The interval is BCa; where BCa is degenerate
  (NaN, e.g. all values equal) the percentile interval of the same bootstrap
  distribution is used. Without a patient map every case is its own patient, and the
  interval equals ``scipy.stats.bootstrap((x,), np.mean, method="BCa")`` with the same
  generator.
* **Patients and runs** (:func:`medtl.evaluate.runs.run_aware_mean`), for a case × seed
  table: the mean of the seed-averaged case values, with ``se² = V_pat + V_run``:
  ``V_pat`` the cluster-robust variance over patients of the mean of the seed-averaged
  case values, ``V_run`` the variance of the per-seed means divided by the number of
  seeds; a t interval and two-sided t test whose critical value is the Cochran–Cox
  variance-weighted mean of the ``t_{P-1}`` and ``t_{S-1}`` quantiles (Satterthwaite's
  df, reported, was liberal with 2–3 seeds in simulation). It counts the residual twice, so it is
  conservative by about ``σe²/(P S)``. :func:`summarise_arms` uses it for an arm with at
  least 2 seeds, and :func:`bootstrap_ci` otherwise.
* **Paired comparison** (:func:`compare_arms`). When the two arms share at least 2
  seeds, the differences ``arm - reference`` are taken per shared case and shared seed
  (:func:`paired_runs`) and tested with the run-aware t test; its interval is the
  run-aware t interval. Otherwise each arm's case values are averaged over its own
  seeds, the per-case differences are tested with a two-sided Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``, its defaults; not reported with fewer than 6 cases or when
  all differences are zero), the CI is :func:`bootstrap_ci` of the differences, and the
  statement says that run-to-run variance is not measured and the CI is a lower bound
  on the uncertainty. The Wilcoxon test treats cases as independent; with many cases per
  patient its p-value is optimistic, while the interval is not.
* **Several arms** (:func:`compare_all_pairs`). Every unordered pair of arms is
  compared once, the better arm of the pair (by the mean over shared cases, in the
  metric's direction) as ``arm``. The family of p-values (t or Wilcoxon, whichever each
  comparison has) is adjusted with Holm's step-down method (:func:`holm`), which
  controls the family-wise error rate: with the p-values sorted,
  ``p_(1) <= ... <= p_(m)``, the adjusted value is
  ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
* **Verdict** (:func:`verdict`). The best arm is the one with the best mean over cases
  (each case averaged over its classes and seeds). The evidence holds when the best arm
  beats every other arm with a Holm-adjusted p < 0.05 (and the paired difference in its
  favour); otherwise the sentence names the arms it cannot be separated from.
* **A/A noise floor** (:func:`medtl.evaluate.runs.noise_floor`): how far two seeds of
  one arm differ, and how often the patient-only test calls an arm different from
  itself. Simulated calibration and power: :mod:`medtl.evaluate.power`.
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

from medtl.kernel.errors import MedtlError

#: Significance threshold of the Wilcoxon test (of the Holm-adjusted p in a family).
ALPHA = 0.05

#: Fewest paired cases for which the Wilcoxon test is reported.
MIN_CASES_FOR_TEST = 6

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
        seeds: seeds the two arms share (training runs per fold in the comparison).
        method: how the CI and p were obtained: ``"patients and runs (t, Cochran–Cox)"``
            when the arms share at least 2 seeds (then ``ci_low``, ``ci_high`` and
            ``p_value`` come from :func:`medtl.evaluate.runs.run_aware_mean`), otherwise
            ``"patients only (bootstrap, Wilcoxon)"``: run-to-run variance not measured.
        df: Satterthwaite degrees of freedom, for information (NaN for patients only).
        run_sd: SD of the per-seed mean differences (NaN with fewer than 2 seeds).
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
    seeds: int = 1
    method: str = METHOD_PATIENTS
    df: float = math.nan
    run_sd: float = math.nan


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
    """Per arm and class: number of cases, mean, SD, median and CI of the mean.

    A case's value is its mean over the arm's seeds (one seed: the value itself). With
    at least 2 seeds the CI counts patients and training runs as random
    (:func:`medtl.evaluate.runs.run_aware_mean`: cluster-robust variance over patients
    plus the variance of the per-seed means, t with the Cochran–Cox critical value); with
    one seed it is :func:`bootstrap_ci` (patients only; run-to-run variance not measured, so the
    interval is a lower bound on the uncertainty).

    Args:
        metrics: the ``metrics.csv`` table (columns ``arm, fold, [seed,] case, class, ...``).
        metric: column to summarise (``dice``, ``hd95``, ...); NaN values are left out.
        groups: maps case → patient, for the CI (see :func:`bootstrap_ci`).
        n_boot: bootstrap resamples of the CI.
        seed: seed of the CI's generator.

    Returns:
        Columns ``arm, class, n, mean, sd, median, ci_low, ci_high, seeds, run_sd,
        method``, one row per arm and class, in order of first appearance: ``n`` cases
        with a finite value, ``mean``, ``sd`` (ddof=1, NaN for n < 2) and ``median`` of
        their seed-averaged values, the 95 % CI of the mean (NaN with fewer than 2
        patients), ``seeds`` with a value, ``run_sd`` the SD of the per-seed means (NaN
        with one seed) and ``method`` how the CI was obtained. With one seed the first
        eight columns are those of a single-seed table.
    """
    from medtl.evaluate.runs import run_aware_mean

    _check_columns(metrics, metric)
    rows = []
    for (arm, cls), part in metrics.groupby(["arm", "class"], sort=False):
        runs = per_case_runs(part, arm, metric)
        x = runs.mean(axis=1)
        row = {
            "arm": arm,
            "class": cls,
            "n": int(x.size),
            "mean": float(x.mean()) if x.size else math.nan,
            "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
            "median": float(x.median()) if x.size else math.nan,
            "seeds": int(runs.shape[1]),
            "run_sd": math.nan,
            "method": METHOD_PATIENTS,
        }
        n_patients = cluster_mean_statistic(x, groups)[1]
        if runs.shape[1] >= 2 and n_patients >= 2:
            est = run_aware_mean(runs, groups)
            row.update(ci_low=est.ci_low, ci_high=est.ci_high, run_sd=est.run_sd)
            row["method"] = METHOD_RUNS
        else:
            row["ci_low"], row["ci_high"] = bootstrap_ci(x, groups, n_boot=n_boot, seed=seed)
        rows.append(row)
    cols = ["arm", "class", "n", "mean", "sd", "median", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=[*cols, "seeds", "run_sd", "method"])


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
    _check_columns(metrics, metric)
    sel = metrics["arm"] == arm
    values = pd.to_numeric(metrics.loc[sel, metric], errors="coerce")
    keys = [metrics.loc[sel, "case"], seeds_of(metrics)[sel].rename("seed")]
    wide = values.groupby(keys).mean().unstack("seed")
    wide = wide.dropna(how="all").sort_index().sort_index(axis=1)
    wide.columns.name = "seed"
    return wide


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
    arms = list(pd.unique(metrics["arm"]))
    wide = pd.DataFrame({arm: per_case(metrics, arm, metric) for arm in arms})
    wide = wide.reindex(index=folds.index, columns=arms)
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


def _runs_caveat(seeds: int) -> str:
    if seeds < 1:
        why = "the arms share no seed"
    elif seeds == 1:
        why = "one shared seed"
    else:
        why = "fewer than 2 patients"
    return (
        f"; run-to-run variance is not measured ({why}), "
        "so the CI is a lower bound on the uncertainty"
    )


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
    *,
    seeds: int = 1,
    method: str = METHOD_PATIENTS,
    df: float = math.nan,
) -> str:
    """The sentence of a comparison; with ``family`` > 0 the decision uses ``p_holm``.

    With ``method`` :data:`METHOD_RUNS` the test is the run-aware t test over ``n``
    cases and ``seeds`` seeds; otherwise the Wilcoxon test, and the sentence says that
    run-to-run variance is not measured and the CI is a lower bound on the uncertainty.
    """
    name, unit, higher_better, digits = _metric_info(metric)
    subject = "transfer" if reference == "scratch" else arm
    runs = method in (METHOD_RUNS, METHOD_POOLED)
    pooled = method == METHOD_POOLED

    def num(x: float) -> str:
        return f"{x:.{digits}f}"

    improved = mean_diff > 0 if higher_better else mean_diff < 0
    size = f"{num(abs(mean_diff))}{unit}"
    ci_txt = f"95 % CI {num(ci[0])} to {num(ci[1])}{unit}"
    caveat = "" if runs else _runs_caveat(seeds)
    if pooled:
        caveat = (
            "; the arms share fewer than 2 seeds, so their run-to-run variance is taken from "
            "the arms with several seeds (assumed alike)"
        )
    sample = f"n = {n} cases × {seeds} seeds" if runs and not pooled else f"n = {n} cases"
    if math.isnan(p):
        if runs:
            test, why = "t test", "the differences do not vary"
        else:
            test = "Wilcoxon test"
            why = "all differences are zero" if n >= MIN_CASES_FOR_TEST else f"n = {n} < 6"
        return (
            f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
            f"({ci_txt}, {sample}): the {test} is not possible ({why}), "
            f"so there is no evidence either way on whether {subject} helped{caveat}."
        )
    adjusted = family > 0 and math.isfinite(p_holm)
    decision = p_holm if adjusted else p
    plural = "s" if family != 1 else ""
    holm_txt = (
        f", Holm-adjusted {_fmt_p(p_holm)} over {family} comparison{plural}" if adjusted else ""
    )
    if runs:
        test_txt = (
            f"t test over patients and training runs {_fmt_p(p)}{holm_txt}, df = {df:.1f}, {sample}"
        )
    else:
        test_txt = f"Wilcoxon {_fmt_p(p)}{holm_txt}, {sample}"
    if decision < ALPHA:
        # the sentence gives a size; when the signed difference is negative, say so too
        signed = f"difference {mean_diff:+.{digits}f}{unit}, " if mean_diff < 0 else ""
        stats_txt = f"({signed}{ci_txt}; {test_txt})"
        if improved:
            return (
                f"{arm} improved mean {name} over {reference} by {size} {stats_txt}: "
                f"{subject} helped{caveat}."
            )
        return (
            f"{arm} was worse than {reference} in mean {name} by {size} {stats_txt}: "
            f"{subject} hurt{caveat}."
        )
    decision_txt = f"Holm-adjusted {_fmt_p(p_holm)}" if adjusted else _fmt_p(p)
    return (
        f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
        f"({ci_txt}; {test_txt}): no evidence that {subject} helped ({decision_txt}){caveat}."
    )


def paired_runs(
    metrics: pd.DataFrame, arm: str, reference: str, metric: str = "dice"
) -> pd.DataFrame:
    """Differences ``arm - reference`` per shared case and shared seed.

    With common random numbers seed ``s`` trains both arms on the same batch order and
    augmentation, so the difference is taken within a seed.

    Args:
        metrics: the ``metrics.csv`` table (with or without a ``seed`` column).
        arm: the arm compared.
        reference: the reference arm.
        metric: column compared (each case and seed averaged over classes first).

    Returns:
        Index case (sorted; cases both arms have), one column per seed both arms have
        (ascending); NaN where one arm has no value; cases without any difference
        dropped. No columns when the arms share no seed.
    """
    a = per_case_runs(metrics, arm, metric)
    r = per_case_runs(metrics, reference, metric)
    seeds = [s for s in a.columns if s in set(r.columns)]
    cases = a.index.intersection(r.index)
    diff = a.loc[cases, seeds] - r.loc[cases, seeds]
    return diff.dropna(how="all").sort_index()


def _paired(metrics: pd.DataFrame, arm: str, reference: str, metric: str) -> pd.Series:
    """Per-case differences of the seed-averaged values on the shared cases, by case."""
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


def _design(
    metrics: pd.DataFrame,
    arm: str,
    reference: str,
    metric: str,
    groups: pd.Series | Mapping | None,
) -> tuple[pd.DataFrame | None, pd.Series, int]:
    """``(runs, case_diffs, seeds)``: the run table when the run-aware test applies.

    ``runs`` is :func:`paired_runs` when the arms share at least 2 seeds and the shared
    cases span at least 2 patients, else ``None``; ``case_diffs`` the per-case
    differences the comparison rests on (seed-averaged within the shared seeds, or over
    each arm's own seeds for the patient-only fallback); ``seeds`` the shared seeds.
    """
    runs = paired_runs(metrics, arm, reference, metric)
    seeds = runs.shape[1]
    if seeds >= 2 and not runs.empty:
        diffs = runs.mean(axis=1)
        if cluster_mean_statistic(diffs, groups)[1] >= 2:
            return runs, diffs, seeds
    return None, _paired(metrics, arm, reference, metric), seeds


def pooled_run_variance(metrics: pd.DataFrame, metric: str = "dice") -> tuple[float, int]:
    """``(s², df)``: the variance of an arm's per-seed means, pooled over every arm with 2
    or more seeds (weights ``S_a - 1``); ``(nan, 0)`` when no arm has 2 seeds."""
    total, df = 0.0, 0
    for arm in pd.unique(metrics["arm"]):
        means = per_case_runs(metrics, arm, metric).mean(axis=0).dropna()
        if means.size >= 2:
            total += (means.size - 1) * float(means.var(ddof=1))
            df += means.size - 1
    return (total / df if df else math.nan), df


def _pooled_runs(
    metrics: pd.DataFrame,
    arm: str,
    reference: str,
    metric: str,
    diffs: pd.Series,
    groups: pd.Series | Mapping | None,
) -> tuple[float, tuple[float, float], float, float, float] | None:
    """The comparison of two arms that share fewer than 2 seeds, with the run variance of
    each arm's mean taken from the arms that have several seeds: ``(mean, ci, p, df,
    run_sd)``, or None when no arm has 2 seeds (or the cases span fewer than 2 patients).

    The variance of the mean difference is ``V_pat + s² (1/S_arm + 1/S_ref)``: the
    cluster-robust variance over patients of the seed-averaged case differences, plus the
    run variance of each arm's mean over its ``S`` seeds (``s²`` pooled, df ``sum(S - 1)``;
    the arms' runs taken as independent, which is conservative under common random
    numbers), tested with the Cochran–Cox critical value as the run-aware test is.
    """
    from medtl.evaluate.runs import patient_codes, t_test

    s2, df_run = pooled_run_variance(metrics, metric)
    codes = patient_codes(diffs.index, groups)
    n_patients = int(codes.max()) + 1 if codes.size else 0
    if not df_run or n_patients < 2:
        return None
    x = diffs.to_numpy(dtype=float)
    mean = float(x.mean())
    sums = np.bincount(codes, weights=x - mean, minlength=n_patients)
    v_pat = n_patients / (n_patients - 1) * float((sums**2).sum()) / x.size**2
    counts = [max(1, per_case_runs(metrics, a, metric).shape[1]) for a in (arm, reference)]
    v_run = s2 * sum(1.0 / c for c in counts)
    if v_pat + v_run <= 0:
        return None
    _, p, low, high = (float(v) for v in t_test(mean, v_pat, v_run, n_patients - 1, df_run))
    return mean, (low, high), p, float(df_run), math.sqrt(s2)


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

    When the arms share at least 2 seeds, the differences are taken per case *and*
    seed on the shared cases and seeds (:func:`paired_runs`), and the CI and p come from
    :func:`medtl.evaluate.runs.run_aware_mean`: patients and training runs both random,
    t with the Cochran–Cox critical value. Otherwise each arm's case values are averaged
    over its own seeds; when other arms of the table have 2 or more seeds, their run
    variance, pooled, stands in for the pair's (:data:`METHOD_POOLED`, see
    :func:`_pooled_runs`); when no arm has, the patient-only method is used: the CI is
    :func:`bootstrap_ci` of the per-case differences and the p the Wilcoxon signed-rank
    test, and the statement says that run-to-run variance is not measured and the CI is
    a lower bound on the uncertainty.

    Args:
        metrics: the ``metrics.csv`` table (with or without a ``seed`` column).
        arm: the arm compared (e.g. ``finetune``).
        reference: the reference arm (e.g. ``scratch``).
        metric: ``dice`` (higher is better), ``hd95`` (lower is better), ...
        seed: seed of the bootstrap's ``numpy.random.default_rng``.
        n_boot: bootstrap resamples.
        groups: maps case → patient; the bootstrap resamples patients (``None``: cases),
            and the run-aware variance clusters cases by patient.

    Returns:
        The comparison, differences taken as ``arm - reference``. The Wilcoxon p is NaN
        with fewer than 6 cases or when all differences are zero, the t-test p when the
        differences do not vary; ``p_holm`` is NaN.

    Raises:
        StatsError: if a column is missing or the arms share no case.
    """
    from medtl.evaluate.runs import run_aware_mean

    runs, diffs, seeds = _design(metrics, arm, reference, metric, groups)
    diff = diffs.to_numpy(dtype=float)
    pooled = (
        None if runs is not None else _pooled_runs(metrics, arm, reference, metric, diffs, groups)
    )
    if runs is not None:
        est = run_aware_mean(runs, groups)
        mean_diff, ci, p, method = est.mean, (est.ci_low, est.ci_high), est.p_value, METHOD_RUNS
        df, run_sd = est.df, est.run_sd
    elif pooled is not None:
        mean_diff, ci, p, df, run_sd = pooled
        method = METHOD_POOLED
    else:
        mean_diff = float(diff.mean())
        ci = bootstrap_ci(diffs, groups, n_boot=n_boot, seed=seed)
        p, method, df, run_sd = _wilcoxon_p(diff), METHOD_PATIENTS, math.nan, math.nan
    n = int(diff.size)
    return PairedComparison(
        arm=arm,
        reference=reference,
        metric=metric,
        n=n,
        mean_diff=mean_diff,
        median_diff=float(np.median(diff)),
        ci_low=ci[0],
        ci_high=ci[1],
        p_value=p,
        statement=_statement(
            arm, reference, metric, n, mean_diff, ci, p, seeds=seeds, method=method, df=df
        ),
        seeds=seeds,
        method=method,
        df=df,
        run_sd=run_sd,
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
        d = float(_design(metrics, second, first, metric, groups)[1].mean())
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
                seeds=c.seeds,
                method=c.method,
                df=c.df,
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
