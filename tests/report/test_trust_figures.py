"""The trust section's figures: one panel per arm, robust to empty bins and missing scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from medtl.report.figures import to_png
from medtl.report.trust_figures import reliability_diagram, risk_coverage_figure
from medtl.trust.calibration import calibrate
from medtl.trust.failure import assess

PNG = b"\x89PNG\r\n\x1a\n"


def _fit(seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(2, 400))
    p = np.exp(z) / np.exp(z).sum(0)
    labels = (rng.random(400) < p[1]).astype(int)
    sharp = np.exp(2 * z) / np.exp(2 * z).sum(0)
    return calibrate(sharp, labels, cases=3, bins=15)


def _assessment(seed: int):
    rng = np.random.default_rng(seed)
    cases = [f"c{i}" for i in range(12)]
    dice = pd.Series(rng.uniform(0.2, 1.0, 12), index=cases)
    scores = pd.DataFrame(
        {
            "mean_entropy": (1 - dice) + rng.normal(0, 0.1, 12),
            "agreement_dice": rng.uniform(0, 1, 12),
        },
        index=cases,
    )
    return assess(scores, dice, bad_dice=0.5)


@pytest.mark.parametrize("arms", [["finetune"], ["finetune", "scratch", "frozen"]])
def test_one_reliability_panel_per_arm(arms):
    fig = reliability_diagram({arm: _fit(i) for i, arm in enumerate(arms)})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(arms)
    assert [ax.get_title() for ax in fig.axes] == arms
    assert to_png(fig).startswith(PNG)


def test_a_reliability_panel_with_empty_bins_or_no_voxel():
    empty = calibrate(np.zeros((2, 0)), np.zeros(0, int), cases=0)
    sparse = calibrate(np.array([[0.9, 0.2], [0.1, 0.8]]), np.array([0, 1]), cases=1)
    fig = reliability_diagram({"a": empty, "b": sparse})
    assert len(fig.axes) == 2
    assert to_png(fig).startswith(PNG)


def test_five_arms_wrap_onto_two_rows():
    fig = reliability_diagram({f"arm{i}": _fit(i) for i in range(5)})
    assert len(fig.axes) == 5
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 2


@pytest.mark.parametrize("arms", [["finetune"], ["finetune", "scratch", "frozen"]])
def test_one_risk_coverage_panel_per_arm(arms):
    assessments = {arm: _assessment(i) for i, arm in enumerate(arms)}
    fig = risk_coverage_figure(assessments)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(arms)
    for ax, arm in zip(fig.axes, arms, strict=True):
        a = assessments[arm]
        assert ax.get_title().startswith(f"{arm}: {a.chosen}\n(AURC ")
        assert "oracle" in ax.get_title() and "random" in ax.get_title()
    assert to_png(fig).startswith(PNG)


def test_an_arm_without_a_score_says_so():
    none = assess(pd.DataFrame(index=["a"]), pd.Series({"a": 0.5}), 0.5)
    fig = risk_coverage_figure({"scored": _assessment(0), "unscored": none})
    assert len(fig.axes) == 2
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert "no score" in texts
    assert to_png(fig).startswith(PNG)


def test_no_arm_still_draws_a_figure():
    assert len(reliability_diagram({}).axes) == 1
    assert len(risk_coverage_figure({}).axes) == 1


@pytest.mark.parametrize("n_arms", [1, 4, 5])
def test_every_title_lies_inside_the_figure(n_arms):
    """Square panels once pushed their titles above the figure's top edge (clipped)."""
    arms = [f"arm{i}" for i in range(n_arms)]
    for fig in (
        reliability_diagram({arm: _fit(i) for i, arm in enumerate(arms)}),
        risk_coverage_figure({arm: _assessment(i) for i, arm in enumerate(arms)}),
    ):
        fig.canvas.draw()
        for ax in fig.axes:
            box = ax.title.get_window_extent()
            assert box.y0 >= 0 and box.y1 <= fig.bbox.height, ax.get_title()
