"""How well a per-case uncertainty score predicts a bad mask, and where to flag.

Each held-out cross-validation case has uncertainty scores (one column each, see
:data:`MEASURES`) and a Dice against its reference (the mean over the foreground
classes); its loss is ``1 − Dice``. A score is judged by its risk–coverage curve: keep
the cases of lowest risk first, and after each one the mean loss of the cases kept.
The area under it (AURC, lower is better) lies between the oracle's (risk = loss) and,
in expectation, a random ranking's (the mean loss). :func:`assess` picks the measure of
lowest AURC and the threshold beyond which a new case is flagged (Youden's J on the
cross-validation cases).

Everything here is pure: arrays and tables in, frozen records out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from medtl.trust.calibration import finite_or_none, nan_if_none

#: The per-case uncertainty measures, with their direction: +1 when a higher value is
#: riskier, −1 when a lower value is (``agreement_dice`` is in [0, 1]).
MEASURES: dict[str, int] = {
    "mean_entropy": 1,
    "mean_mutual_info": 1,
    "agreement_dice": -1,
    "volume_cv": 1,
}

#: The rules :func:`choose_threshold` may use.
THRESHOLD_RULES = ("youden", "beyond_cv", "all")


def risk_of(measure: str, values: np.ndarray) -> np.ndarray:
    """A measure's values as a risk (higher = riskier): as is, or ``1 − values``.

    Example:
        >>> risk_of("agreement_dice", np.array([0.9, 0.25])).tolist()
        [0.09999999999999998, 0.75]
    """
    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r}: unknown. Allowed: {', '.join(MEASURES)}")
    return oriented(np.asarray(values, dtype=np.float64), MEASURES[measure])


def oriented(values, direction: int):
    """Values (an array or a number) of a measure of ``direction`` as a risk.

    As they are when a higher value is riskier (``direction`` 1), ``1 − values`` when a
    lower one is (−1, the agreement in [0, 1]).

    Example:
        >>> oriented(0.25, -1), oriented(0.25, 1)
        (0.75, 0.25)
    """
    return values if direction > 0 else 1.0 - values


def _pair(risk: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    risk = np.asarray(risk, dtype=np.float64).ravel()
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if risk.shape != loss.shape:
        raise ValueError(f"risk and loss: expected one length, found {risk.size} and {loss.size}")
    if np.isnan(risk).any() or np.isnan(loss).any():
        raise ValueError("risk and loss: found NaN; drop the cases without a score or a Dice")
    return risk, loss


def risk_coverage(risk: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The risk–coverage curve: cases of lowest risk retained first.

    Args:
        risk: per case, higher = riskier.
        loss: per case, ``1 − Dice``.

    Returns:
        ``(coverage, mean_loss)``: for ``k = 1..n``, ``k/n`` and the mean loss of the ``k``
        cases of lowest risk. Cases of equal risk are in random order *in expectation*:
        each contributes its tie group's mean loss (the exact expected value over all the
        orders of the group).

    Example:
        >>> cov, r = risk_coverage(np.array([0.1, 0.5, 0.5]), np.array([0.0, 0.2, 0.4]))
        >>> cov.round(3).tolist(), r.round(3).tolist()
        ([0.333, 0.667, 1.0], [0.0, 0.15, 0.2])
    """
    risk, loss = _pair(risk, loss)
    n = risk.size
    if not n:
        return np.empty(0), np.empty(0)
    order = np.argsort(risk, kind="stable")
    r, l_sorted = risk[order], loss[order]
    group = np.concatenate([[0], np.cumsum(r[1:] != r[:-1])])
    sums = np.bincount(group, weights=l_sorted)
    sizes = np.bincount(group)
    # The sum of the first k losses: the whole groups before k's group, then j times
    # the mean of its own group (j = k's position within its group).
    before = np.concatenate([[0.0], np.cumsum(sums)[:-1]])
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    k = np.arange(1, n + 1)
    j = k - start[group]
    cumulative = before[group] + j * (sums[group] / sizes[group])
    return k / n, cumulative / k


def aurc(risk: np.ndarray, loss: np.ndarray) -> float:
    """Area under the risk–coverage curve: the mean of its ``n`` mean-loss values.

    Lower is better: ``oracle_aurc(loss) <= aurc(risk, loss)`` for every risk, and a
    random ranking scores :func:`random_aurc` in expectation (a given score may land
    either side of it; a reversed score is the worst). NaN without cases.

    Example:
        >>> loss = np.array([0.0, 0.5, 1.0])
        >>> aurc(loss, loss), aurc(-loss, loss), random_aurc(loss)
        (0.25, 0.75, 0.5)
    """
    _, curve = risk_coverage(risk, loss)
    return float(curve.mean()) if curve.size else math.nan


def oracle_aurc(loss: np.ndarray) -> float:
    """The lowest AURC possible on these cases: the loss itself as the risk."""
    return aurc(loss, loss)


def random_aurc(loss: np.ndarray) -> float:
    """The expected AURC of a random ranking: the mean loss (NaN without cases)."""
    loss = np.asarray(loss, dtype=np.float64)
    return float(loss.mean()) if loss.size else math.nan


def spearman(risk: np.ndarray, dice: np.ndarray) -> tuple[float, float]:
    """Spearman's rank correlation of a risk with Dice, and its p-value.

    A good risk has ``rho < 0`` (riskier cases score a lower Dice). ``(nan, nan)`` with
    fewer than 3 cases or when either is constant.
    """
    risk, dice = _pair(risk, dice)
    if risk.size < 3 or np.all(risk == risk[0]) or np.all(dice == dice[0]):
        return math.nan, math.nan
    result = spearmanr(risk, dice)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class Threshold:
    """Where a case is flagged: ``risk >= value``.

    Attributes:
        value: the threshold on the risk.
        rule: ``youden`` (maximises sensitivity + specificity − 1 on the cross-validation
            cases), ``beyond_cv`` (no CV case failed: flag only cases riskier than all of
            them) or ``all`` (every CV case failed: flag from the lowest risk on).
        sensitivity: the fraction of failed CV cases flagged; None without failed cases.
        specificity: the fraction of good CV cases not flagged; None without good cases.
    """

    value: float
    rule: str
    sensitivity: float | None
    specificity: float | None

    def flags(self, risk: np.ndarray) -> np.ndarray:
        """Which of ``risk`` are flagged."""
        return np.asarray(risk, dtype=np.float64) >= self.value

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: an infinite value (no case at all) is written as None."""
        return {
            "value": finite_or_none(self.value),
            "rule": self.rule,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        return cls(
            value=math.inf if d["value"] is None else float(d["value"]),
            rule=str(d["rule"]),
            sensitivity=None if d["sensitivity"] is None else float(d["sensitivity"]),
            specificity=None if d["specificity"] is None else float(d["specificity"]),
        )


def choose_threshold(risk: np.ndarray, failed: np.ndarray) -> Threshold:
    """The threshold on the risk at which a case is flagged, from the CV cases.

    With failed and good cases: the candidate (a distinct risk value) that maximises
    Youden's J = sensitivity + specificity − 1, the higher one on a tie (fewer flags).
    Without a failed case: just above the highest risk (``beyond_cv``). With only
    failed cases: the lowest risk (``all``). Without cases: infinity (``beyond_cv``).

    Args:
        risk: per CV case, higher = riskier.
        failed: per CV case, whether its mask is bad (Dice below the bar).

    Example:
        >>> t = choose_threshold(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1], bool))
        >>> t.value, t.rule, t.sensitivity, t.specificity
        (0.3, 'youden', 1.0, 1.0)
    """
    risk = np.asarray(risk, dtype=np.float64).ravel()
    failed = np.asarray(failed, dtype=bool).ravel()
    if risk.shape != failed.shape:
        raise ValueError(f"risk and failed: expected one length, found {risk.size}, {failed.size}")
    if np.isnan(risk).any():
        raise ValueError("risk: found NaN; drop the cases without a score")
    n_failed = int(failed.sum())
    n_good = int(risk.size - n_failed)
    if not risk.size:
        return Threshold(math.inf, "beyond_cv", None, None)
    if n_failed == 0:
        return Threshold(float(np.nextafter(risk.max(), np.inf)), "beyond_cv", None, 1.0)
    if n_good == 0:
        return Threshold(float(risk.min()), "all", 1.0, None)
    best_j, best_value, best_tp, best_tn = -1, math.inf, 0, 0
    for value in np.unique(risk):  # ascending: ">=" below keeps the higher one on a tie
        flag = risk >= value
        tp = int((flag & failed).sum())
        tn = int((~flag & ~failed).sum())
        j = tp * n_good + tn * n_failed  # (J + 1) · n_failed · n_good: integers, exact ties
        if j >= best_j:
            best_j, best_value, best_tp, best_tn = j, float(value), tp, tn
    return Threshold(best_value, "youden", best_tp / n_failed, best_tn / n_good)


@dataclass(frozen=True)
class MeasureResult:
    """How well one measure ranks the CV cases by loss.

    Attributes:
        measure: the score's name (a key of :data:`MEASURES`).
        n: cases with both the score and a Dice.
        spearman_rho: rank correlation of the risk with Dice (negative is good).
        spearman_p: its p-value.
        aurc: area under the risk–coverage curve (lower is better).
        oracle_aurc: the lowest possible on these cases.
        random_aurc: a random ranking's, in expectation (the mean loss).
    """

    measure: str
    n: int
    spearman_rho: float
    spearman_p: float
    aurc: float
    oracle_aurc: float
    random_aurc: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN written as None)."""
        return {
            "measure": self.measure,
            "n": int(self.n),
            **{
                k: finite_or_none(getattr(self, k))
                for k in ("spearman_rho", "spearman_p", "aurc", "oracle_aurc", "random_aurc")
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureResult:
        return cls(
            measure=str(d["measure"]),
            n=int(d["n"]),
            **{
                k: nan_if_none(d[k])
                for k in ("spearman_rho", "spearman_p", "aurc", "oracle_aurc", "random_aurc")
            },
        )


@dataclass(frozen=True)
class FailureAssessment:
    """An arm's failure detection, fitted on its cross-validation cases.

    Attributes:
        bad_dice: a case with a Dice below this is a failure.
        measures: one result per measure present, in :data:`MEASURES` order.
        chosen: the measure of lowest AURC; None without measures or cases.
        threshold: flag a case when the chosen measure's risk is ``>= threshold.value``.
        flagged: the CV cases so flagged, riskiest first.
        curves: risk–coverage points for plotting: ``coverage`` and the mean loss of the
            ``chosen`` measure, the ``oracle`` and ``random`` (the constant mean loss);
            empty without a chosen measure.
    """

    bad_dice: float
    measures: list[MeasureResult]
    chosen: str | None
    threshold: Threshold | None
    flagged: list[str]
    curves: dict[str, list[float]]

    def result(self, measure: str | None = None) -> MeasureResult | None:
        """The result of ``measure`` (default: the chosen one); None when absent."""
        name = self.chosen if measure is None else measure
        return next((m for m in self.measures if m.measure == name), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN written as None)."""
        return {
            "bad_dice": float(self.bad_dice),
            "measures": [m.as_dict() for m in self.measures],
            "chosen": self.chosen,
            "threshold": None if self.threshold is None else self.threshold.as_dict(),
            "flagged": list(self.flagged),
            "curves": {k: [finite_or_none(x) for x in v] for k, v in self.curves.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FailureAssessment:
        return cls(
            bad_dice=float(d["bad_dice"]),
            measures=[MeasureResult.from_dict(m) for m in d["measures"]],
            chosen=d["chosen"],
            threshold=None if d["threshold"] is None else Threshold.from_dict(d["threshold"]),
            flagged=[str(c) for c in d["flagged"]],
            curves={k: [nan_if_none(x) for x in v] for k, v in d["curves"].items()},
        )


def assess(scores: pd.DataFrame, dice: pd.Series, bad_dice: float) -> FailureAssessment:
    """Judge each uncertainty measure on the CV cases, pick one, and set its threshold.

    Args:
        scores: one row per held-out case (indexed by case key), a column per measure
            (any subset of :data:`MEASURES`; other columns and all-NaN ones are skipped).
        dice: per case, the Dice (mean over the foreground classes), on the same index;
            the two are aligned on the index, and a measure uses the cases that have both.
        bad_dice: a case with a Dice below this is a failure.

    Returns:
        the assessment; the chosen measure has the lowest AURC (ties: :data:`MEASURES`
        order) among those that can rank at all: not constant over the cases (one member
        makes mutual information, agreement and volume CV constant) and better than a
        random ranking (AURC below the mean loss). When none can: chosen None, and every
        case flagged if every case failed (rule ``all``), else none (threshold None).
        With no measure or no case: chosen None, threshold None, flagged [].

    Example:
        >>> s = pd.DataFrame({"mean_entropy": [0.1, 0.2, 0.9]}, index=["a", "b", "c"])
        >>> a = assess(s, pd.Series([0.9, 0.8, 0.3], index=["a", "b", "c"]), bad_dice=0.5)
        >>> a.chosen, a.threshold.rule, a.flagged
        ('mean_entropy', 'youden', ['c'])
    """
    dice = pd.to_numeric(pd.Series(dice), errors="coerce")
    results: list[MeasureResult] = []
    data: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    for measure in MEASURES:
        if measure not in scores.columns:
            continue
        both = pd.concat(
            {"score": pd.to_numeric(scores[measure], errors="coerce"), "dice": dice},
            axis=1,
            join="inner",
        ).dropna()
        if both.empty:
            continue
        risk = risk_of(measure, both["score"].to_numpy())
        d = both["dice"].to_numpy(dtype=np.float64)
        loss = 1.0 - d
        rho, p = spearman(risk, d)
        results.append(
            MeasureResult(
                measure=measure,
                n=len(both),
                spearman_rho=rho,
                spearman_p=p,
                aurc=aurc(risk, loss),
                oracle_aurc=oracle_aurc(loss),
                random_aurc=random_aurc(loss),
            )
        )
        data[measure] = (risk, d, [str(k) for k in both.index])
    if not results:
        return FailureAssessment(float(bad_dice), [], None, None, [], {})
    eligible = [m for m in results if _informative(data[m.measure][0], m)]
    if not eligible:
        return _no_score(float(bad_dice), results, data)
    chosen = min(eligible, key=lambda m: m.aurc).measure  # min keeps the first on a tie
    risk, d, keys = data[chosen]
    loss = 1.0 - d
    threshold = choose_threshold(risk, d < bad_dice)
    flag = threshold.flags(risk)
    order = np.argsort(-risk, kind="stable")
    flagged = [keys[i] for i in order if flag[i]]
    coverage, chosen_curve = risk_coverage(risk, loss)
    _, oracle_curve = risk_coverage(loss, loss)
    return FailureAssessment(
        bad_dice=float(bad_dice),
        measures=results,
        chosen=chosen,
        threshold=threshold,
        flagged=flagged,
        curves={
            "coverage": coverage.tolist(),
            "chosen": chosen_curve.tolist(),
            "oracle": oracle_curve.tolist(),
            "random": [random_aurc(loss)] * len(loss),
        },
    )


def _informative(risk: np.ndarray, result: MeasureResult) -> bool:
    """Whether a measure can rank the cases: it varies, and beats a random ranking."""
    return bool(np.ptp(risk) > 0) and result.aurc < result.random_aurc


def _no_score(
    bad_dice: float,
    results: list[MeasureResult],
    data: dict[str, tuple[np.ndarray, np.ndarray, list[str]]],
) -> FailureAssessment:
    """No measure ranks the cases: flag all of them if all failed, else none."""
    _, d, keys = data[results[0].measure]
    loss = 1.0 - d
    coverage, oracle_curve = risk_coverage(loss, loss)
    curves = {
        "coverage": coverage.tolist(),
        "oracle": oracle_curve.tolist(),
        "random": [random_aurc(loss)] * len(loss),
    }
    if bool((d < bad_dice).all()):
        threshold = Threshold(-math.inf, "all", 1.0, None)
        return FailureAssessment(bad_dice, results, None, threshold, list(keys), curves)
    return FailureAssessment(bad_dice, results, None, None, [], curves)
