"""Per-arm summaries and paired comparisons on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from medtl.evaluate.stats import StatsError, compare_arms, summarise_arms


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
    result = compare_arms(metrics_table(REF, REF + NOISE), "finetune", "scratch")
    assert result.p_value > 0.05
    assert "no evidence" in result.statement


def test_clear_loss_says_worse():
    result = compare_arms(metrics_table(REF, REF - GAIN), "finetune", "scratch")
    assert "worse than scratch" in result.statement


def test_hd95_lower_is_better():
    # hd95 = 10 * (1 - dice): a Dice gain is an HD95 reduction, hence an improvement
    result = compare_arms(metrics_table(REF, REF + GAIN), "finetune", "scratch", metric="hd95")
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
    assert list(out.columns) == ["arm", "class", "n", "mean", "sd", "median"]
    row = out[(out["arm"] == "scratch") & (out["class"] == "a")].iloc[0]
    assert row["n"] == len(REF)
    assert row["mean"] == pytest.approx(REF.mean())
    assert row["sd"] == pytest.approx(REF.std(ddof=1))
    assert row["median"] == pytest.approx(np.median(REF))
    hd = summarise_arms(df, "hd95")
    assert hd.iloc[0]["n"] == len(REF) - 1  # NaN left out
