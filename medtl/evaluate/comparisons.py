"""Paired comparisons of arms on the same held-out cases, the family of them, the verdict.

The methods are described in :mod:`medtl.evaluate` (the package's docstring).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd

from medtl.evaluate.bootstrap import bootstrap_ci, cluster_mean_statistic, wilcoxon_p
from medtl.evaluate.cases import (
    ALPHA,
    METHOD_PATIENTS,
    METHOD_POOLED,
    METHOD_RUNS,
    StatsError,
    arm_runs,
    metric_info,
    per_case,
    per_case_runs,
)
from medtl.evaluate.multiplicity import holm, p_text
from medtl.evaluate.runs import patient_codes, run_aware_mean, t_test
from medtl.evaluate.statements import comparison_statement


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
        p, method, df, run_sd = wilcoxon_p(diff), METHOD_PATIENTS, math.nan, math.nan
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
        statement=comparison_statement(
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
    higher_better = metric_info(metric)[2]
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
            statement=comparison_statement(
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
    name, unit, higher_better, digits = metric_info(metric)
    if not arms:
        raise StatsError("verdict: expected at least one arm, found none.")
    means = {}
    for arm in arms:
        fix = "evaluate the arm or leave it out of the list."
        cases = arm_runs(metrics, arm, metric, "verdict", fix).mean(axis=1).dropna()
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
                f"Holm-adjusted {p_text(c.p_holm)})"
            )
        else:
            unresolved.append(f"{other} (Holm-adjusted {p_text(c.p_holm)})")
    if not unresolved:
        return (
            f"{head}; the evidence holds: it beats {_join(beaten)} "
            f"with Holm-adjusted p < {ALPHA:g}."
        )
    return (
        f"{head}, but the evidence does not single it out: "
        f"it is not distinguishable from {_join(unresolved)}."
    )
