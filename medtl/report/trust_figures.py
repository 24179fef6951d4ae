"""Figures of the report's trust section: calibration and failure detection per arm.

Drawn like the other figures (:mod:`medtl.report.figures`): Matplotlib's object API on
the Agg canvas, one panel per arm (at most four side by side), the arms' fixed colours.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from medtl.report.figures import _style, arm_colours, new_figure
from medtl.trust.calibration import CalibrationFit, Reliability
from medtl.trust.failure import FailureAssessment

#: Panels per row at most.
PER_ROW = 4

_BEFORE_COLOUR = "#8c8c8c"
_ORACLE_COLOUR = "#222222"
_RANDOM_COLOUR = "#9e9e9e"


def _panels(n: int, width: float = 3.4, height: float = 3.3) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels (at least one), ``PER_ROW`` to a row at most."""
    n = max(1, n)
    cols = min(PER_ROW, n)
    rows = math.ceil(n / cols)
    fig = new_figure(width * cols, height * rows)
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in grid[n:]:
        fig.delaxes(ax)
    return fig, list(grid[:n])


def _say(ax: Axes, text: str, title: str | None = None) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#888888", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def _ece(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "–"


def _bins(r: Reliability) -> tuple[np.ndarray, np.ndarray]:
    """Mean confidence and accuracy of the bins holding at least one voxel."""
    shown = [
        (c, a)
        for n, c, a in zip(r.count, r.confidence, r.accuracy, strict=True)
        if n > 0 and c is not None and a is not None
    ]
    if not shown:
        return np.empty(0), np.empty(0)
    conf, acc = zip(*shown, strict=True)
    return np.asarray(conf), np.asarray(acc)


def reliability_diagram(fits: dict[str, CalibrationFit]) -> Figure:
    """Accuracy against confidence before and after temperature scaling, one panel per arm.

    Args:
        fits: per arm (in display order), its fitted calibration.

    Each panel draws the diagonal (perfect calibration, dashed) and the bins holding at
    least one voxel before (grey) and after (the arm's colour) scaling; the legend gives
    both expected calibration errors and the temperature.
    """
    arms = list(fits)
    colours = arm_colours(arms)
    # Square panels: taller than wide, so the title keeps its room above the square.
    fig, axes = _panels(len(arms), height=3.9)
    if not arms:
        _say(axes[0], "no calibration fitted")
        return fig
    for ax, arm in zip(axes, arms, strict=True):
        fit = fits[arm]
        ax.plot([0, 1], [0, 1], ls="--", lw=0.9, color="#444444", label="perfect")
        for r, colour, label in (
            (fit.before, _BEFORE_COLOUR, f"before: ECE {_ece(fit.before.ece)}"),
            (
                fit.after,
                colours[arm],
                f"after (T = {fit.temperature:g}): ECE {_ece(fit.after.ece)}",
            ),
        ):
            conf, acc = _bins(r)
            ax.plot(conf, acc, marker="o", ms=4, lw=1.4, color=colour, label=label)
        if not fit.voxels:
            ax.text(0.5, 0.75, "no voxel", ha="center", color="#888888", transform=ax.transAxes)
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.01)
        ax.set_box_aspect(1)
        ax.set_xlabel("confidence (max class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(arm, fontsize=10)
        ax.text(
            0.98,
            0.03,
            f"{fit.voxels:,} voxels of {fit.cases} cases",
            ha="right",
            fontsize=7,
            color="#555555",
            transform=ax.transAxes,
        )
        ax.legend(fontsize=7, frameon=False, loc="upper left")
        _style(ax)
    return fig


def risk_coverage_figure(assessments: dict[str, FailureAssessment]) -> Figure:
    """Risk–coverage curves of each arm's chosen uncertainty score, one panel per arm.

    Args:
        assessments: per arm (in display order), its failure assessment.

    Each panel draws the mean ``1 − Dice`` of the retained cases against the fraction
    retained (lowest risk first) for the chosen score, the oracle and a random ranking,
    and a vertical line at the coverage the threshold leaves (``1 − flagged / n``).
    Arms without a chosen score get a panel saying so.
    """
    arms = list(assessments)
    colours = arm_colours(arms)
    fig, axes = _panels(len(arms))
    if not arms:
        _say(axes[0], "no failure assessment")
        return fig
    for ax, arm in zip(axes, arms, strict=True):
        a = assessments[arm]
        result = a.result()
        coverage = np.asarray(a.curves.get("coverage", []), dtype=float)
        if a.chosen is None or result is None or not coverage.size:
            _say(ax, "no score", title=f"{arm}: no score")
            continue
        ax.plot(
            coverage,
            a.curves["chosen"],
            color=colours[arm],
            lw=1.8,
            marker="o",
            ms=3,
            label=a.chosen,
        )
        ax.plot(coverage, a.curves["oracle"], color=_ORACLE_COLOUR, lw=1.1, ls="--", label="oracle")
        ax.plot(coverage, a.curves["random"], color=_RANDOM_COLOUR, lw=1.1, ls=":", label="random")
        if a.threshold is not None:
            kept = 1.0 - len(a.flagged) / coverage.size
            ax.axvline(
                kept,
                color="#c62828",
                lw=1.0,
                ls="-.",
                label=f"threshold: {len(a.flagged)} of {coverage.size} flagged",
            )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("coverage (fraction of cases retained)")
        ax.set_ylabel("mean (1 − Dice) of retained cases")
        ax.set_title(
            f"{arm}: {a.chosen}\n(AURC {result.aurc:.3f} vs oracle "
            f"{result.oracle_aurc:.3f}, random {result.random_aurc:.3f})",
            fontsize=9,
        )
        ax.legend(fontsize=7, frameon=False, loc="best")
        _style(ax)
    return fig
