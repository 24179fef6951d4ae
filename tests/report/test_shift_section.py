"""The report's domain-shift section (medtl.report.shift) and its place in the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtl.evaluate.multiplicity import holm
from medtl.report.shift import (
    GainVersusShift,
    gain_statement,
    gain_versus_shift,
    shift_section,
)
from tests.report.test_build import CASES, _build, results  # noqa: F401

CONFIG = {
    "arms": {
        "scratch": {"init": "random"},
        "finetune": {"init": "pretrained"},
        "frozen": {"init": "pretrained"},
        "ssl": {"init": "ssl"},
    }
}
RECORD = {
    "source": "supervised pretraining source",
    "checkpoint": "checkpoint.pt",
    "arms": ["finetune", "frozen"],  # the workflow's choice: the arms of these weights
    "encoder": {
        "mmd2": 0.25,
        "p_value": 0.001,
        "permutations": 999,
        "n_source": 12,
        "n_target": 8,
        "differs": True,
        "flagged_cases": 2,
        "features": 64,
    },
    "intensity": {"wasserstein": 0.12, "outside_fraction": 0.04},
    "acquisition": {
        "spacing_ratio_to_source": [1.0, 1.0, 2.0],
        "target": {"scanner": {"SIEMENS Skyra": 8}},
        "source": {"scanner": {}},
    },
    "labels": [],
    "warnings": ["the encoder tells the target from its source: prefer strategy: finetune"],
    "notes": [],
}


def _dice(values, cases) -> pd.Series:
    return pd.Series(values, index=cases, dtype=float)


def test_gain_is_ranked_against_the_cases_shift():
    cases = [f"c{i}" for i in range(8)]
    shift = pd.DataFrame({"case_id": cases, "feature_distance": np.arange(8.0)})
    gain = np.array([0.3, 0.25, 0.3, 0.1, 0.12, 0.0, -0.05, 0.02])
    dice = {"scratch": _dice(0.5 + 0 * gain, cases), "ft": _dice(0.5 + gain, cases)}
    g = gain_versus_shift(dice, "ft", "scratch", shift)
    expected = stats.spearmanr(np.arange(8.0), gain)
    assert g.n == 8
    assert g.rho == pytest.approx(expected.statistic, abs=1e-12)
    assert g.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert sorted(g.cases)[0] == ("c0", 0.0, pytest.approx(0.3))


def test_too_few_or_constant_cases_give_no_correlation():
    cases = ["a", "b", "c", "d"]
    shift = pd.DataFrame({"case_id": cases, "feature_distance": [1.0, 2.0, 3.0, 4.0]})
    dice = {"s": _dice([0.5] * 4, cases), "ft": _dice([0.6, 0.7, 0.8, 0.9], cases)}
    few = gain_versus_shift(dice, "ft", "s", shift)
    assert few.rho is None and "at least 5" in gain_statement(few)
    more = [f"c{i}" for i in range(6)]
    flat = pd.DataFrame({"case_id": more, "feature_distance": [2.0] * 6})
    dice = {"s": _dice([0.5] * 6, more), "ft": _dice(np.linspace(0.5, 0.9, 6), more)}
    assert gain_versus_shift(dice, "ft", "s", flat).rho is None


def test_the_sentence_follows_the_holm_adjusted_p():
    base = GainVersusShift("ft", "scratch", 20, -0.6, 0.004, [], p_holm=0.008, seeds=3)
    assert "falls as the case's encoder-feature distance" in gain_statement(base)
    assert "Dice averaged over 3 seeds" in gain_statement(base)
    raw_only = GainVersusShift("ft", "scratch", 20, -0.45, 0.04, [], p_holm=0.08, seeds=1)
    text = gain_statement(raw_only)
    assert "does not measurably track" in text and "one training seed" in text


def test_section_tests_the_arms_of_the_measured_encoder_with_holm():
    cases = [f"c{i}" for i in range(10)]
    rng = np.random.default_rng(3)
    shift = pd.DataFrame({"case_id": cases, "feature_distance": rng.normal(size=10)})
    dice = {arm: _dice(rng.uniform(0.4, 0.9, 10), cases) for arm in CONFIG["arms"]}
    arms = list(CONFIG["arms"])
    context, tested = shift_section(RECORD, shift, dice, arms, "scratch", {"ssl": 1})
    assert [g.arm for g in tested] == ["finetune", "frozen"]  # not ssl: another encoder
    assert [g.p_holm for g in tested] == pytest.approx(holm([g.p_value for g in tested]))
    assert context["per_case_distance"] and len(context["gain_statements"]) == 2
    assert "MMD² 0.2500" in " ".join(context["statements"])
    assert shift_section(None, shift, dice, arms, "scratch") == (None, [])
    # the arms come from the record, not from the report's reading of the config
    _, only_frozen = shift_section({**RECORD, "arms": ["frozen"]}, shift, dice, arms, "scratch")
    assert [g.arm for g in only_frozen] == ["frozen"]


def test_report_has_the_section_and_summary_its_numbers(results, tmp_path):  # noqa: F811
    folder = results / "shift"
    folder.mkdir()
    (folder / "shift.json").write_text(json.dumps(RECORD))
    distance = np.linspace(0.0, 3.0, len(CASES))
    pd.DataFrame({"case_id": CASES, "feature_distance": distance}).to_csv(
        folder / "per_case.tsv", sep="\t", index=False
    )
    out = tmp_path / "out"
    _build(results, out, config={**CONFIG, "seed": 1}, n_overlays=0)
    html = (out / "report.html").read_text()
    section = html[html.index('<section id="shift">') :]
    section = section[: section.index("</section>")]
    assert "Domain shift" in section and "prefer strategy: finetune" in section
    assert "SIEMENS Skyra (8) vs –" in section
    assert "Does the gain track the shift?" in section
    assert (out / "figures" / "shift_gain.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())["shift"]
    assert summary["mmd2"] == 0.25 and summary["differs"] is True
    (gain,) = summary["gain_versus_shift"]
    assert gain["arm"] == "finetune" and gain["n"] == len(CASES)


def test_report_without_a_shift_record_has_no_section(results, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    _build(results, out, n_overlays=0)
    assert 'id="shift"' not in (out / "report.html").read_text()
    assert json.loads((out / "summary.json").read_text())["shift"] is None
