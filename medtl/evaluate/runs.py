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
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist

from medtl.evaluate.stats import (
    StatsError,
    _metric_info,
    _wilcoxon_p,
    bootstrap_ci,
    per_case_runs,
)

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
        table: index case, one column per seed (e.g. :func:`~medtl.evaluate.stats.per_case_runs`
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


# ----------------------------------------------------------------------------- A/A floor


@dataclass(frozen=True)
class SeedPair:
    """One seed of an arm against another seed of the same arm, patients only.

    Attributes:
        seed: the seed compared.
        reference_seed: the other seed.
        n: paired cases.
        mean_diff: mean over cases of ``seed - reference_seed``.
        ci_low: lower end of the 95 % patient bootstrap CI (:func:`bootstrap_ci`).
        ci_high: upper end of that CI.
        p_value: two-sided Wilcoxon signed-rank p (NaN when not possible).
        called_different: whether ``p_value < 0.05``: the patient-only test called the
            arm different from itself.
    """

    seed: int
    reference_seed: int
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    called_different: bool


@dataclass(frozen=True)
class NoiseFloor:
    """How much an arm differs from itself between training seeds (the A/A floor).

    Attributes:
        arm: the arm (for a pooled floor, the arms joined by ``+``).
        metric: the metric.
        seeds: number of seeds (for a pooled floor, over all arms).
        seed_means: mean over cases per seed, indexed by seed (pooled: by ``(arm, seed)``).
        spread: largest minus smallest per-seed mean (pooled: the largest within an arm).
        run_sd: SD of the per-seed means (pooled: the square root of the variances pooled
            with weights ``S_a - 1``).
        run_df: degrees of freedom of ``run_sd`` (seeds minus 1, summed over arms).
        aa_difference: ``1.96 * sqrt(2) * run_sd``: the size that the difference of the
            means of two single-seed runs of the same arm stays below 95 % of the time,
            taking ``run_sd`` as known.
        aa_difference_t: ``t_{run_df, 0.975} * sqrt(2) * run_sd``: the same bound as a
            95 % prediction interval for a new pair of runs, allowing for ``run_sd``
            being estimated from few seeds (exact under normality; much wider at 2-3
            seeds).
        pairs: every pair of seeds compared with the patient-only method.
        false_calls: pairs the patient-only test called different (p < 0.05).
        statement: one English sentence with the above.
    """

    arm: str
    metric: str
    seeds: int
    seed_means: pd.Series
    spread: float
    run_sd: float
    run_df: int
    aa_difference: float
    aa_difference_t: float
    pairs: tuple[SeedPair, ...]
    false_calls: int
    statement: str


def _floor_statement(f: NoiseFloor, means_txt: str) -> str:
    name, unit, _, digits = _metric_info(f.metric)

    def num(x: float) -> str:
        return f"{x:.{digits}f}{unit}"

    return (
        f"{f.arm}: per-seed mean {name} {means_txt} (spread {num(f.spread)}, run SD "
        f"{num(f.run_sd)}); two single-seed runs of the same arm differ by up to "
        f"{num(f.aa_difference)} 95 % of the time (1.96 × √2 × run SD; "
        f"{num(f.aa_difference_t)} as a t prediction bound with {f.run_df} df); "
        f"the patient-only test called the arm different from itself in {f.false_calls} "
        f"of {len(f.pairs)} seed pairs."
    )


def _means_txt(seed_means: pd.Series, metric: str) -> str:
    digits = _metric_info(metric)[3]
    return " / ".join(f"{m:.{digits}f}" for m in seed_means)


def _aa(run_sd: float, run_df: int) -> tuple[float, float]:
    z = 1.959963984540054 * math.sqrt(2.0) * run_sd
    t = float(t_dist.ppf(0.975, run_df)) * math.sqrt(2.0) * run_sd if run_df > 0 else math.nan
    return z, t


def noise_floor(
    metrics: pd.DataFrame,
    arm: str,
    metric: str = "dice",
    groups: pd.Series | Mapping | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> NoiseFloor:
    """The A/A noise floor of an arm trained with at least 2 seeds.

    Per seed, the mean over cases (each case averaged over classes); their spread and
    SD (the run SD); the size of a difference between two single-seed runs that noise
    alone reaches 95 % of the time; and every pair of seeds compared with the
    patient-only method of a single-seed comparison (patient bootstrap CI, Wilcoxon p),
    to show how often that method calls an arm different from itself.

    Args:
        metrics: the ``metrics.csv`` table with a ``seed`` column.
        arm: the arm.
        metric: the column.
        groups: maps case → patient, for the bootstrap.
        n_boot: bootstrap resamples per seed pair.
        seed: seed of the bootstrap generator.

    Raises:
        StatsError: with fewer than 2 seeds for the arm.
    """
    runs = per_case_runs(metrics, arm, metric)
    if runs.shape[1] < 2:
        raise StatsError(
            f"noise floor of {arm!r}: expected {metric} values from at least 2 seeds, found "
            f"{runs.shape[1]}. How to fix: train the arm with 2 or more seeds (a seed column "
            "in metrics.csv)."
        )
    seed_means = runs.mean(axis=0)
    pairs = []
    for i, ref_seed in enumerate(runs.columns):
        for other in runs.columns[i + 1 :]:
            diffs = (runs[other] - runs[ref_seed]).dropna()
            ci = bootstrap_ci(diffs, groups, n_boot=n_boot, seed=seed)
            p = _wilcoxon_p(diffs.to_numpy(dtype=float))
            pairs.append(
                SeedPair(
                    seed=int(other),
                    reference_seed=int(ref_seed),
                    n=int(diffs.size),
                    mean_diff=float(diffs.mean()),
                    ci_low=ci[0],
                    ci_high=ci[1],
                    p_value=p,
                    called_different=bool(math.isfinite(p) and p < 0.05),
                )
            )
    run_sd = float(seed_means.std(ddof=1))
    run_df = int(seed_means.size - 1)
    z, t = _aa(run_sd, run_df)
    floor = NoiseFloor(
        arm=arm,
        metric=metric,
        seeds=int(seed_means.size),
        seed_means=seed_means,
        spread=float(seed_means.max() - seed_means.min()),
        run_sd=run_sd,
        run_df=run_df,
        aa_difference=z,
        aa_difference_t=t,
        pairs=tuple(pairs),
        false_calls=sum(p.called_different for p in pairs),
        statement="",
    )
    return replace(floor, statement=_floor_statement(floor, _means_txt(seed_means, metric)))


def pooled_noise_floor(
    metrics: pd.DataFrame,
    arms: list[str] | None = None,
    metric: str = "dice",
    groups: pd.Series | Mapping | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> NoiseFloor:
    """The A/A floor pooled over the arms with at least 2 seeds.

    The run variance is pooled as ``sum_a (S_a - 1) s_a² / sum_a (S_a - 1)`` (arms
    assumed to share one run variance), the seed pairs of all arms are gathered, and the
    spread is the largest within an arm.

    Args:
        metrics: the ``metrics.csv`` table with a ``seed`` column.
        arms: the arms to pool (``None``: every arm); arms with fewer than 2 seeds are
            left out.
        metric: the column.
        groups: maps case → patient, for the bootstrap.
        n_boot: bootstrap resamples per seed pair.
        seed: seed of the bootstrap generator.

    Raises:
        StatsError: if no arm has 2 seeds.
    """
    arms = list(pd.unique(metrics["arm"])) if arms is None else list(arms)
    usable = [a for a in arms if per_case_runs(metrics, a, metric).shape[1] >= 2]
    if not usable:
        raise StatsError(
            f"pooled noise floor: expected an arm with {metric} values from at least 2 "
            f"seeds among {arms}, found none. How to fix: train an arm with 2 or more seeds."
        )
    floors = [noise_floor(metrics, a, metric, groups, n_boot=n_boot, seed=seed) for a in usable]
    run_df = sum(f.run_df for f in floors)
    run_sd = math.sqrt(sum(f.run_df * f.run_sd**2 for f in floors) / run_df)
    z, t = _aa(run_sd, run_df)
    pairs = tuple(p for f in floors for p in f.pairs)
    seed_means = pd.concat({f.arm: f.seed_means for f in floors})
    floor = NoiseFloor(
        arm=" + ".join(usable),
        metric=metric,
        seeds=sum(f.seeds for f in floors),
        seed_means=seed_means,
        spread=max(f.spread for f in floors),
        run_sd=run_sd,
        run_df=run_df,
        aa_difference=z,
        aa_difference_t=t,
        pairs=pairs,
        false_calls=sum(p.called_different for p in pairs),
        statement="",
    )
    means_txt = "; ".join(f"{f.arm} {_means_txt(f.seed_means, metric)}" for f in floors)
    return replace(floor, statement=_floor_statement(floor, means_txt))
