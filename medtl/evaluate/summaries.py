"""Per arm and class, and per arm, fold and class: how many cases, mean, spread and CI."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from medtl.evaluate.bootstrap import bootstrap_ci, cluster_mean_statistic
from medtl.evaluate.cases import METHOD_PATIENTS, METHOD_RUNS, check_columns, per_case_runs
from medtl.evaluate.runs import run_aware_mean


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
    check_columns(metrics, metric)
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
    check_columns(metrics, metric, ("fold",))
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
