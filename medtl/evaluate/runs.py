"""The mean of a case × seed table with patients and training runs both random.

Each arm is trained once per fold and seed; a *run* is one trained model, a (seed, fold)
pair, and the patients of a fold share it. A per-case value (Dice averaged over classes,
or the paired difference ``arm - reference`` of two arms on the same case and seed)
therefore varies with the patient and with the run. A test that resamples patients only
treats the run as fixed and is too confident when runs differ; the run-to-run variance
is the largest source of variance on the demo.

The estimator (:func:`run_aware_mean`), for a table ``x[c, s]`` of ``P`` patients, ``N``
cases and ``S`` seeds:

* the estimate is the mean over cases of the seed-averaged case values
  ``xbar[c] = mean_s x[c, s]`` (with a complete table: the mean of all cells, and the
  mean of the per-seed means ``m[s] = mean_c x[c, s]``);
* ``V_pat`` is the cluster-robust variance of that mean over patients:
  ``P / (P - 1) * sum_p (sum_{c in p} (xbar[c] - mean))**2 / N**2``; with one case per
  patient it is the familiar ``var(xbar) / N``;
* ``V_run = var(m, ddof=1) / S``, the variance of the mean of ``S`` per-seed means;
* ``se = sqrt(V_pat + V_run)``, with Satterthwaite's (1946) degrees of freedom
  ``(V_pat + V_run)**2 / (V_pat**2 / (P - 1) + V_run**2 / (S - 1))`` reported;
* the test and interval use the Cochran–Cox (1950) critical value, the variance-weighted
  mean of ``t_{P-1}`` and ``t_{S-1}`` quantiles: ``mean ± c se`` with
  ``c = (V_pat t_{P-1, 0.975} + V_run t_{S-1, 0.975}) / (V_pat + V_run)``, and the
  two-sided p of ``mean = 0`` the level at which ``|mean / se|`` equals ``c``.

Why Cochran–Cox and not Satterthwaite's t. ``V_run`` has only ``S - 1`` df (1 to 4 in
practice). When it is small by chance, Satterthwaite's df jumps towards ``P - 1`` and
the test is liberal: in simulated studies (:mod:`medtl.evaluate.power`) it gave 7.1 %
false positives at α = 0.05 with 2 seeds and demo-sized components, and 6.7 % with 3
seeds and 60 patients. The Cochran–Cox critical value stayed at or below 5 % in every
setting tried (2 to 10 seeds, 14 or 60 patients, run SD 0 to 0.3), with less power than
the liberal test and more than Hsu's ``t_{S-1}``.

Why it is valid, and by how much it is conservative. Under the model
``x[c, s] = mu + a[c] + b[s, fold(c)] + e[c, s]`` (patient and case effects ``a``, run
effects ``b``, residuals ``e``, all independent with variances ``σa², σb², σe²``), the
variance of the estimate is about ``σa²/P + σb²/(F S) + σe²/(P S)`` with ``F`` folds.
``E[V_run] = σb²/(F S) + σe²/(P S)``: the per-seed means average the folds' run
effects, so ``V_run`` covers all of them. ``E[V_pat] ≈ σa²/P + σe²/(P S)`` plus a
small positive part of the run variance. The sum thus counts the residual twice and
overstates the variance by about ``σe²/(P S)``: intervals are a little too wide and tests
a little conservative, never too narrow. (The unbiased two-way ANOVA combination
subtracts the residual mean square; it can be negative and its Satterthwaite df is
unstable with 2–5 seeds, hence not used.)

With arms trained on common random numbers (seed ``s`` gives every arm the same batch
order and augmentation), the run effects of two arms in one seed are correlated and
partly cancel in the paired difference; taking the difference *within* a seed before
estimating keeps that gain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist

from medtl.evaluate.cases import StatsError

#: Smallest p-value :func:`t_test` resolves (its bisection's lower end).
P_FLOOR = 1e-30


@dataclass(frozen=True)
class RunAwareMean:
    """The mean of a case × seed table and its uncertainty (see the module docstring).

    Attributes:
        mean: mean over cases of the seed-averaged case values.
        se: standard error, ``sqrt(v_patients + v_runs)``.
        df: Satterthwaite degrees of freedom (reported; the test uses Cochran–Cox).
        ci_low: lower end of the two-sided interval (Cochran–Cox critical value).
        ci_high: upper end of that interval.
        t: ``mean / se`` (NaN when ``se`` is 0).
        p_value: two-sided p of ``mean = 0``, Cochran–Cox (NaN when ``se`` is 0).
        n_cases: cases with at least one value.
        n_patients: patients those cases belong to.
        n_seeds: seeds with at least one value.
        v_patients: cluster-robust variance over patients of the seed-averaged values.
        v_runs: variance of the per-seed means divided by the number of seeds.
        run_sd: SD of the per-seed means (ddof=1).
        seed_means: the per-seed means, indexed by seed.
    """

    mean: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float
    n_cases: int
    n_patients: int
    n_seeds: int
    v_patients: float
    v_runs: float
    run_sd: float
    seed_means: pd.Series


def patient_codes(cases: pd.Index, groups: pd.Series | Mapping | None) -> np.ndarray:
    """Patient numbers ``0..P-1`` of cases, in order of first appearance.

    Args:
        cases: the case names.
        groups: maps case → patient; ``None``: every case is its own patient. Cases
            missing from it (or mapped to NaN) count as a patient of their own.

    Example:
        >>> patient_codes(pd.Index(["a1", "b1", "a2", "c1"]), {"a1": "A", "a2": "A"}).tolist()
        [0, 1, 0, 2]
    """
    if groups is None:
        codes, _ = pd.factorize(cases)
        return codes
    codes, uniques = pd.factorize(cases.map(groups))
    alone = codes < 0
    if alone.any():
        # a case without a patient is a patient of its own, numbered where it appears
        own, _ = pd.factorize(cases[alone])
        codes = codes.copy()
        codes[alone] = own + len(uniques)
        codes, _ = pd.factorize(codes)
    return codes


def variance_components(
    case_means: np.ndarray, seed_means: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``V_pat``, ``V_run``, Satterthwaite df and the mean, vectorized over leading axes.

    Args:
        case_means: ``(..., N)`` seed-averaged case values (no NaN).
        seed_means: ``(..., S)`` per-seed means (no NaN), ``S >= 2``.
        codes: ``(N,)`` patient numbers ``0..P-1`` (every number used), ``P >= 2``.

    Returns:
        ``(mean, v_pat, v_run, df)``, each of the leading shape.
    """
    case_means = np.asarray(case_means, dtype=float)
    seed_means = np.asarray(seed_means, dtype=float)
    n = case_means.shape[-1]
    s = seed_means.shape[-1]
    p = int(codes.max()) + 1
    mean = case_means.mean(axis=-1)
    resid = case_means - mean[..., None]
    member = np.zeros((n, p))
    member[np.arange(n), codes] = 1.0
    sums = resid @ member
    v_pat = p / (p - 1) * (sums**2).sum(axis=-1) / n**2
    v_run = seed_means.var(axis=-1, ddof=1) / s
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (v_pat + v_run) ** 2 / (v_pat**2 / (p - 1) + v_run**2 / (s - 1))
    return mean, v_pat, v_run, df


def t_test(
    mean: np.ndarray,
    v_pat: np.ndarray,
    v_run: np.ndarray,
    df_pat: float,
    df_run: float,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t, p, low, high)``: Cochran–Cox test of 0 and interval; NaN where se is 0.

    ``t = mean / sqrt(v_pat + v_run)``; the critical value at level ``a`` is the
    variance-weighted mean of the two components' t quantiles,
    ``(v_pat q(df_pat) + v_run q(df_run)) / (v_pat + v_run)`` with
    ``q(df) = t_{df, 1 - a/2}`` (Cochran & Cox 1950). The p-value is the level at which
    ``|t|`` equals that critical value (found by bisection on ``log p``; at least
    :data:`P_FLOOR`), so ``p < a`` exactly when ``|t|`` exceeds it.
    """
    mean, v_pat, v_run = np.broadcast_arrays(*(np.asarray(x, float) for x in (mean, v_pat, v_run)))
    with np.errstate(divide="ignore", invalid="ignore"):
        var = v_pat + v_run
        se = np.sqrt(np.where(var > 0, var, np.nan))
        t = mean / se
        w = v_pat / var

        def critical(level: np.ndarray | float) -> np.ndarray:
            q = 1.0 - np.asarray(level) / 2.0
            return w * t_dist.ppf(q, df_pat) + (1.0 - w) * t_dist.ppf(q, df_run)

        lo = np.full(t.shape, math.log(P_FLOOR))
        hi = np.zeros(t.shape)
        for _ in range(60):  # critical(p) decreases in p: keep critical(exp(lo)) >= |t|
            mid = (lo + hi) / 2.0
            above = critical(np.exp(mid)) >= np.abs(t)
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        p = np.where(np.isfinite(t), np.exp(hi), np.nan)
        half = critical(1.0 - confidence) * se
    return t, p, mean - half, mean + half


def run_aware_mean(
    table: pd.DataFrame,
    groups: pd.Series | Mapping | None = None,
    *,
    confidence: float = 0.95,
) -> RunAwareMean:
    """Mean of a case × seed table, patients and training runs both random.

    Cells may be NaN: a case's value is the mean over its seeds with a value, a seed's
    mean the mean over its cases with a value; cases and seeds without any value are
    left out. With a complete table the estimate is the plain mean of the cells.

    Args:
        table: index case, one column per seed (e.g. :func:`~medtl.evaluate.cases.per_case_runs`
            of an arm, or the difference of two arms' tables on shared cases and seeds).
        groups: maps case → patient; ``None``: every case is its own patient.
        confidence: confidence level of the two-sided interval.

    Returns:
        The estimate, its variance components, Satterthwaite df, t interval and the
        two-sided p of ``mean = 0``; when the standard error is 0 (all values equal) the
        interval is ``(mean, mean)`` and ``t`` and ``p`` are NaN.

    Raises:
        StatsError: with fewer than 2 seeds or 2 patients with values.

    Example:
        >>> x = pd.DataFrame({1: [0.1, 0.3], 2: [0.3, 0.5]}, index=["a", "b"])
        >>> r = run_aware_mean(x)
        >>> round(r.mean, 3), round(r.v_patients, 4), round(r.v_runs, 4), r.df
        (0.3, 0.01, 0.01, 2.0)
    """
    x = table.apply(pd.to_numeric, errors="coerce").astype(float)
    x = x.dropna(how="all", axis=0).dropna(how="all", axis=1)
    case_means = x.mean(axis=1)
    seed_means = x.mean(axis=0)
    codes = patient_codes(x.index, groups)
    n_patients = int(codes.max()) + 1 if codes.size else 0
    if seed_means.size < 2 or n_patients < 2:
        raise StatsError(
            "run-aware mean: expected values from at least 2 seeds and 2 patients, found "
            f"{seed_means.size} seed(s) and {n_patients} patient(s). How to fix: train "
            "the arm with at least 2 seeds, or use the patient bootstrap (bootstrap_ci)."
        )
    mean, v_pat, v_run, df = (
        float(v) for v in variance_components(case_means.to_numpy(), seed_means.to_numpy(), codes)
    )
    se = math.sqrt(v_pat + v_run)
    if se > 0:
        test = t_test(mean, v_pat, v_run, n_patients - 1, seed_means.size - 1, confidence)
        t, p, low, high = (float(v) for v in test)
    else:
        t, p, low, high, df = math.nan, math.nan, mean, mean, math.nan
    return RunAwareMean(
        mean=mean,
        se=se,
        df=df,
        ci_low=low,
        ci_high=high,
        t=t,
        p_value=p,
        n_cases=int(case_means.size),
        n_patients=n_patients,
        n_seeds=int(seed_means.size),
        v_patients=v_pat,
        v_runs=v_run,
        run_sd=float(seed_means.std(ddof=1)),
        seed_means=seed_means,
    )
