"""Risk–coverage curves, thresholds and the choice of a failure score, against known answers."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from medtl.trust.failure import (
    MEASURES,
    FailureAssessment,
    Threshold,
    assess,
    aurc,
    choose_threshold,
    oracle_aurc,
    random_aurc,
    risk_coverage,
    risk_of,
    spearman,
)

RISK = np.array([0.4, 0.1, 0.3, 0.2])
LOSS = np.array([0.8, 0.0, 0.2, 0.6])


def _aurc_of_order(loss_in_order: np.ndarray) -> float:
    k = np.arange(1, loss_in_order.size + 1)
    return float((np.cumsum(loss_in_order) / k).mean())


# --- curves and areas ---------------------------------------------------------------------


def test_the_curve_and_area_by_hand():
    # retained by risk: losses 0, .6, .2, .8 -> running means 0, .3, .8/3, .4
    coverage, curve = risk_coverage(RISK, LOSS)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve == pytest.approx([0.0, 0.3, 0.8 / 3, 0.4], abs=1e-15)
    assert aurc(RISK, LOSS) == pytest.approx((0.3 + 0.8 / 3 + 0.4) / 4, abs=1e-15)
    # oracle: losses 0, .2, .6, .8 -> 0, .1, .8/3, .4
    assert oracle_aurc(LOSS) == pytest.approx((0.1 + 0.8 / 3 + 0.4) / 4, abs=1e-15)
    assert random_aurc(LOSS) == pytest.approx(0.4, abs=1e-15)
    assert oracle_aurc(LOSS) <= aurc(RISK, LOSS) <= aurc(-LOSS, LOSS)


def test_a_perfect_score_is_the_oracle_and_a_reversed_one_the_worst():
    rng = np.random.default_rng(0)
    loss = rng.random(6)
    every_order = [_aurc_of_order(loss[list(p)]) for p in itertools.permutations(range(6))]
    assert aurc(loss, loss) == oracle_aurc(loss)
    assert oracle_aurc(loss) == pytest.approx(min(every_order), abs=1e-12)
    assert aurc(-loss, loss) == pytest.approx(max(every_order), abs=1e-12)
    # a monotone transform of a perfect score is still perfect
    assert aurc(np.exp(3 * loss), loss) == oracle_aurc(loss)


def test_a_constant_score_is_exactly_random():
    loss = np.array([0.25, 0.5, 0.75, 0.5, 1.0, 0.0, 0.5, 0.5])  # dyadic: exact arithmetic
    assert aurc(np.full(8, 0.3), loss) == random_aurc(loss) == 0.5
    other = np.random.default_rng(1).random(7)
    assert aurc(np.zeros(7), other) == pytest.approx(random_aurc(other), rel=1e-14)


def test_ties_count_as_the_mean_over_their_orders():
    rng = np.random.default_rng(2)
    risk = np.array([0.3, 0.1, 0.3, 0.2, 0.1, 0.3, 0.5])
    loss = rng.random(risk.size)
    # every order of the cases consistent with the risk (ties permuted), equally likely
    groups = [np.flatnonzero(risk == r) for r in np.unique(risk)]
    curves = [
        np.cumsum(loss[np.concatenate(orders)]) / np.arange(1, risk.size + 1)
        for orders in itertools.product(*(itertools.permutations(g) for g in groups))
    ]
    _, curve = risk_coverage(risk, loss)
    assert curve == pytest.approx(np.mean(curves, axis=0), abs=1e-12)


def test_no_case_gives_empty_curves_and_nan_areas():
    coverage, curve = risk_coverage(np.empty(0), np.empty(0))
    assert coverage.size == curve.size == 0
    assert math.isnan(aurc(np.empty(0), np.empty(0)))
    assert math.isnan(random_aurc(np.empty(0)))


def test_risk_of_follows_each_direction():
    values = np.array([0.2, 0.9])
    assert risk_of("mean_entropy", values).tolist() == [0.2, 0.9]
    assert risk_of("agreement_dice", values) == pytest.approx([0.8, 0.1])
    assert set(MEASURES.values()) == {1, -1}
    with pytest.raises(ValueError, match="Allowed"):
        risk_of("entropy", values)


def test_spearman_sign_and_its_undefined_cases():
    dice = np.array([0.9, 0.8, 0.5, 0.2])
    rho, p = spearman(1 - dice, dice)
    assert rho == pytest.approx(-1.0)
    assert 0 <= p <= 1
    assert spearman(dice, dice)[0] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in spearman(np.array([0.1, 0.2]), np.array([0.3, 0.1])))
    assert all(math.isnan(x) for x in spearman(np.full(4, 0.5), dice))
    assert all(math.isnan(x) for x in spearman(dice, np.full(4, 0.5)))


# --- thresholds ---------------------------------------------------------------------------


def test_youden_by_hand():
    risk = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    failed = np.array([False, True, False, True, True])
    # J per candidate: .1 -> 0, .2 -> 1/2, .3 -> 1/6, .4 -> 2/3, .5 -> 1/3
    t = choose_threshold(risk, failed)
    assert t == Threshold(0.4, "youden", 2 / 3, 1.0)


def test_youden_ties_go_to_the_higher_threshold():
    risk = np.array([0.1, 0.2, 0.3, 0.4])
    failed = np.array([False, True, False, True])
    # J: .1 -> 0, .2 -> 1/2, .3 -> 0, .4 -> 1/2: the tie goes to .4 (fewer flags)
    t = choose_threshold(risk, failed)
    assert (t.value, t.rule, t.sensitivity, t.specificity) == (0.4, "youden", 0.5, 1.0)


def test_no_failure_flags_only_cases_beyond_the_cv_ones():
    risk = np.array([0.1, 0.3, 0.2])
    t = choose_threshold(risk, np.zeros(3, bool))
    assert t.rule == "beyond_cv"
    assert t.value == np.nextafter(0.3, np.inf)
    assert not t.flags(risk).any()
    assert t.flags(np.array([0.3 + 1e-12]))[0]
    assert (t.sensitivity, t.specificity) == (None, 1.0)


def test_only_failures_flags_everything():
    t = choose_threshold(np.array([0.4, 0.2, 0.6]), np.ones(3, bool))
    assert (t.value, t.rule, t.sensitivity, t.specificity) == (0.2, "all", 1.0, None)


def test_no_case_gives_an_infinite_threshold():
    t = choose_threshold(np.empty(0), np.empty(0, bool))
    assert (t.value, t.rule) == (math.inf, "beyond_cv")
    assert Threshold.from_dict(json.loads(json.dumps(t.as_dict(), allow_nan=False))) == t


# --- assess -------------------------------------------------------------------------------

CASES = [f"case{i}" for i in range(6)]
DICE = pd.Series([0.95, 0.9, 0.85, 0.6, 0.4, 0.1], index=CASES)


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            # backwards: highest on the best cases
            "mean_entropy": [0.9, 0.7, 0.6, 0.3, 0.2, 0.1],
            # the Dice itself: a perfect score once turned into 1 - agreement
            "agreement_dice": DICE.to_numpy(),
            "unrelated": [1, 2, 3, 4, 5, 6],
        },
        index=CASES,
    )


def test_assess_picks_the_better_measure():
    a = assess(_scores(), DICE, bad_dice=0.5)
    assert [m.measure for m in a.measures] == ["mean_entropy", "agreement_dice"]
    assert a.chosen == "agreement_dice"
    chosen, other = a.result(), a.result("mean_entropy")
    assert chosen.aurc == chosen.oracle_aurc < chosen.random_aurc < other.aurc
    assert chosen.spearman_rho == pytest.approx(-1.0)
    assert other.spearman_rho == pytest.approx(1.0)
    assert chosen.n == 6
    assert a.threshold.rule == "youden"
    assert (a.threshold.sensitivity, a.threshold.specificity) == (1.0, 1.0)
    assert a.flagged == ["case5", "case4"]  # riskiest first
    assert a.curves["coverage"] == pytest.approx([k / 6 for k in range(1, 7)])
    assert a.curves["chosen"] == a.curves["oracle"]
    assert a.curves["random"] == [pytest.approx(chosen.random_aurc)] * 6


def test_assess_aligns_on_the_index_and_skips_missing_values():
    scores = _scores().drop(columns="agreement_dice")
    scores["volume_cv"] = np.nan  # all NaN: skipped
    scores.loc["case2", "mean_entropy"] = np.nan
    dice = pd.concat([DICE.drop("case0"), pd.Series({"other": 0.5})]).iloc[::-1]
    a = assess(scores, dice, bad_dice=0.5)
    assert [m.measure for m in a.measures] == ["mean_entropy"]
    assert a.result("mean_entropy").n == 4  # case0 lacks a Dice, case2 a score, 'other' both
    assert len(a.curves["coverage"]) == 4
    # Backwards (highest on the best cases): worse than random, so not chosen; some cases
    # are good, so nothing is flagged.
    assert a.chosen is None and a.threshold is None and a.flagged == []


def test_a_constant_score_is_never_chosen_and_all_failed_flags_all():
    scores = pd.DataFrame({"mean_mutual_info": [0.0] * 6, "mean_entropy": 1 - DICE}, index=CASES)
    a = assess(scores, DICE, bad_dice=0.5)
    assert a.chosen == "mean_entropy"  # the constant one ties random, and is left out
    failed = assess(scores[["mean_mutual_info"]], DICE, bad_dice=0.99)
    assert failed.chosen is None and failed.threshold.rule == "all"
    assert sorted(failed.flagged) == sorted(CASES)
    some_good = assess(scores[["mean_mutual_info"]], DICE, bad_dice=0.5)
    assert some_good.chosen is None and some_good.threshold is None and some_good.flagged == []


def test_equal_areas_go_to_the_first_measure():
    scores = pd.DataFrame(
        {"volume_cv": 1 - DICE.to_numpy(), "mean_entropy": 1 - DICE.to_numpy()}, index=CASES
    )
    assert assess(scores, DICE, 0.5).chosen == "mean_entropy"


def test_assess_without_measure_or_case():
    none = assess(pd.DataFrame({"unrelated": [1.0]}, index=["a"]), pd.Series({"a": 0.5}), 0.5)
    assert (none.chosen, none.threshold, none.flagged, none.measures) == (None, None, [], [])
    disjoint = assess(_scores(), pd.Series({"elsewhere": 0.5}), 0.5)
    assert (disjoint.chosen, disjoint.threshold, disjoint.flagged) == (None, None, [])
    assert json.dumps(disjoint.as_dict(), allow_nan=False)


def test_an_assessment_round_trips_through_json():
    a = assess(_scores(), DICE, bad_dice=0.5)
    back = FailureAssessment.from_dict(json.loads(json.dumps(a.as_dict(), allow_nan=False)))
    assert back == a
    # with NaN (Spearman on two cases): None in JSON, NaN again on the way back
    small = assess(_scores().iloc[:2], DICE, bad_dice=0.5)
    assert small.result().spearman_rho != small.result().spearman_rho
    d = small.as_dict()
    assert d["measures"][0]["spearman_rho"] is None
    back = FailureAssessment.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back.as_dict() == d
    assert math.isnan(back.result().spearman_p)
