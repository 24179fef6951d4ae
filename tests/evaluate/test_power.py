"""Simulated studies: the simulator, component estimates, calibration and power."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medtl.evaluate.cases import METHOD_RUNS
from medtl.evaluate.comparisons import compare_arms, paired_runs
from medtl.evaluate.estimation import estimate_components
from medtl.evaluate.power import (
    DEMO,
    Components,
    Design,
    calibrate,
    patient_only_p,
    power_table,
    run_aware_p,
    simulate_dice,
    simulate_metrics,
)
from medtl.evaluate.runs import run_aware_mean


def test_simulated_metrics_have_the_metrics_csv_shape():
    df = simulate_metrics(seeds=(1, 2, 3), rng=3)
    # demo design: 14 patients, 6 of them with two cases, in 3 folds
    assert df["case"].nunique() == 20 and df["patient"].nunique() == 14
    assert set(df["seed"]) == {1, 2, 3} and set(df["arm"]) == {"scratch", "finetune"}
    assert len(df) == 2 * 3 * 20
    assert df["dice"].between(0, 1).all()
    assert (df.groupby("patient")["fold"].nunique() == 1).all()
    assert list(df.columns[:6]) == ["arm", "fold", "seed", "case", "class", "dice"]


def test_vectorized_run_aware_p_equals_compare_arms():
    df = simulate_metrics(seeds=(1, 2, 3), rng=5)
    groups = dict(zip(df["case"], df["patient"], strict=True))
    c = compare_arms(df, "finetune", "scratch", groups=groups)
    assert c.method == METHOD_RUNS
    runs = paired_runs(df, "finetune", "scratch")
    patient = runs.index.map(groups).to_numpy()
    p = run_aware_p(runs.to_numpy().T[None], patient)
    assert p[0] == pytest.approx(c.p_value)
    assert c.p_value == pytest.approx(run_aware_mean(runs, groups).p_value)


def test_patient_only_p_is_nan_for_all_zero_differences():
    p = patient_only_p(np.zeros((2, 8)))
    assert np.isnan(p).all()


def test_estimate_components_recovers_the_sizes():
    # few clipped values (mean 0.5), many patients and seeds: estimates near the truth
    truth = Components(mean=0.5)
    df = simulate_metrics(
        truth, design=Design(n_patients=300), seeds=range(10), arms=("a", "b", "c"), rng=2
    )
    est = estimate_components(df, groups=dict(zip(df["case"], df["patient"], strict=True)))
    assert est.residual_sd == pytest.approx(truth.residual_sd, rel=0.1)
    assert est.run_sd == pytest.approx(truth.run_sd, rel=0.25)
    assert est.run_corr == pytest.approx(truth.run_corr, abs=0.25)
    assert est.patient_sd == pytest.approx(truth.patient_sd, rel=0.25)
    assert est.case_sd == pytest.approx(truth.case_sd, rel=0.25)
    one_seed = estimate_components(df[df["seed"] == 0])
    assert math.isnan(one_seed.run_sd) and math.isnan(one_seed.run_corr)


def test_simulation_is_deterministic():
    a = simulate_dice(np.random.default_rng(1), 4, 3)
    b = simulate_dice(np.random.default_rng(1), 4, 3)
    assert a.shape == (4, 2, 3, 20)
    np.testing.assert_array_equal(a, b)


def test_calibration_run_aware_false_positive_rate_is_at_most_alpha():
    """≥ 500 null studies with the demo's component sizes (see medtl.evaluate.power)."""
    cal = calibrate(DEMO, seeds=3, n_studies=1000, difference=0.05, power_seeds=(3, 5))
    table = cal.table()
    with pd.option_context("display.max_colwidth", 80, "display.width", 120):
        print(f"\n{cal.n_studies} simulated studies per row, demo-sized components:")
        print(table.to_string(index=False))
    # binomial SE of a 5 % rate over 1000 studies is 0.0069; the method sits well below
    assert cal.false_positive_rate_runs <= 0.05
    assert cal.false_positive_rate_patients_only > 0.05
    assert cal.aa_false_positive_rate > 0.05
    assert set(cal.power) == {3, 5}
    assert cal.power[5] >= cal.power[3]


def test_power_table_columns_and_one_seed_row():
    out = power_table(DEMO, seeds=(1, 3), differences=(0.05, 0.1), n_studies=200)
    assert list(out.columns) == [
        "seeds",
        "difference",
        "method",
        "false_positive_rate_runs",
        "false_positive_rate_patients_only",
        "power",
        "power_patients_only",
    ]
    assert out["seeds"].tolist() == [1, 1, 3, 3]
    one = out.iloc[0]
    assert (
        math.isnan(one["false_positive_rate_runs"]) and one["power"] == one["power_patients_only"]
    )
    assert (out["false_positive_rate_runs"].dropna() <= 0.1).all()
    again = power_table(DEMO, seeds=(1, 3), differences=(0.05, 0.1), n_studies=200)
    pd.testing.assert_frame_equal(out, again)
