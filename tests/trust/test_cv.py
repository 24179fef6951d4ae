"""Fitting an arm's trust from the records its CV prediction jobs wrote (medtl.trust.cv)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.config import TrustConfig
from medtl.kernel.errors import InputError
from medtl.layout import (
    CV_CALIBRATION_SAMPLE,
    CV_CASE_SCORES,
    CV_PREDICTION_RECORD,
    checkpoint_file,
    evaluation_file,
    predictions_dir,
)
from medtl.trust.calibration import reliability
from medtl.trust.cv import CROSS_FITTED, fit_trust
from medtl.trust.decision import TrustRule, load_trust

#: Per fold: cases with (Dice, mean entropy). Entropy ranks the two failures (< 0.8) last.
CASES = {
    0: [("c0", 0.95, 0.10), ("c1", 0.60, 0.50), ("c2", 0.90, 0.15)],
    1: [("c3", 0.92, 0.12), ("c4", 0.55, 0.55), ("c5", 0.88, 0.20)],
}
#: The networks are this many times too confident: the fitted temperature should find it.
OVERCONFIDENCE = 2.0
VOXELS = 40_000  # per fold


def _overconfident(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-class ``softmax(OVERCONFIDENCE · z)`` for labels drawn from ``softmax(z)``."""
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.uint8)
    p1 = 1 / (1 + np.exp(-OVERCONFIDENCE * z))
    return np.stack([1 - p1, p1]).astype(np.float32), labels


def _write_run(results: Path, fold: int, rng: np.random.Generator) -> None:
    checkpoint = checkpoint_file(results, "finetune", 1, fold)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"model")
    out = predictions_dir(results, "finetune", 1, fold)
    out.mkdir(parents=True)
    rows = [
        {"case": c, "seconds": 0.5 + fold, "members": 8, "mean_entropy": h,
         "mean_mutual_info": 0.01, "agreement_dice": 0.9, "volume_cv": 0.1}
        for c, _, h in CASES[fold]
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(out / CV_CASE_SCORES, sep="\t", index=False)
    probs, labels = _overconfident(rng, VOXELS)
    ids = np.array([c for c, _, _ in CASES[fold]])
    case = np.zeros(VOXELS, np.int32)
    np.savez(out / CV_CALIBRATION_SAMPLE, probs=probs, labels=labels, case=case, case_ids=ids)
    record = {"parameters": 1000, "checkpoint_bytes": 5, "device": "cpu", "tta": True,
              "peak_rss_mb": 300.0 + fold, "peak_gpu_mb": None}  # fmt: skip
    (out / CV_PREDICTION_RECORD).write_text(json.dumps(record))
    metrics = evaluation_file(results, "finetune", 1, fold)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [{"arm": "finetune", "fold": fold, "case": c, "class": "tumour", "dice": d}
         for c, d, _ in CASES[fold]]
    ).to_csv(metrics, index=False)  # fmt: skip


@pytest.fixture
def results(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for fold in CASES:
        _write_run(tmp_path / "results", fold, rng)
    return tmp_path / "results"


def test_temperature_found_and_the_error_lowered_cross_fitted(results, tmp_path):
    record = fit_trust(results, "finetune", TrustConfig(), tmp_path / "trust.json")
    cal = record["calibration"]
    # 80k voxels: the NLL minimiser's spread is far below 0.1 (the helper's own test).
    assert cal["temperature"] == pytest.approx(OVERCONFIDENCE, abs=0.1)
    assert cal["after"]["ece"] < cal["before"]["ece"] / 2
    assert cal["nll_after"] < cal["nll_before"]
    assert record["calibration_method"] == CROSS_FITTED
    assert cal["voxels"] == 2 * VOXELS and cal["cases"] == 6
    assert cal["before"]["ece"] == pytest.approx(
        reliability(*_overconfident(np.random.default_rng(0), VOXELS), 15).ece, abs=0.02
    )


def test_failures_found_by_the_score_that_ranks_them(results, tmp_path):
    record = fit_trust(results, "finetune", TrustConfig(bad_dice=0.8), tmp_path / "trust.json")
    failure, rule = record["failure"], record["rule"]
    assert failure["chosen"] == "mean_entropy"  # the others are constant: random
    chosen = next(m for m in failure["measures"] if m["measure"] == "mean_entropy")
    assert chosen["aurc"] == pytest.approx(chosen["oracle_aurc"])  # a perfect ranking
    assert chosen["aurc"] < chosen["random_aurc"]
    flagged = {c["case"] for c in record["cases"] if c["flag"]}
    assert flagged == {"c1", "c4"}
    assert rule["measure"] == "mean_entropy" and rule["rule"] == "youden"
    assert 0.20 < rule["threshold"] <= 0.50
    assert record["model"]["parameters"] == 1000 and record["model"]["peak_rss_mb"] == 301.0
    assert record["model"]["seconds_per_case_median"] == pytest.approx(1.0)


def test_the_rule_written_is_the_one_predict_reads(results, tmp_path):
    out = results / "trust" / "finetune.json"
    result = CliRunner().invoke(
        app,
        ["trust", "--results", str(results), "--arm", "finetune", "--seeds", "1",
         "--settings", '{"bad_dice": 0.8}', "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "flag on mean_entropy (2 of 6 CV predictions)" in result.output
    rule = load_trust(results, "finetune")
    assert isinstance(rule, TrustRule) and rule.measure == "mean_entropy"
    assert rule.risk_and_flag({"mean_entropy": 0.5})[1] is True
    assert rule.risk_and_flag({"mean_entropy": 0.1})[1] is False


def test_a_run_without_records_names_the_rule_to_rerun(results, tmp_path):
    (predictions_dir(results, "finetune", 1, 1) / CV_CASE_SCORES).unlink()
    with pytest.raises(InputError, match="predict_fold") as err:
        fit_trust(results, "finetune", TrustConfig(), tmp_path / "trust.json")
    assert CV_CASE_SCORES in str(err.value)
    assert not (tmp_path / "trust.json").exists()


def test_a_damaged_trust_file_is_refused_by_name(tmp_path):
    path = tmp_path / "trust" / "finetune.json"
    path.parent.mkdir()
    path.write_text("{}")
    with pytest.raises(InputError, match="trust"):
        load_trust(tmp_path, "finetune")
    assert load_trust(tmp_path, "scratch") is None
