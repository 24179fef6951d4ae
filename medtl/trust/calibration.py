"""Temperature scaling of an ensemble's mean probabilities, and how calibrated they are.

An arm's prediction is the mean ``p̄`` of its members' softmax probabilities (classes
first). Temperature scaling reshapes it as ``p_T = softmax(log p̄ / T)`` over the class
axis: ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens them, and the
argmax (hence every mask) is the same for every ``T``. ``T`` is fitted per arm by
minimising the negative log-likelihood of the reference labels on voxels sampled from
the held-out cross-validation cases (:func:`band_sample` keeps the voxels near the
structure, where the segmentation is decided). :func:`reliability` measures the
calibration before and after (reliability bins and the expected calibration error).

Everything here is pure: arrays in, numbers and frozen records out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize_scalar

if TYPE_CHECKING:  # torch is imported where probabilities are tempered: it loads slowly
    import torch

#: Probabilities are clamped here before the log, so that a 0 stays (almost) 0: the
#: smallest positive normal float32 (``torch.finfo(torch.float32).tiny``, the same value).
TINY = float(np.finfo(np.float32).tiny)

#: Probabilities are clamped here in the negative log-likelihood.
NLL_FLOOR = 1e-12

#: Search interval of :func:`fit_temperature`.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(
            f"temperature: expected a finite number > 0, found {temperature!r}; "
            "1.0 leaves the probabilities as they are"
        )
    return t


def temper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature-scaled probabilities ``softmax(log p / T)`` over the class axis 0.

    Args:
        probs: probabilities, classes first, any spatial shape (``(C, *spatial)``).
        temperature: ``T > 0``; 1 returns the probabilities as they are.

    Returns:
        float32 tensor of the shape of ``probs``; the argmax over classes is unchanged.
        ``p`` is clamped at the smallest positive float32 before the log, so a 0 stays
        about 0 (it becomes ``tiny^(1/T)`` relative to the others).

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.9, 0.5], [0.1, 0.5]])
        >>> [round(x, 4) for x in temper(p, 2.0)[:, 0].tolist()]
        [0.75, 0.25]
        >>> torch.equal(temper(p, 1.0), p)
        True
    """
    import torch

    t = _check_temperature(temperature)
    p = torch.as_tensor(probs).to(torch.float32)
    if t == 1.0:
        return p
    return torch.log_softmax(torch.log(p.clamp_min(TINY)) / t, dim=0).exp()


def temper_array(probs: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`temper` for a NumPy array ``(classes, n)`` (or any shape, classes first).

    Example:
        >>> temper_array(np.array([[0.9], [0.1]]), 2.0).ravel().round(4).tolist()
        [0.75, 0.25]
    """
    import torch

    return temper(torch.from_numpy(np.asarray(probs, dtype=np.float32)), temperature).numpy()


def band_sample(
    label: np.ndarray,
    prediction: np.ndarray,
    margin: int,
    cap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Flat indices of the voxels near the reference or the predicted foreground.

    Far background is trivially right and would make any calibration error look tiny;
    calibration is measured where the structure is decided: within ``margin`` voxels
    (cube neighbourhood, 3×3×3 in 3-D) of ``label > 0`` or ``prediction > 0``.

    Args:
        label: the reference label map.
        prediction: the predicted label map, same shape.
        margin: dilation steps around the foreground (0: the foreground only).
        cap: at most this many indices: a random subset without replacement beyond it.
        rng: the generator of that subset.

    Returns:
        sorted int64 flat (C-order) indices; empty when neither map has foreground.

    Example:
        >>> lab = np.zeros((5, 5, 5), np.uint8); lab[2, 2, 2] = 1
        >>> band_sample(lab, np.zeros_like(lab), 1, 100, np.random.default_rng(0)).size
        27
    """
    label = np.asarray(label)
    prediction = np.asarray(prediction)
    if label.shape != prediction.shape:
        raise ValueError(
            f"band_sample: label and prediction must have one shape, found {label.shape} "
            f"and {prediction.shape}; resample the prediction onto the label's grid"
        )
    if int(margin) < 0 or int(cap) < 0:
        raise ValueError(f"band_sample: expected margin >= 0 and cap >= 0, found {margin}, {cap}")
    mask = (label > 0) | (prediction > 0)
    if not mask.any():
        return np.empty(0, dtype=np.int64)
    if margin > 0:  # iterations=0 would mean "until nothing changes" to scipy
        structure = np.ones((3,) * mask.ndim, dtype=bool)
        mask = ndimage.binary_dilation(mask, structure=structure, iterations=int(margin))
    index = np.flatnonzero(mask).astype(np.int64)
    if index.size > cap:
        index = np.sort(rng.choice(index, size=int(cap), replace=False))
    return index


def _check_pair(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[1],):
        raise ValueError(
            f"expected probabilities (classes, n) and labels (n,), found {probs.shape} and "
            f"{labels.shape}; flatten the spatial axes: probs.reshape(classes, -1)"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[0]):
        raise ValueError(
            f"labels: expected class indices 0..{probs.shape[0] - 1}, found values "
            f"{labels.min()}..{labels.max()}; map label values to class positions first"
        )
    return probs, labels.astype(np.int64)


def finite_or_none(x: float | None) -> float | None:
    """A number for JSON: NaN and infinities (and None) as None."""
    return None if x is None or not math.isfinite(x) else float(x)


def nan_if_none(x: float | None) -> float:
    """A number read from JSON: None as NaN."""
    return math.nan if x is None else float(x)


@dataclass(frozen=True)
class Reliability:
    """Reliability bins: mean confidence against accuracy in equal-width bins of [0, 1].

    Attributes:
        edges: the ``bins + 1`` bin edges, 0 to 1 (bin ``b`` is ``[edges[b], edges[b+1])``,
            the last one closed).
        count: voxels per bin.
        confidence: mean confidence (max class probability) per bin; None when empty.
        accuracy: fraction of voxels whose argmax is the label, per bin; None when empty.
        ece: expected calibration error ``Σ_b n_b/N |acc_b − conf_b|``; NaN without voxels.
    """

    edges: list[float]
    count: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]
    ece: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: None for empty bins and for an ECE without voxels."""
        return {
            "edges": list(self.edges),
            "count": list(self.count),
            "confidence": list(self.confidence),
            "accuracy": list(self.accuracy),
            "ece": finite_or_none(self.ece),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reliability:
        return cls(
            edges=[float(e) for e in d["edges"]],
            count=[int(c) for c in d["count"]],
            confidence=[None if c is None else float(c) for c in d["confidence"]],
            accuracy=[None if a is None else float(a) for a in d["accuracy"]],
            ece=nan_if_none(d["ece"]),
        )


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> Reliability:
    """Reliability bins and expected calibration error of ``probs`` against ``labels``.

    Args:
        probs: probabilities ``(classes, n)``.
        labels: class indices ``(n,)``.
        bins: number of equal-width confidence bins over [0, 1].

    Example:
        >>> p = np.array([[0.9, 0.6, 0.3], [0.1, 0.4, 0.7]])
        >>> r = reliability(p, np.array([0, 1, 1]), bins=2)
        >>> r.count, r.accuracy, round(r.ece, 4)
        ([0, 3], [None, 0.6666666666666666], 0.0667)
    """
    probs, labels = _check_pair(probs, labels)
    if int(bins) < 1:
        raise ValueError(f"bins: expected an integer >= 1, found {bins}")
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    conf = probs.max(axis=0).astype(np.float64) if labels.size else np.empty(0)
    correct = (probs.argmax(axis=0) == labels) if labels.size else np.empty(0, bool)
    which = np.searchsorted(edges[1:-1], conf, side="right")  # 1.0 lands in the last bin
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    confidence: list[float | None] = []
    accuracy: list[float | None] = []
    ece = 0.0
    for n_b, c_b, a_b in zip(count, conf_sum, acc_sum, strict=True):
        if n_b == 0:
            confidence.append(None)
            accuracy.append(None)
            continue
        confidence.append(float(c_b / n_b))
        accuracy.append(float(a_b / n_b))
        ece += n_b * abs(a_b / n_b - c_b / n_b)
    n = int(labels.size)
    return Reliability(
        edges=[float(e) for e in edges],
        count=[int(c) for c in count],
        confidence=confidence,
        accuracy=accuracy,
        ece=float(ece / n) if n else math.nan,
    )


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood ``−ln p_label``, with ``p`` clamped at 1e-12.

    NaN without voxels.

    Example:
        >>> round(nll(np.array([[0.5, 1.0], [0.5, 0.0]]), np.array([0, 0])), 4)
        0.3466
    """
    probs, labels = _check_pair(probs, labels)
    if not labels.size:
        return math.nan
    p = np.take_along_axis(probs, labels[None, :], axis=0)[0].astype(np.float64)
    return float(-np.log(np.maximum(p, NLL_FLOOR)).mean())


def fit_temperature(
    probs: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature minimising ``nll(temper_array(probs, T), labels)``, to 4 decimals.

    Searched on ``log T`` within ``log(bounds)`` (bounded Brent). Returns 1.0 when there
    is no voxel, or when every voxel's label already has probability 1 (nothing to learn:
    the likelihood would only push ``T`` to its lower bound).

    Args:
        probs: the ensemble's mean probabilities ``(classes, n)``.
        labels: reference class indices ``(n,)``.
        bounds: the lowest and highest temperature tried.
    """
    probs, labels = _check_pair(probs, labels)
    low, high = (float(b) for b in bounds)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"bounds: expected 0 < low < high, found {bounds}")
    if not labels.size:
        return 1.0
    p_label = np.take_along_axis(probs, labels[None, :], axis=0)[0]
    if np.all(p_label >= 1.0 - np.finfo(np.float32).eps):
        return 1.0
    probs32 = probs.astype(np.float32)
    result = minimize_scalar(
        lambda s: nll(temper_array(probs32, math.exp(s)), labels),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
    )
    return round(math.exp(float(result.x)), 4)


@dataclass(frozen=True)
class CalibrationFit:
    """An arm's fitted temperature, with its calibration before and after.

    Attributes:
        temperature: the fitted ``T``.
        voxels: voxels it was fitted on.
        cases: held-out cases those voxels came from.
        before: reliability of the untempered probabilities.
        after: reliability at ``T``.
        nll_before: mean negative log-likelihood at ``T = 1``.
        nll_after: the same at ``T``.
    """

    temperature: float
    voxels: int
    cases: int
    before: Reliability
    after: Reliability
    nll_before: float
    nll_after: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN written as None)."""
        return {
            "temperature": float(self.temperature),
            "voxels": int(self.voxels),
            "cases": int(self.cases),
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "nll_before": finite_or_none(self.nll_before),
            "nll_after": finite_or_none(self.nll_after),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationFit:
        return cls(
            temperature=float(d["temperature"]),
            voxels=int(d["voxels"]),
            cases=int(d["cases"]),
            before=Reliability.from_dict(d["before"]),
            after=Reliability.from_dict(d["after"]),
            nll_before=nan_if_none(d["nll_before"]),
            nll_after=nan_if_none(d["nll_after"]),
        )


def calibrate(probs: np.ndarray, labels: np.ndarray, cases: int, bins: int = 15) -> CalibrationFit:
    """Fit the temperature and measure the calibration before and after.

    Args:
        probs: the ensemble's mean probabilities ``(classes, n)`` on the sampled voxels.
        labels: reference class indices ``(n,)``.
        cases: how many held-out cases the voxels came from (recorded only).
        bins: reliability bins.

    Example:
        >>> p = np.array([[0.99, 0.99, 0.01, 0.01], [0.01, 0.01, 0.99, 0.99]])
        >>> fit = calibrate(p, np.array([0, 1, 1, 0]), cases=1, bins=5)
        >>> fit.temperature > 1, fit.after.ece < fit.before.ece
        (True, True)
    """
    probs, labels = _check_pair(probs, labels)
    t = fit_temperature(probs, labels)
    after = temper_array(probs, t)
    return CalibrationFit(
        temperature=t,
        voxels=int(labels.size),
        cases=int(cases),
        before=reliability(probs, labels, bins),
        after=reliability(after, labels, bins),
        nll_before=nll(probs, labels),
        nll_after=nll(after, labels),
    )
