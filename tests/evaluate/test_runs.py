"""The run-aware estimator and seed-aware comparisons on small hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as t_dist
from scipy.stats import wilcoxon

from medtl.evaluate.cases import (
    METHOD_PATIENTS,
    METHOD_POOLED,
    METHOD_RUNS,
    StatsError,
    per_case,
    per_case_runs,
    per_case_table,
)
from medtl.evaluate.comparisons import compare_all_pairs, compare_arms, paired_runs, verdict
from medtl.evaluate.noise_floor import noise_floor, pooled_noise_floor
from medtl.evaluate.runs import run_aware_mean
from medtl.evaluate.summaries import summarise_arms

# 4 cases × 3 seeds; a1 and a2 belong to patient A
X = pd.DataFrame(
    [[0.1, 0.2, 0.3], [0.4, 0.4, 0.7], [0.5, 0.8, 0.5], [0.2, 0.3, 0.1]],
    index=["a1", "a2", "b1", "c1"],
    columns=[1, 2, 3],
)
GROUPS = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}


def test_estimator_equals_hand_values():
    r = run_aware_mean(X, GROUPS)
    # case means 0.2, 0.5, 0.6, 0.2; seed means 0.3, 0.425, 0.4
    assert r.mean == pytest.approx(0.375)
    # patient sums of (case mean - 0.375): A -0.05, B 0.225, C -0.175; P = 3, N = 4
    v_pat = 3 / 2 * (0.05**2 + 0.225**2 + 0.175**2) / 4**2
    # per-seed means deviate by -0.075, 0.05, 0.025: variance 0.004375, over S = 3
    v_run = (0.075**2 + 0.05**2 + 0.025**2) / 2 / 3
    assert r.v_patients == pytest.approx(v_pat)
    assert r.v_runs == pytest.approx(v_run)
    assert r.se == pytest.approx(math.sqrt(v_pat + v_run))
    df = (v_pat + v_run) ** 2 / (v_pat**2 / 2 + v_run**2 / 2)
    assert r.df == pytest.approx(df)
    # Cochran–Cox: the critical value weighs t quantiles with P - 1 = 2 and S - 1 = 2 df
    se = math.sqrt(v_pat + v_run)
    crit = (v_pat * t_dist.ppf(0.975, 2) + v_run * t_dist.ppf(0.975, 2)) / (v_pat + v_run)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.375 - crit * se, 0.375 + crit * se))
    # both dfs are 2 here, so the p is that of t with 2 df
    assert r.p_value == pytest.approx(2 * t_dist.sf(0.375 / se, 2), rel=1e-9)
    assert (r.n_cases, r.n_patients, r.n_seeds) == (4, 3, 3)
    assert r.run_sd == pytest.approx(math.sqrt(0.004375))
    np.testing.assert_allclose(r.seed_means, [0.3, 0.425, 0.4])


def test_cochran_cox_p_is_the_level_where_t_meets_the_weighted_critical_value():
    x = X.copy()
    x[4] = [0.3, 0.6, 0.4, 0.1]  # 4 seeds: S - 1 = 3 df against P - 1 = 2
    r = run_aware_mean(x, GROUPS)
    w = r.v_patients / (r.v_patients + r.v_runs)
    q = 1 - r.p_value / 2
    crit = w * t_dist.ppf(q, 2) + (1 - w) * t_dist.ppf(q, 3)
    assert crit == pytest.approx(abs(r.t), rel=1e-9)
    c95 = w * t_dist.ppf(0.975, 2) + (1 - w) * t_dist.ppf(0.975, 3)
    assert r.ci_high - r.mean == pytest.approx(c95 * r.se)


def test_estimator_one_case_per_patient_is_the_plain_variance_of_the_mean():
    r = run_aware_mean(X)
    case_means = X.mean(axis=1)
    assert r.v_patients == pytest.approx(case_means.var(ddof=1) / 4)
    assert r.n_patients == 4


def test_estimator_missing_cells_and_too_few_seeds():
    x = X.copy()
    x.loc["a1", 1] = np.nan
    r = run_aware_mean(x)
    assert r.mean == pytest.approx(np.mean([0.25, 0.5, 0.6, 0.2]))
    np.testing.assert_allclose(r.seed_means, [(0.4 + 0.5 + 0.2) / 3, 0.425, 0.4])
    with pytest.raises(StatsError, match="at least 2 seeds"):
        run_aware_mean(X[[1]])
    constant = run_aware_mean(pd.DataFrame(0.5, index=X.index, columns=X.columns))
    assert math.isnan(constant.p_value)
    assert (constant.ci_low, constant.ci_high) == (0.5, 0.5)


def seeded_table(values: dict[str, np.ndarray], seeds: dict[str, list[int]]) -> pd.DataFrame:
    """metrics.csv with a seed column: ``values[arm][seed_index, case]``, one class."""
    rows = []
    for arm, v in values.items():
        for k, s in enumerate(seeds[arm]):
            for i in range(v.shape[1]):
                rows.append(
                    {
                        "arm": arm,
                        "fold": i % 2,
                        "seed": s,
                        "case": f"c{i}",
                        "class": "t",
                        "dice": float(v[k, i]),
                    }
                )
    return pd.DataFrame(rows)


BASE = np.array([0.60, 0.72, 0.55, 0.81, 0.66, 0.70, 0.49, 0.77])
RUN = np.array([[0.00], [0.05], [-0.04]])  # per-seed shifts
WIGGLE = np.array([0.01, -0.02, 0.015, 0.0, -0.01, 0.02, -0.005, 0.01])
SCRATCH = BASE + RUN + WIGGLE * np.array([[1.0], [-1.0], [0.5]])
FINETUNE = SCRATCH + 0.08 + np.array([[0.02], [-0.03], [0.01]]) + WIGGLE[::-1]


def test_per_case_runs_and_per_case_average_classes_then_seeds():
    df = seeded_table({"scratch": SCRATCH}, {"scratch": [1, 2, 3]})
    runs = per_case_runs(df, "scratch")
    assert list(runs.columns) == [1, 2, 3]
    np.testing.assert_allclose(runs.to_numpy(), SCRATCH.T)
    np.testing.assert_allclose(per_case(df, "scratch"), SCRATCH.mean(axis=0))
    two = pd.concat([df, df.assign(**{"class": "u", "dice": df["dice"] + 0.1})])
    np.testing.assert_allclose(per_case_runs(two, "scratch").to_numpy(), SCRATCH.T + 0.05)


def test_compare_arms_with_shared_seeds_is_run_aware():
    df = seeded_table(
        {"scratch": SCRATCH, "finetune": FINETUNE}, {"scratch": [1, 2, 3], "finetune": [1, 2, 3]}
    )
    c = compare_arms(df, "finetune", "scratch")
    est = run_aware_mean(paired_runs(df, "finetune", "scratch"))
    assert c.method == METHOD_RUNS and c.seeds == 3 and c.n == 8
    assert c.mean_diff == pytest.approx((FINETUNE - SCRATCH).mean())
    assert (c.ci_low, c.ci_high, c.p_value, c.df) == (est.ci_low, est.ci_high, est.p_value, est.df)
    assert c.run_sd == pytest.approx((FINETUNE - SCRATCH).mean(axis=1).std(ddof=1))
    assert "t test over patients and training runs" in c.statement
    assert "n = 8 cases × 3 seeds" in c.statement
    assert "lower bound" not in c.statement


def test_one_seed_falls_back_to_patients_only_and_says_lower_bound():
    df = seeded_table(
        {"scratch": SCRATCH[:1], "finetune": FINETUNE[:1]}, {"scratch": [7], "finetune": [7]}
    )
    c = compare_arms(df, "finetune", "scratch")
    assert c.method == METHOD_PATIENTS and c.seeds == 1 and math.isnan(c.df)
    assert "run-to-run variance is not measured (one shared seed)" in c.statement
    assert "lower bound on the uncertainty" in c.statement
    # the same table without its seed column: the same comparison
    old = compare_arms(df.drop(columns="seed"), "finetune", "scratch")
    assert (old.mean_diff, old.ci_low, old.ci_high, old.p_value) == (
        c.mean_diff,
        c.ci_low,
        c.ci_high,
        c.p_value,
    )
    assert old.seeds == 1 and "lower bound" in old.statement


def test_table_without_seed_column_summarises_as_one_seed():
    df = seeded_table({"scratch": SCRATCH[:1]}, {"scratch": [0]}).drop(columns="seed")
    out = summarise_arms(df)
    row = out.iloc[0]
    assert (row["n"], row["seeds"], row["method"]) == (8, 1, METHOD_PATIENTS)
    assert math.isnan(row["run_sd"])
    assert row["mean"] == pytest.approx(SCRATCH[0].mean())


def test_summarise_arms_with_seeds_uses_the_run_aware_interval():
    df = seeded_table({"scratch": SCRATCH}, {"scratch": [1, 2, 3]})
    row = summarise_arms(df).iloc[0]
    est = run_aware_mean(per_case_runs(df, "scratch"))
    assert (row["n"], row["seeds"], row["method"]) == (8, 3, METHOD_RUNS)
    assert (row["ci_low"], row["ci_high"]) == (est.ci_low, est.ci_high)
    assert row["mean"] == pytest.approx(SCRATCH.mean())
    assert row["sd"] == pytest.approx(SCRATCH.mean(axis=0).std(ddof=1))
    assert row["run_sd"] == pytest.approx(SCRATCH.mean(axis=1).std(ddof=1))


def test_arms_with_different_seed_lists():
    frozen = SCRATCH[:1] + 0.03
    df = seeded_table(
        {"scratch": SCRATCH, "finetune": FINETUNE, "frozen": frozen},
        {"scratch": [1, 2, 3], "finetune": [1, 2, 3], "frozen": [1]},
    )
    pairs = compare_all_pairs(df, ["scratch", "finetune", "frozen"])
    by = {(c.arm, c.reference): c for c in pairs}
    assert by[("finetune", "scratch")].method == METHOD_RUNS
    fz = by[("frozen", "scratch")]
    # one shared seed: the run variance of scratch and finetune (pooled) stands in
    assert fz.method == METHOD_POOLED and fz.seeds == 1
    # frozen's seed 1 against scratch averaged over its three seeds
    assert fz.mean_diff == pytest.approx((frozen[0] - SCRATCH.mean(axis=0)).mean())
    assert all(math.isfinite(c.p_holm) for c in pairs)
    assert "Holm-adjusted" in by[("finetune", "scratch")].statement
    assert verdict(df, ["scratch", "finetune", "frozen"], pairs).startswith("finetune")
    no_shared = df.assign(seed=np.where(df["arm"] == "frozen", 9, df["seed"]))
    c = compare_arms(no_shared, "frozen", "scratch")
    assert c.seeds == 0 and c.method == METHOD_POOLED
    # no arm with two seeds: patients only, and the sentence says why
    alone = no_shared[no_shared["seed"].isin([1, 9])]
    c = compare_arms(alone, "frozen", "scratch")
    assert c.method == METHOD_PATIENTS and "the arms share no seed" in c.statement


def test_per_case_table_allows_seeds_of_one_fold():
    df = seeded_table(
        {"scratch": SCRATCH, "finetune": FINETUNE}, {"scratch": [1, 2, 3], "finetune": [1, 2, 3]}
    )
    out = per_case_table(df)
    assert out["fold"].tolist() == [i % 2 for i in range(8)]
    np.testing.assert_allclose(out["scratch"], SCRATCH.mean(axis=0))
    moved = df.copy()
    moved.loc[(moved["seed"] == 2) & (moved["case"] == "c0"), "fold"] = 1
    with pytest.raises(StatsError, match="one fold"):
        per_case_table(moved)


def test_noise_floor_hand_values():
    df = seeded_table({"scratch": SCRATCH}, {"scratch": [1, 2, 3]})
    f = noise_floor(df, "scratch")
    means = SCRATCH.mean(axis=1)
    np.testing.assert_allclose(f.seed_means, means)
    assert f.spread == pytest.approx(means.max() - means.min())
    assert f.run_sd == pytest.approx(means.std(ddof=1))
    assert f.aa_difference == pytest.approx(1.959964 * math.sqrt(2) * means.std(ddof=1))
    assert f.aa_difference_t == pytest.approx(4.302653 * math.sqrt(2) * means.std(ddof=1))
    assert [(p.seed, p.reference_seed) for p in f.pairs] == [(2, 1), (3, 1), (3, 2)]
    diff = SCRATCH[1] - SCRATCH[0]
    assert f.pairs[0].mean_diff == pytest.approx(diff.mean())
    assert f.pairs[0].p_value == pytest.approx(wilcoxon(diff).pvalue)
    assert f.false_calls == sum(p.p_value < 0.05 for p in f.pairs)
    assert "seed pairs" in f.statement
    with pytest.raises(StatsError, match="at least 2 seeds"):
        noise_floor(df[df["seed"] == 1], "scratch")


def test_pooled_noise_floor_pools_variances_and_skips_single_seed_arms():
    df = seeded_table(
        {"scratch": SCRATCH, "finetune": FINETUNE[:2], "frozen": SCRATCH[:1]},
        {"scratch": [1, 2, 3], "finetune": [1, 2], "frozen": [1]},
    )
    f = pooled_noise_floor(df)
    var_s, var_f = SCRATCH.mean(axis=1).var(ddof=1), FINETUNE[:2].mean(axis=1).var(ddof=1)
    assert f.arm == "scratch + finetune" and f.run_df == 3 and len(f.pairs) == 4
    assert f.run_sd == pytest.approx(math.sqrt((2 * var_s + var_f) / 3))
