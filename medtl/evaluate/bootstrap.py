"""The patient-only methods: the cluster bootstrap of a case mean and the Wilcoxon test.

Both treat the training run as fixed: with one seed the run-to-run variance is not
measured, and their intervals are a lower bound on the uncertainty
(:mod:`medtl.evaluate.runs` counts runs too).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap, wilcoxon

#: Fewest paired cases for which the Wilcoxon test is reported.
MIN_CASES_FOR_TEST = 6


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


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences; NaN with fewer than
    :data:`MIN_CASES_FOR_TEST` of them or when all are zero."""
    if diff.size < MIN_CASES_FOR_TEST or not np.any(diff != 0):
        return math.nan
    return float(wilcoxon(diff, alternative="two-sided").pvalue)
