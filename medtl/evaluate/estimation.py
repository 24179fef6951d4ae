"""Component sizes of the simulation model estimated from a finished run (method of moments).

The model is that of :mod:`medtl.evaluate.power`; :func:`estimate_components` gives its
:class:`~medtl.evaluate.power.Components` for a ``metrics.csv`` table, for simulations
sized like the user's own study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medtl.evaluate.cases import arm_runs
from medtl.evaluate.power import Components
from medtl.evaluate.runs import patient_codes


def estimate_components(
    metrics: pd.DataFrame,
    arms: Sequence[str] | None = None,
    metric: str = "dice",
    groups: pd.Series | Mapping | None = None,
) -> Components:
    """Component sizes estimated from a finished run (method of moments).

    Each arm's case values (averaged over classes) are centred on the mean of their
    trained model (arm, seed, fold), which removes the arms' levels and the run effects:

    * ``residual_sd``: with at least 2 seeds, the pooled variance over seeds of a
      case's centred values, divided by ``1 - 1/n_f`` (``n_f`` the cases of its fold);
      with one seed, the same over arms instead of seeds (then true arm × case
      interactions count as residual: an upper bound);
    * ``run_sd``: the pooled variance over seeds of a model's mean minus
      ``residual_sd² / n_f``; NaN with one seed;
    * ``run_corr``: the pooled covariance over shared seeds of two arms' model means in
      a fold, divided by ``run_sd²``; NaN without two arms sharing 2 seeds;
    * ``case_sd``: the pooled variance within patients (patients with two or more
      cases) of the cases' centred values averaged over arms and seeds, minus the
      residual's share; 0 without such patients;
    * ``patient_sd``: the variance over cases of those averages (``N - F`` df) minus
      the case and residual shares;
    * ``mean``: the mean of all values of ``arms``.

    Variances estimated below 0 are set to 0. With 2–3 seeds the run sizes are rough.

    Args:
        metrics: the ``metrics.csv`` table (with a ``seed`` column for the run sizes).
        arms: the arms to use (``None``: all).
        metric: the column.
        groups: maps case → patient (``None``: every case its own patient; then
            ``case_sd`` is 0 and ``patient_sd`` takes the whole case-level variance).

    Raises:
        StatsError: if an arm has no value or a column is missing.
    """
    arms = list(pd.unique(metrics["arm"])) if arms is None else list(arms)
    fold_of = metrics.groupby("case")["fold"].first()
    tables = {}
    for arm in arms:
        fix = "leave the arm out of arms."
        tables[arm] = arm_runs(metrics, arm, metric, "estimate_components", fix)
    n_f = fold_of.value_counts()
    model_means, centred = _centred(tables, fold_of)
    multi = [a for a in arms if tables[a].shape[1] >= 2]
    resid_var = _residual_variance(arms, multi, centred, fold_of, n_f)
    run_var = _run_variance(multi, model_means, resid_var, n_f)
    run_corr = _run_correlation(multi, model_means, run_var)
    patient_var, case_var = _patient_and_case_variances(arms, centred, fold_of, resid_var, groups)
    values = pd.concat([tables[a].stack() for a in arms])
    return Components(
        mean=float(values.mean()),
        patient_sd=math.sqrt(patient_var) if math.isfinite(patient_var) else math.nan,
        case_sd=math.sqrt(case_var),
        run_sd=math.sqrt(run_var) if math.isfinite(run_var) else math.nan,
        run_corr=run_corr,
        residual_sd=math.sqrt(resid_var) if math.isfinite(resid_var) else math.nan,
    )


def _pooled(blocks: list[tuple[float, float]]) -> float:
    """The mean of variances (or covariances) weighted by their degrees of freedom."""
    dfs = sum(d for _, d in blocks)
    return sum(v * d for v, d in blocks) / dfs if dfs > 0 else math.nan


def _centred(
    tables: dict[str, pd.DataFrame], fold_of: pd.Series
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per arm, the trained models' means (fold × seed) and the case values centred on
    them: ``z[a][c, s]``."""
    model_means, centred = {}, {}
    for arm, runs in tables.items():
        f = fold_of.reindex(runs.index)
        m = runs.groupby(f).mean()  # fold × seed
        model_means[arm] = m
        centred[arm] = runs - m.reindex(f.to_numpy()).set_axis(runs.index)
    return model_means, centred


def _residual_variance(
    arms: list[str],
    multi: list[str],
    centred: dict[str, pd.DataFrame],
    fold_of: pd.Series,
    n_f: pd.Series,
) -> float:
    """Pooled over seeds (or over arms, with one seed) of a case's centred values."""
    shrink = 1.0 - 1.0 / fold_of.map(n_f)  # per case: 1 - 1/n_f
    blocks = []
    if multi:
        for a in multi:
            z = centred[a]
            k = z.notna().sum(axis=1)
            v = z.var(axis=1, ddof=1) / shrink.reindex(z.index)
            blocks += [(vi, ki - 1) for vi, ki in zip(v, k, strict=True) if ki >= 2]
    else:
        wide = pd.concat({a: centred[a].iloc[:, 0] for a in arms}, axis=1)
        k = wide.notna().sum(axis=1)
        v = wide.var(axis=1, ddof=1) / shrink.reindex(wide.index)
        blocks += [(vi, ki - 1) for vi, ki in zip(v, k, strict=True) if ki >= 2]
    return max(_pooled(blocks), 0.0) if blocks else math.nan


def _run_variance(
    multi: list[str], model_means: dict[str, pd.DataFrame], resid_var: float, n_f: pd.Series
) -> float:
    """Pooled over seeds of a model's mean, less the residual's share; NaN with one seed."""
    run_var = math.nan
    if multi:
        rb = []
        for a in multi:
            m = model_means[a]
            for f, row in m.iterrows():
                row = row.dropna()
                if row.size >= 2:
                    rb.append((row.var(ddof=1) - resid_var / n_f[f], row.size - 1))
        run_var = max(_pooled(rb), 0.0) if rb else math.nan
    return run_var


def _run_correlation(
    multi: list[str], model_means: dict[str, pd.DataFrame], run_var: float
) -> float:
    """Pooled covariance over shared seeds of two arms' model means, over ``run_var``."""
    cb = []
    for i, a in enumerate(multi):
        for b in multi[i + 1 :]:
            shared = [s for s in model_means[a].columns if s in set(model_means[b].columns)]
            if len(shared) < 2:
                continue
            for f in model_means[a].index.intersection(model_means[b].index):
                x, y = model_means[a].loc[f, shared], model_means[b].loc[f, shared]
                ok = x.notna() & y.notna()
                if ok.sum() >= 2:
                    cb.append((float(np.cov(x[ok], y[ok])[0, 1]), int(ok.sum()) - 1))
    run_corr = math.nan
    if cb and run_var and run_var > 0:
        run_corr = float(np.clip(_pooled(cb) / run_var, -1.0, 1.0))
    return run_corr


def _patient_and_case_variances(
    arms: list[str],
    centred: dict[str, pd.DataFrame],
    fold_of: pd.Series,
    resid_var: float,
    groups: pd.Series | Mapping | None,
) -> tuple[float, float]:
    """``(patient variance, case-within-patient variance)`` of the cases' centred values
    averaged over arms and seeds, each less the residual's share."""
    cells = pd.concat([centred[a] for a in arms], axis=1)
    zbar = cells.mean(axis=1).dropna()
    k_cells = cells.notna().sum(axis=1).reindex(zbar.index)
    resid_share = float(np.mean(resid_var / k_cells)) if math.isfinite(resid_var) else 0.0
    n_folds = fold_of.reindex(zbar.index).nunique()
    total = float((zbar**2).sum() / (zbar.size - n_folds)) if zbar.size > n_folds else math.nan
    case_var = 0.0
    if groups is not None:
        codes = patient_codes(zbar.index, groups)
        g = pd.Series(zbar.to_numpy(), index=codes)
        sizes = g.groupby(level=0).size()
        within = g - g.groupby(level=0).transform("mean")
        dfw = int((sizes - 1).sum())
        if dfw > 0:
            case_var = max(float((within**2).sum() / dfw) - resid_share, 0.0)
    patient_var = max(total - resid_share - case_var, 0.0) if math.isfinite(total) else math.nan
    return patient_var, case_var
