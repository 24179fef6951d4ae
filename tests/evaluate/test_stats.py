"""Per-arm summaries, paired comparisons, Holm and the verdict on fixed data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap, wilcoxon
from scipy.stats import t as t_dist

from medtl.evaluate.bootstrap import bootstrap_ci, cluster_mean_statistic
from medtl.evaluate.cases import StatsError, per_case, per_case_runs, per_case_table
from medtl.evaluate.comparisons import PairedComparison, compare_all_pairs, compare_arms, verdict
from medtl.evaluate.multiplicity import holm
from medtl.evaluate.summaries import fold_table, summarise_arms


def metrics_table(ref: np.ndarray, arm: np.ndarray, classes=("tumour",)) -> pd.DataFrame:
    """A metrics.csv-like table: ``scratch`` = ref, ``finetune`` = arm, per case and class."""
    rows = []
    for name, values in (("scratch", ref), ("finetune", arm)):
        for i, v in enumerate(values):
            for cls in classes:
                rows.append(
                    {
                        "arm": name,
                        "fold": i % 3,
                        "case": f"c{i:02d}",
                        "class": cls,
                        "dice": float(v),
                        "hd95": 10.0 * (1.0 - float(v)),
                    }
                )
    return pd.DataFrame(rows)


REF = np.array([0.61, 0.55, 0.70, 0.48, 0.66, 0.59, 0.73, 0.52, 0.64, 0.58, 0.69, 0.45])
GAIN = np.array([0.12, 0.08, 0.15, 0.10, 0.05, 0.11, 0.09, 0.14, 0.07, 0.13, 0.06, 0.10])
NOISE = np.array([0.02, -0.03, 0.01, -0.01, 0.03, -0.02, 0.015, -0.025, 0.005, -0.01, 0.02, -0.02])
# Without ties in the absolute differences (scipy then takes its fast exact Wilcoxon path
# instead of a 2**12 permutation test):
GAIN2 = GAIN + 0.001 * np.arange(12)
SHIFT = np.array(
    [0.013, -0.021, 0.034, 0.008, -0.017, 0.027, 0.041, -0.006, 0.019, 0.052, -0.011, 0.024]
)
WOB = np.array(
    [0.011, -0.023, 0.016, -0.009, 0.031, -0.014, 0.007, -0.028, 0.004, -0.019, 0.025, -0.002]
)


def test_wilcoxon_p_equals_scipy():
    df = metrics_table(REF, REF + NOISE)
    result = compare_arms(df, "finetune", "scratch")
    diff = (REF + NOISE) - REF
    assert result.p_value == pytest.approx(wilcoxon(diff, alternative="two-sided").pvalue)
    assert result.n == len(REF)
    assert result.mean_diff == pytest.approx(diff.mean())
    assert result.median_diff == pytest.approx(np.median(diff))


def test_bootstrap_ci_contains_mean_and_is_reproducible():
    df = metrics_table(REF, REF + GAIN)
    a = compare_arms(df, "finetune", "scratch", seed=7)
    b = compare_arms(df, "finetune", "scratch", seed=7)
    c = compare_arms(df, "finetune", "scratch", seed=8)
    assert a.ci_low <= a.mean_diff <= a.ci_high
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_clear_improvement_says_helped():
    result = compare_arms(metrics_table(REF, REF + GAIN), "finetune", "scratch")
    assert result.p_value < 0.05
    assert "improved" in result.statement
    assert "transfer helped" in result.statement
    assert "n = 12 cases" in result.statement


def test_noise_says_no_evidence():
    result = compare_arms(metrics_table(REF, REF + WOB), "finetune", "scratch")
    assert result.p_value > 0.05
    assert "no evidence" in result.statement


def test_clear_loss_says_worse():
    result = compare_arms(metrics_table(REF, REF - GAIN), "finetune", "scratch")
    assert "worse than scratch" in result.statement


def test_hd95_lower_is_better():
    # hd95 = 10 * (1 - dice): a Dice gain is an HD95 reduction, hence an improvement
    result = compare_arms(metrics_table(REF, REF + GAIN2), "finetune", "scratch", metric="hd95")
    assert result.mean_diff < 0
    assert "improved mean HD95" in result.statement


def test_too_few_cases_gives_nan_p():
    result = compare_arms(metrics_table(REF[:4], REF[:4] + GAIN[:4]), "finetune", "scratch")
    assert math.isnan(result.p_value)
    assert "not possible" in result.statement


def test_all_zero_differences_gives_nan_p():
    result = compare_arms(metrics_table(REF, REF), "finetune", "scratch")
    assert math.isnan(result.p_value)
    assert "not possible" in result.statement


def test_pairing_averages_classes_and_inner_joins_cases():
    df = metrics_table(REF, REF + GAIN, classes=("a", "b"))
    df.loc[(df["arm"] == "finetune") & (df["class"] == "b"), "dice"] += 0.2
    df = df[~((df["arm"] == "finetune") & (df["case"] == "c00"))]  # one case missing
    result = compare_arms(df, "finetune", "scratch")
    assert result.n == len(REF) - 1
    assert result.mean_diff == pytest.approx(GAIN[1:].mean() + 0.1)


def test_no_shared_cases_is_an_error():
    df = metrics_table(REF, REF + GAIN)
    df.loc[df["arm"] == "finetune", "case"] = "other"
    with pytest.raises(StatsError, match="none in common"):
        compare_arms(df, "finetune", "scratch")


def test_summarise_arms_per_arm_and_class():
    df = metrics_table(REF, REF + GAIN, classes=("a", "b"))
    df.loc[0, "hd95"] = np.nan
    out = summarise_arms(df, "dice")
    assert list(out.columns) == [
        "arm",
        "class",
        "n",
        "mean",
        "sd",
        "median",
        "ci_low",
        "ci_high",
        "seeds",
        "run_sd",
        "method",
    ]
    row = out[(out["arm"] == "scratch") & (out["class"] == "a")].iloc[0]
    assert row["n"] == len(REF)
    assert row["mean"] == pytest.approx(REF.mean())
    assert row["sd"] == pytest.approx(REF.std(ddof=1))
    assert row["median"] == pytest.approx(np.median(REF))
    assert (row["ci_low"], row["ci_high"]) == scipy_bca(REF, seed=0, n_boot=2000)
    hd = summarise_arms(df, "hd95")
    assert hd.iloc[0]["n"] == len(REF) - 1  # NaN left out


# ----------------------------------------------------------------------------- bootstrap


def scipy_bca(x: np.ndarray, *, seed: int, n_boot: int) -> tuple[float, float]:
    """The reference: scipy's BCa interval of the mean, cases resampled."""
    res = bootstrap(
        (x,), np.mean, n_resamples=n_boot, method="BCa", rng=np.random.default_rng(seed)
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cases(values, prefix: str = "c") -> pd.Series:
    return pd.Series(
        np.asarray(values, dtype=float), index=[f"{prefix}{i:02d}" for i in range(len(values))]
    )


@pytest.mark.parametrize("seed", [0, 11])
def test_bootstrap_ci_one_case_per_patient_equals_scipy(seed):
    ci = bootstrap_ci(cases(REF), n_boot=2000, seed=seed)
    assert ci == pytest.approx(scipy_bca(REF, seed=seed, n_boot=2000), abs=1e-12)
    # an explicit identity map is the same as none
    groups = pd.Series({c: f"p-{c}" for c in cases(REF).index})
    assert bootstrap_ci(cases(REF), groups, n_boot=2000, seed=seed) == ci


def test_bootstrap_ci_confidence_level_is_passed_on():
    narrow = bootstrap_ci(cases(REF), n_boot=500, seed=1, confidence=0.8)
    res = bootstrap(
        (REF,), np.mean, n_resamples=500, method="BCa", confidence_level=0.8,
        rng=np.random.default_rng(1),
    )  # fmt: skip
    assert narrow == pytest.approx(tuple(res.confidence_interval), abs=1e-12)
    wide = bootstrap_ci(cases(REF), n_boot=500, seed=1)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_compare_arms_ci_and_p_equal_scipy_on_fixed_data():
    df = metrics_table(REF, REF + SHIFT)
    result = compare_arms(df, "finetune", "scratch", seed=5, n_boot=1000)
    diff = (REF + SHIFT) - REF  # as compare_arms computes it
    assert result.p_value == wilcoxon(diff).pvalue
    assert (result.ci_low, result.ci_high) == pytest.approx(
        scipy_bca(diff, seed=5, n_boot=1000), abs=1e-12
    )
    assert result.mean_diff == pytest.approx(SHIFT.mean())
    assert math.isnan(result.p_holm)


# 8 patients with 1 to 3 cases each: case values = patient level + small noise
PATIENT_OF = {f"c{i:02d}": p for i, p in enumerate("AAABBCDDDEFFGHHH")}


def clustered_values() -> pd.Series:
    level = {p: 0.4 + 0.06 * k for k, p in enumerate("ABCDEFGH")}
    noise = np.linspace(-0.01, 0.01, len(PATIENT_OF))
    return pd.Series({c: level[p] + e for (c, p), e in zip(PATIENT_OF.items(), noise, strict=True)})


def test_cluster_statistic_of_identity_resample_is_plain_mean():
    values = clustered_values()
    stat, n = cluster_mean_statistic(values, pd.Series(PATIENT_OF))
    assert n == 8
    assert float(stat(np.arange(n))) == pytest.approx(values.mean(), rel=1e-15)
    # vectorized along the given axis
    two = stat(np.array([np.arange(n), np.zeros(n, dtype=int)]), axis=-1)
    assert two == pytest.approx([values.mean(), values[["c00", "c01", "c02"]].mean()])


def test_patient_with_three_cases_weighs_three():
    values = pd.Series({"a1": 0.9, "a2": 0.6, "a3": 0.3, "b1": 0.2, "c1": 0.1})
    groups = {"a1": "A", "a2": "A", "a3": "A", "b1": "B"}  # c1 missing: its own patient
    stat, n = cluster_mean_statistic(values, groups)
    assert n == 3
    # patients A (sum 1.8, 3 cases), B (0.2, 1), C (0.1, 1)
    assert float(stat(np.arange(3))) == pytest.approx((1.8 + 0.2 + 0.1) / 5)
    assert float(stat(np.array([0, 1]))) == pytest.approx((1.8 + 0.2) / 4)
    assert float(stat(np.array([1, 1, 2]))) == pytest.approx(0.5 / 3)
    assert float(stat(np.array([0, 0, 2]))) == pytest.approx(3.7 / 7)


def test_cluster_ci_equals_scipy_paired_bootstrap_of_patient_sums():
    values = clustered_values()
    frame = pd.DataFrame({"v": values, "p": pd.Series(PATIENT_OF)})
    per_patient = frame.groupby("p", sort=False)["v"].agg(["sum", "count"])
    res = bootstrap(
        (per_patient["sum"].to_numpy(), per_patient["count"].to_numpy(dtype=float)),
        lambda s, c, axis: s.sum(axis=axis) / c.sum(axis=axis),
        paired=True, n_resamples=999, method="BCa", rng=np.random.default_rng(4),
    )  # fmt: skip
    ci = bootstrap_ci(values, pd.Series(PATIENT_OF), n_boot=999, seed=4)
    assert ci == pytest.approx(tuple(res.confidence_interval), abs=1e-12)


def test_cluster_ci_is_wider_than_case_ci_when_cases_are_correlated():
    rng = np.random.default_rng(0)
    level = rng.normal(0.7, 0.1, size=10)
    values = pd.Series(
        {f"p{p}-{k}": level[p] + rng.normal(0, 0.005) for p in range(10) for k in range(5)}
    )
    groups = pd.Series({c: c.split("-")[0] for c in values.index})
    case_lo, case_hi = bootstrap_ci(values, n_boot=1000, seed=0)
    clu_lo, clu_hi = bootstrap_ci(values, groups, n_boot=1000, seed=0)
    assert clu_lo < values.mean() < clu_hi
    assert clu_hi - clu_lo > 1.5 * (case_hi - case_lo)


def test_bootstrap_ci_drops_nan_needs_two_patients_and_survives_constant_data():
    with_nan = cases([*REF, np.nan])
    assert bootstrap_ci(with_nan, n_boot=300, seed=2) == bootstrap_ci(
        cases(REF), n_boot=300, seed=2
    )
    lo, hi = bootstrap_ci(cases([0.5]), n_boot=100)
    assert math.isnan(lo) and math.isnan(hi)
    lo, hi = bootstrap_ci(cases(REF[:3]), {"c00": "P", "c01": "P", "c02": "P"}, n_boot=100)
    assert math.isnan(lo) and math.isnan(hi)
    # BCa is NaN on constant data: the percentile interval of the same resamples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_ci(cases([0.5] * 8), n_boot=100) == (0.5, 0.5)


def test_compare_arms_resamples_patients_when_given():
    df = metrics_table(REF, REF + GAIN2)
    groups = pd.Series({f"c{i:02d}": f"p{i // 3}" for i in range(len(REF))})
    result = compare_arms(df, "finetune", "scratch", seed=3, n_boot=500, groups=groups)
    diff = cases((REF + GAIN2) - REF)
    assert (result.ci_low, result.ci_high) == bootstrap_ci(diff, groups, n_boot=500, seed=3)
    plain = compare_arms(df, "finetune", "scratch", seed=3, n_boot=500)
    assert (plain.ci_low, plain.ci_high) != (result.ci_low, result.ci_high)
    assert result.p_value == plain.p_value  # Wilcoxon is on cases either way


def test_summarise_arms_ci_uses_groups():
    df = metrics_table(REF, REF + GAIN)
    groups = pd.Series({f"c{i:02d}": f"p{i // 4}" for i in range(len(REF))})
    out = summarise_arms(df, "dice", groups=groups, n_boot=400, seed=9)
    row = out[out["arm"] == "finetune"].iloc[0]
    expected = bootstrap_ci(cases(REF + GAIN), groups, n_boot=400, seed=9)
    assert (row["ci_low"], row["ci_high"]) == expected
    assert row["ci_low"] < row["mean"] < row["ci_high"]


# ----------------------------------------------------------------------------- Holm


def test_holm_hand_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # sorted 0.001, 0.2, 0.3, 0.6 → 0.004, 0.6, 0.6 (monotone), 0.6
    assert holm([0.3, 0.6, 0.2, 0.001]) == pytest.approx([0.6, 0.6, 0.6, 0.004])
    assert holm([0.02]) == [0.02]
    assert holm([]) == []


def test_holm_caps_at_one_and_ignores_nan():
    assert holm([0.4, 0.9, 0.6]) == [1.0, 1.0, 1.0]
    out = holm([0.01, math.nan, 0.04, math.nan])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)  # m = 2
    assert math.isnan(out[1]) and math.isnan(out[3])
    assert all(math.isnan(v) for v in holm([math.nan, math.nan]))
    with pytest.raises(ValueError, match="p-values in"):
        holm([0.5, 1.5])


def test_holm_is_monotone_in_the_raw_p():
    p = [0.003, 0.2, 0.01, 0.049, 0.02, 0.5, 0.011]
    adj = holm(p)
    pairs = sorted(zip(p, adj, strict=True))
    assert all(a[1] <= b[1] for a, b in zip(pairs, pairs[1:], strict=False))
    assert all(q >= r for q, r in zip(adj, p, strict=True))


# ----------------------------------------------------------------------------- all pairs


def arms_table(values: dict[str, np.ndarray], classes=("tumour",)) -> pd.DataFrame:
    rows = []
    for name, vals in values.items():
        for i, v in enumerate(vals):
            for cls in classes:
                rows.append(
                    {"arm": name, "fold": i % 3, "case": f"c{i:02d}", "class": cls,
                     "dice": float(v), "hd95": 10.0 * (1.0 - float(v))}
                )  # fmt: skip
    return pd.DataFrame(rows)


WINNER = {
    "scratch": REF,
    "frozen": REF + 0.5 * GAIN2,
    "finetune": REF + GAIN2 + 0.05,
    "ssl_finetune": REF + 0.8 * GAIN2,
}
ARMS = list(WINNER)


def test_compare_all_pairs_family():
    df = arms_table(WINNER)
    out = compare_all_pairs(df, ARMS, n_boot=200)
    assert len(out) == len(ARMS) * (len(ARMS) - 1) // 2
    assert [{c.arm, c.reference} for c in out] == [
        {"scratch", "frozen"}, {"scratch", "finetune"}, {"scratch", "ssl_finetune"},
        {"frozen", "finetune"}, {"frozen", "ssl_finetune"}, {"finetune", "ssl_finetune"},
    ]  # fmt: skip
    assert all(isinstance(c, PairedComparison) for c in out)
    assert all(c.mean_diff >= 0 for c in out)  # the better arm is `arm`
    assert all(c.reference == "scratch" for c in out[:3])
    assert all(c.p_holm >= c.p_value for c in out)
    assert [c.p_holm for c in out] == pytest.approx(holm([c.p_value for c in out]))
    assert all("Holm-adjusted p" in c.statement and "6 comparisons" in c.statement for c in out)
    # each comparison is compare_arms with the same seed
    single = compare_arms(df, out[1].arm, out[1].reference, n_boot=200)
    assert (single.ci_low, single.ci_high, single.p_value) == (
        out[1].ci_low,
        out[1].ci_high,
        out[1].p_value,
    )


def test_compare_all_pairs_lower_is_better_orders_by_lower_mean():
    out = compare_all_pairs(arms_table(WINNER), ARMS, metric="hd95", n_boot=100)
    assert all(c.mean_diff <= 0 for c in out)
    assert {c.arm for c in out if "finetune" in (c.arm, c.reference)} == {"finetune"}


def test_compare_all_pairs_rejects_repeated_arms():
    with pytest.raises(StatsError, match="distinct arms"):
        compare_all_pairs(arms_table(WINNER), ["scratch", "scratch"], n_boot=10)


def test_holm_decides_the_statement():
    # raw p < 0.05 but Holm-adjusted p >= 0.05: the statement says no evidence
    b = REF + SHIFT + 0.005
    table = arms_table({"a": REF, "b": b, "c": b + 0.5 * WOB})
    out = compare_all_pairs(table, ["a", "b", "c"], n_boot=100)
    ab = next(c for c in out if {c.arm, c.reference} == {"a", "b"})
    assert ab.p_value < 0.05 <= ab.p_holm
    assert "no evidence" in ab.statement
    assert "(Holm-adjusted p = " in ab.statement
    assert ab.p_holm == pytest.approx(3 * ab.p_value)  # the smallest of three


# ----------------------------------------------------------------------------- verdict


def test_verdict_clear_winner():
    df = arms_table(WINNER)
    text = verdict(df, ARMS, compare_all_pairs(df, ARMS, n_boot=100))
    best = (REF + GAIN2 + 0.05).mean()
    assert text == (
        f"finetune has the best mean Dice ({best:.3f}); the evidence holds: "
        "it beats scratch, frozen and ssl_finetune with Holm-adjusted p < 0.05."
    )


def test_verdict_tie_names_the_other_arm():
    values = {"scratch": REF, "finetune": REF + GAIN2, "ssl_finetune": REF + GAIN2 + WOB}
    df = arms_table(values)
    arms = list(values)
    comparisons = compare_all_pairs(df, arms, n_boot=100)
    tie = next(c for c in comparisons if {c.arm, c.reference} == {"finetune", "ssl_finetune"})
    text = verdict(df, arms, comparisons)
    assert text == (
        f"finetune has the best mean Dice ({(REF + GAIN2).mean():.3f}), but the evidence does "
        "not single it out: it is not distinguishable from ssl_finetune "
        f"(Holm-adjusted p = {tie.p_holm:.2g})."
    )
    assert "scratch" not in text


def test_verdict_one_arm_and_missing_comparison():
    df = arms_table({"finetune": REF})
    assert verdict(df, ["finetune"], []) == (
        f"finetune is the only arm, with mean Dice {REF.mean():.3f}: there is nothing to compare."
    )
    with pytest.raises(StatsError, match="expected a comparison"):
        verdict(arms_table(WINNER), ARMS, [])


def test_verdict_hd95_best_is_lowest():
    df = arms_table(WINNER)
    text = verdict(df, ARMS, compare_all_pairs(df, ARMS, metric="hd95", n_boot=100), "hd95")
    best = (10.0 * (1.0 - (REF + GAIN2 + 0.05))).mean()
    assert text.startswith(f"finetune has the best mean HD95 ({best:.2f} mm); the evidence holds")


def test_verdict_uses_case_means_over_classes():
    df = arms_table({"a": REF, "b": REF + 0.01 + SHIFT / 10}, classes=("x", "y"))
    df.loc[(df["arm"] == "a") & (df["class"] == "y"), "dice"] += 0.1  # a: +0.05 per case
    text = verdict(df, ["a", "b"], compare_all_pairs(df, ["a", "b"], n_boot=50))
    assert text.startswith(f"a has the best mean Dice ({REF.mean() + 0.05:.3f})")


# ----------------------------------------------------------------------------- tables


def small_table() -> pd.DataFrame:
    rows = [  # arm, fold, case, class, dice (case c2 first, in fold 1)
        ("A", 1, "c2", "x", 0.4), ("A", 1, "c2", "y", np.nan),
        ("A", 0, "c1", "x", 0.8), ("A", 0, "c1", "y", 0.6),
        ("A", 0, "c3", "x", 0.5), ("A", 0, "c3", "y", 0.7),
        ("B", 1, "c2", "x", 0.2), ("B", 1, "c2", "y", 0.4),
        ("B", 0, "c1", "x", 0.9), ("B", 0, "c1", "y", 0.7),
        ("B", 0, "c3", "x", 0.6), ("B", 0, "c3", "y", 0.8),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["arm", "fold", "case", "class", "dice"])


def test_fold_table_hand_values():
    out = fold_table(small_table())
    assert list(out.columns) == ["arm", "fold", "class", "n", "mean", "sd"]
    keys = list(zip(out["arm"], out["fold"], out["class"], strict=True))
    assert keys == [
        ("A", 0, "x"), ("A", 0, "y"), ("A", 1, "x"), ("A", 1, "y"),
        ("B", 0, "x"), ("B", 0, "y"), ("B", 1, "x"), ("B", 1, "y"),
    ]  # fmt: skip
    assert out["n"].tolist() == [2, 2, 1, 0, 2, 2, 1, 1]
    expected_mean = [0.65, 0.65, 0.4, np.nan, 0.75, 0.75, 0.2, 0.4]
    np.testing.assert_allclose(out["mean"], expected_mean)
    s = math.sqrt(2 * 0.15**2)  # two values 0.15 either side of the mean
    t = math.sqrt(2 * 0.05**2)
    np.testing.assert_allclose(out["sd"], [s, t, np.nan, np.nan, s, t, np.nan, np.nan])


def test_per_case_table_hand_values():
    out = per_case_table(small_table())
    assert list(out.columns) == ["case", "fold", "A", "B"]
    assert out["case"].tolist() == ["c1", "c2", "c3"]
    assert out["fold"].tolist() == [0, 1, 0]
    np.testing.assert_allclose(out["A"], [0.7, 0.4, 0.6])
    np.testing.assert_allclose(out["B"], [0.8, 0.3, 0.7])


def test_per_case_table_rejects_a_case_in_two_folds():
    df = small_table()
    df.loc[df["arm"] == "B", "fold"] = 2
    with pytest.raises(StatsError, match="one fold"):
        per_case_table(df)


# ------------------------------------------------------- arms with fewer shared seeds


def _mixed(rng: int, difference: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Arms a and b with seeds 1-3, arm c with seed 1 only (demo-sized variation)."""
    from medtl.evaluate.power import DEMO, simulate_metrics

    df = simulate_metrics(
        DEMO, seeds=(1, 2, 3), arms=("a", "b", "c"), difference=difference, rng=rng
    )
    df = df[~((df["arm"] == "c") & (df["seed"] > 1))]
    return df, dict(zip(df["case"], df["patient"], strict=True))


def test_an_arm_with_one_seed_borrows_the_pooled_run_variance():
    from medtl.evaluate.cases import METHOD_POOLED
    from medtl.evaluate.comparisons import pooled_run_variance
    from medtl.evaluate.runs import patient_codes

    df, groups = _mixed(0)
    c = compare_arms(df, "c", "a", groups=groups)
    assert c.method == METHOD_POOLED and c.seeds == 1
    assert "taken from the arms with several seeds" in c.statement
    # the pooled variance: per-seed means of a and b, weights S - 1 = 2 each
    means = [per_case_runs(df, arm).mean(axis=0) for arm in ("a", "b")]
    s2, dof = pooled_run_variance(df)
    assert dof == 4
    assert s2 == pytest.approx((means[0].var(ddof=1) + means[1].var(ddof=1)) / 2)
    # the interval: V_pat of the case differences + s² (1/1 + 1/3), Cochran–Cox critical
    diffs = per_case(df, "c") - per_case(df, "a")
    codes = patient_codes(diffs.index, groups)
    x = diffs.to_numpy()
    sums = np.bincount(codes, weights=x - x.mean())
    p = codes.max() + 1
    v_pat = p / (p - 1) * (sums**2).sum() / x.size**2
    v_run = s2 * (1 + 1 / 3)
    w = v_pat / (v_pat + v_run)
    crit = w * t_dist.ppf(0.975, p - 1) + (1 - w) * t_dist.ppf(0.975, 4)
    half = crit * np.sqrt(v_pat + v_run)
    assert (c.ci_low, c.ci_high) == pytest.approx((x.mean() - half, x.mean() + half))


def test_the_pooled_comparison_claims_few_false_differences():
    """200 null studies: the one-seed arm against a three-seed arm, at alpha 0.05."""
    false = sum(
        compare_arms(df, "c", "a", groups=groups).p_value < 0.05
        for df, groups in (_mixed(i) for i in range(200))
    )
    # binomial SE of a 5 % rate over 200 studies is 1.5 %; the method sits well below
    assert false / 200 <= 0.05
