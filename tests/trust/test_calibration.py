"""Temperature scaling, reliability bins and the voxel band, against known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medtl.trust.calibration import (
    CalibrationFit,
    Reliability,
    band_sample,
    calibrate,
    fit_temperature,
    nll,
    reliability,
    temper,
    temper_array,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _dirichlet(classes: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(classes), size=shape)  # (*shape, classes)
    return torch.from_numpy(np.moveaxis(p, -1, 0).astype(np.float32))


# --- temper -------------------------------------------------------------------------------


def test_temperature_one_is_the_identity():
    p = _dirichlet(3, (4, 5, 6))
    out = temper(p, 1.0)
    assert out.dtype == torch.float32
    assert torch.allclose(out, p, atol=1e-6, rtol=0)


@pytest.mark.parametrize("t", [0.3, 3.0])
def test_the_argmax_is_unchanged_and_sums_stay_one(t):
    p = _dirichlet(4, (3, 7, 5), seed=1)
    out = temper(p, t)
    assert out.shape == p.shape
    assert out.dtype == torch.float32
    assert torch.equal(out.argmax(0), p.argmax(0))
    assert torch.allclose(out.sum(0), torch.ones(p.shape[1:]), atol=1e-6)


def test_a_high_temperature_flattens_towards_uniform():
    p = _dirichlet(3, (50,), seed=2)
    flat = temper(p, 1e4)
    # |log p| <= 20 here, so each tempered logit is within 2e-3 of 0: p_T within ~1e-3 of 1/3.
    assert float(np.abs(np.log(p.numpy())).max()) < 20
    assert torch.allclose(flat, torch.full_like(p, 1 / 3), atol=2e-3)
    spread = [float((temper(p, t).max(0).values - 1 / 3).mean()) for t in (1.0, 2.0, 8.0)]
    assert spread[0] > spread[1] > spread[2] > 0


def test_a_zero_probability_stays_about_zero():
    out = temper(torch.tensor([[1.0], [0.0]]), 2.0)
    # tiny ** (1 / 2) = 1.08e-19
    assert float(out[1, 0]) < 1e-18
    assert float(out[0, 0]) == 1.0


def test_the_numpy_form_matches_the_torch_form():
    p = _dirichlet(3, (100,), seed=3)
    a = temper_array(p.numpy(), 2.5)
    assert a.dtype == np.float32
    assert np.array_equal(a, temper(p, 2.5).numpy())


@pytest.mark.parametrize("t", [0.0, -1.0, math.nan, math.inf])
def test_a_temperature_must_be_positive_and_finite(t):
    with pytest.raises(ValueError, match="temperature"):
        temper(torch.ones(2, 3) / 2, t)


# --- band_sample --------------------------------------------------------------------------


def _cube_indices(shape, centre, margin):
    mask = np.zeros(shape, bool)
    sl = tuple(slice(max(0, c - margin), c + margin + 1) for c in centre)
    mask[sl] = True
    return np.flatnonzero(mask)


def test_margin_one_around_a_single_voxel_is_its_27_neighbours():
    label = np.zeros((6, 7, 8), np.uint8)
    label[2, 3, 4] = 1
    idx = band_sample(label, np.zeros_like(label), 1, 1000, np.random.default_rng(0))
    assert idx.dtype == np.int64
    assert idx.size == 27
    assert np.array_equal(idx, _cube_indices(label.shape, (2, 3, 4), 1))


def test_the_band_joins_reference_and_prediction():
    label = np.zeros((9, 9, 9), np.uint8)
    pred = np.zeros_like(label)
    label[1, 1, 1] = 2
    pred[7, 7, 7] = 1
    idx = band_sample(label, pred, 1, 1000, np.random.default_rng(0))
    expected = np.union1d(
        _cube_indices(label.shape, (1, 1, 1), 1), _cube_indices(label.shape, (7, 7, 7), 1)
    )
    assert np.array_equal(idx, expected)
    # margin 0: the foreground itself; a corner voxel has 8 voxels within margin 1
    assert band_sample(label, pred, 0, 1000, np.random.default_rng(0)).size == 2
    corner = np.zeros((4, 4, 4), np.uint8)
    corner[0, 0, 0] = 1
    assert band_sample(corner, corner, 1, 1000, np.random.default_rng(0)).size == 8


def test_the_cap_is_a_sorted_random_subset_and_seeded():
    label = np.zeros((9, 9, 9), np.uint8)
    label[4, 4, 4] = 1
    full = band_sample(label, label, 2, 10_000, np.random.default_rng(0))
    assert full.size == 125
    a = band_sample(label, label, 2, 10, np.random.default_rng(7))
    b = band_sample(label, label, 2, 10, np.random.default_rng(7))
    assert a.size == 10
    assert np.array_equal(a, b)
    assert np.all(np.diff(a) > 0)
    assert np.isin(a, full).all()


def test_no_foreground_gives_no_voxel():
    empty = np.zeros((3, 4, 5), np.uint8)
    idx = band_sample(empty, empty, 2, 100, np.random.default_rng(0))
    assert idx.size == 0
    assert idx.dtype == np.int64


def test_band_sample_rejects_two_shapes():
    with pytest.raises(ValueError, match="one shape"):
        band_sample(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 1, 10, np.random.default_rng(0))


# --- reliability and nll ------------------------------------------------------------------


def test_reliability_by_hand():
    probs = np.array(
        [
            [0.95, 0.85, 0.30, 0.65, 0.00],
            [0.05, 0.15, 0.70, 0.35, 1.00],
        ]
    )
    labels = np.array([0, 1, 1, 1, 1])
    # confidences .95 (right) .85 (wrong) .70 (right) .65 (wrong) 1.0 (right, last bin)
    # bin [.6, .8): conf .675, acc .5 ; bin [.8, 1]: conf 2.8/3, acc 2/3
    # ECE = (2 |.5 - .675| + 3 |2/3 - 2.8/3|) / 5 = (.35 + .8) / 5 = .23
    r = reliability(probs, labels, bins=5)
    assert r.edges == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-12)
    assert len(r.edges) == 6
    assert r.count == [0, 0, 0, 2, 3]
    assert r.confidence[:3] == [None, None, None]
    assert r.accuracy[:3] == [None, None, None]
    assert r.confidence[3:] == pytest.approx([0.675, 2.8 / 3], abs=1e-12)
    assert r.accuracy[3:] == pytest.approx([0.5, 2 / 3], abs=1e-12)
    assert r.ece == pytest.approx(0.23, abs=1e-12)


def test_reliability_without_voxels():
    r = reliability(np.zeros((2, 0)), np.zeros(0, int), bins=3)
    assert r.count == [0, 0, 0]
    assert math.isnan(r.ece)
    assert r.as_dict()["ece"] is None


def test_nll_by_hand_and_its_floor():
    probs = np.array([[0.5, 0.25, 0.0], [0.5, 0.75, 1.0]])
    labels = np.array([0, 1, 0])
    expected = (math.log(2) + math.log(4 / 3) - math.log(1e-12)) / 3
    assert nll(probs, labels) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(nll(np.zeros((2, 0)), np.zeros(0, int)))


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="class indices"):
        nll(np.full((2, 3), 0.5), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(classes, n\)"):
        reliability(np.full((2, 3), 0.5), np.array([0, 1]))


# --- fitting ------------------------------------------------------------------------------

N = 200_000


def _synthetic(scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits z, labels drawn from softmax(z), and the probabilities softmax(scale · z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(3, N))
    q = _softmax(z)
    u = rng.random(N)
    labels = np.minimum((u[None, :] > np.cumsum(q, axis=0)).sum(axis=0), 2)
    return z, labels, _softmax(scale * z).astype(np.float32)


def _standard_error(z: np.ndarray, scale: float, t: float) -> float:
    """Standard error of the maximum-likelihood T: 1/sqrt(n I), I = E[Var_p(a)] / T⁴.

    With p_T = softmax(a / T), a = scale · z, d ln p_y / dT = −(a_y − E_p a) / T², so the
    Fisher information of one voxel is Var_p(a) / T⁴ at the true T.
    """
    a = scale * z
    p = _softmax(a / t)
    var = (p * a**2).sum(0) - ((p * a).sum(0)) ** 2
    return 1.0 / math.sqrt(z.shape[1] * float(var.mean()) / t**4)


def test_an_over_confident_ensemble_gets_its_temperature_back():
    z, labels, probs = _synthetic(2.5)
    se = _standard_error(z, 2.5, 2.5)
    assert 10 * se < 0.1  # the tolerance below is more than 10 standard errors
    fit = calibrate(probs, labels, cases=7, bins=15)
    assert abs(fit.temperature - 2.5) < 0.1
    assert fit.after.ece < fit.before.ece
    assert fit.nll_after <= fit.nll_before
    assert fit.voxels == N
    assert fit.cases == 7
    assert sum(fit.before.count) == sum(fit.after.count) == N


def test_a_calibrated_ensemble_keeps_temperature_one():
    z, labels, probs = _synthetic(1.0, seed=1)
    se = _standard_error(z, 1.0, 1.0)
    assert 10 * se < 0.05
    assert abs(fit_temperature(probs, labels) - 1.0) < 0.05


def test_an_under_confident_ensemble_is_sharpened():
    z, labels, probs = _synthetic(0.5, seed=2)
    assert abs(fit_temperature(probs, labels) - 0.5) < 0.05


def test_no_voxel_or_no_information_gives_temperature_one():
    assert fit_temperature(np.zeros((2, 0)), np.zeros(0, int)) == 1.0
    certain = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert fit_temperature(certain, np.array([0, 0, 1])) == 1.0


def test_the_temperature_is_rounded_to_four_decimals():
    z, labels, probs = _synthetic(1.7, seed=3)
    t = fit_temperature(probs[:, :5000], labels[:5000])
    assert t == round(t, 4)
    assert 0.05 <= t <= 20.0


# --- records ------------------------------------------------------------------------------


def test_a_fit_round_trips_through_json():
    probs = np.array([[0.9, 0.8, 0.3, 0.6], [0.1, 0.2, 0.7, 0.4]])
    fit = calibrate(probs, np.array([0, 1, 1, 0]), cases=2, bins=10)
    assert None in fit.as_dict()["before"]["confidence"]  # empty bins present
    text = json.dumps(fit.as_dict(), allow_nan=False)
    back = CalibrationFit.from_dict(json.loads(text))
    assert back == fit


def test_an_empty_fit_is_json_safe():
    fit = calibrate(np.zeros((3, 0)), np.zeros(0, int), cases=0, bins=4)
    assert fit.temperature == 1.0
    d = fit.as_dict()
    text = json.dumps(d, allow_nan=False)
    back = CalibrationFit.from_dict(json.loads(text))
    assert back.as_dict() == d
    assert math.isnan(back.nll_before)
    assert isinstance(back.after, Reliability)
