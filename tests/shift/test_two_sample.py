"""The MMD estimator, its permutation p-value and the per-case distance."""

from __future__ import annotations

import numpy as np

from medtl.shift.two_sample import (
    case_distances,
    gaussian_kernel,
    in_source_units,
    median_bandwidth,
    mmd2_unbiased,
    mmd_test,
)


def test_unbiased_mmd2_by_hand() -> None:
    # x = {0, 1}, y = {3}, {3, 5} in 1-D, bandwidth 1: k(a, b) = exp(-(a - b)² / 2).
    x, y = np.array([[0.0], [1.0]]), np.array([[3.0], [5.0]])
    k = gaussian_kernel(np.vstack([x, y]), np.vstack([x, y]), 1.0)

    def kern(a: float, b: float) -> float:
        return float(np.exp(-((a - b) ** 2) / 2))

    xx = kern(0, 1)  # the one pair i != j, counted twice over 2 * 1
    yy = kern(3, 5)
    xy = (kern(0, 3) + kern(0, 5) + kern(1, 3) + kern(1, 5)) / 4
    assert abs(mmd2_unbiased(k, 2) - (xx + yy - 2 * xy)) < 1e-15 * 8


def test_p_value_is_the_permutation_count_identity() -> None:
    rng = np.random.default_rng(0)
    result = mmd_test(rng.normal(size=(8, 3)), rng.normal(size=(9, 3)), permutations=99, seed=1)
    assert result.p_value == (1 + result.exceeding) / (1 + 99)
    assert 1 / 100 <= result.p_value <= 1


def test_a_clear_shift_gets_a_small_p_value() -> None:
    # Three sd apart in every feature: only relabellings close to the observed split (or
    # its mirror) reach its MMD², a few of the 184756 ways to split 20 into 10 + 10.
    rng = np.random.default_rng(0)
    result = mmd_test(rng.normal(size=(10, 4)), rng.normal(3.0, 1.0, size=(10, 4)), 199, 0)
    assert result.p_value <= 0.02 and result.mmd2 > 0


def test_a_a_p_values_are_valid() -> None:
    """Under A/A a valid p-value is uniform: P(p <= 0.1) <= 0.1 for each of 20 seeds, so
    more than 7 of 20 below 0.1 has probability < 0.003 (binomial) if the test is valid."""
    small = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a, b = rng.normal(size=(10, 5)), rng.normal(size=(10, 5))
        small += mmd_test(a, b, permutations=99, seed=seed).p_value <= 0.1
    assert small <= 7


def test_the_shifted_case_ranks_highest_and_source_cases_are_typical() -> None:
    rng = np.random.default_rng(0)
    source = rng.normal(size=(12, 4))
    target = rng.normal(size=(6, 4))
    target[4] += 6.0
    scores, source_scores = case_distances(source, target)
    assert int(np.argmax(scores)) == 4 and scores[4] > 3
    # Standardised leave-one-out: mean 0 and sd 1 exactly (up to float64 rounding).
    assert abs(source_scores.mean()) < 1e-12 and abs(source_scores.std(ddof=1) - 1) < 1e-12


def test_source_units_and_bandwidth() -> None:
    x, y = in_source_units(np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[5.0, 6.0]]))
    assert np.array_equal(x, [[-1.0, 0.0], [1.0, 0.0]]) and np.array_equal(y, [[3.0, 1.0]])
    assert median_bandwidth(np.zeros((3, 2))) == 1.0
