"""What ``medtl predict`` applies of an arm's trust fit: its temperature and flag rule.

The fit (:mod:`medtl.trust.cv`) writes ``results/trust/<arm>.json``; ``medtl
export-onnx`` copies the part that matters into its manifest. :class:`TrustRule` is that
part, read from either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from medtl.kernel.errors import InputError
from medtl.layout import trust_file
from medtl.trust.failure import oriented


@dataclass(frozen=True)
class TrustRule:
    """The temperature and flag rule of one arm.

    Attributes:
        temperature: divides the log of the ensemble's mean probabilities before the
            softmax (1: unchanged). The mask (the argmax) never changes.
        measure: the per-case score whose risk is written (a column of
            :class:`medtl.predict.uncertainty.CaseScores`), or None when none was chosen.
        direction: 1 when a higher score is riskier, -1 when lower (``agreement_dice``).
        threshold: a case is flagged when its risk is at least this (None: never).
        bad_dice: the Dice below which a cross-validation case counted as a failure.
        rule: how the threshold was chosen (``youden``, ``beyond_cv`` or ``all``).

    Example:
        >>> rule = TrustRule(1.5, "agreement_dice", -1, 0.2, 0.8, "youden")
        >>> rule.risk_and_flag({"agreement_dice": 0.7})
        (0.30000000000000004, True)
    """

    temperature: float = 1.0
    measure: str | None = None
    direction: int = 1
    threshold: float | None = None
    bad_dice: float | None = None
    rule: str | None = None

    def risk_and_flag(self, scores: dict[str, object]) -> tuple[float | None, bool | None]:
        """A case's risk (its score, oriented so that higher is riskier) and its flag.

        Without a chosen score the risk is None, and the flag is True when every
        cross-validation case failed (rule ``all``), else None (no rule to flag by).
        """
        if self.measure is None or self.measure not in scores:
            return None, (True if self.rule == "all" else None)
        risk = oriented(float(scores[self.measure]), self.direction)
        if self.threshold is None or math.isnan(risk):
            return risk, False
        return risk, bool(risk >= self.threshold)

    def as_dict(self) -> dict:
        """JSON-safe, as ``medtl export-onnx`` stores it."""
        return {
            "temperature": self.temperature,
            "measure": self.measure,
            "direction": self.direction,
            "threshold": self.threshold,
            "bad_dice": self.bad_dice,
            "rule": self.rule,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> TrustRule:
        """The rule from :meth:`as_dict`'s form."""
        return cls(
            temperature=float(raw.get("temperature", 1.0)),
            measure=raw.get("measure"),
            direction=int(raw.get("direction", 1)),
            threshold=None if raw.get("threshold") is None else float(raw["threshold"]),
            bad_dice=None if raw.get("bad_dice") is None else float(raw["bad_dice"]),
            rule=raw.get("rule"),
        )


def load_trust(results: Path, arm: str) -> TrustRule | None:
    """The arm's rule from a finished run (``results/trust/<arm>.json``), or None.

    Raises:
        InputError: the file exists but is not a trust fit.
    """
    path = trust_file(results, arm)
    if not path.is_file():
        return None
    try:
        return TrustRule.from_dict(json.loads(path.read_text())["rule"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            path,
            f"not a trust fit of medtl ({exc})",
            "delete it and rerun the workflow's 'trust' rule for this arm",
        ) from exc
