"""Holm's adjustment of a family of p-values, and p-values written for people."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values.

    With the ``m`` finite p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted
    value of ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) p_(j))``: monotone in the
    raw p and capped at 1. NaN entries stay NaN and do not count in ``m``. Matches
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` (statsmodels is
    not a dependency, hence written here).

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
        >>> holm([0.5, float("nan"), 0.4])
        [0.8, nan, 0.8]
    """
    p = np.asarray(p_values, dtype=float).reshape(-1)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"holm: expected p-values in [0, 1], found {p[finite].tolist()}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        stepped = np.maximum.accumulate(p[order] * np.arange(m, 0, -1))
        out[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in out]


def format_p_value(p: float) -> str:
    """A p-value for text and tables: ``< 0.001``, two significant digits, or ``n/a``."""
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def p_text(p: float) -> str:
    """``p = 0.03`` or ``p < 0.001``, for a sentence."""
    text = format_p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
