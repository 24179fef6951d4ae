"""The report's trust and model-size tables and sentences (medtl.report.trust)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from medtl.config import TrustConfig
from medtl.report.trust import (
    calibration_statement,
    calibration_table,
    failure_statement,
    failure_table,
    flagged_table,
    model_table,
    trust_records,
)
from medtl.trust.cv import fit_trust
from tests.trust.test_cv import CASES, _write_run


@pytest.fixture
def record(tmp_path) -> dict:
    rng = np.random.default_rng(0)
    for fold in CASES:
        _write_run(tmp_path / "results", fold, rng)
    return fit_trust(tmp_path / "results", "finetune", TrustConfig(), tmp_path / "t.json")


def test_tables_name_every_score_and_star_the_chosen(record):
    failure = failure_table({"finetune": record})
    assert len(failure["rows"]) == 4
    starred = [row for row in failure["rows"] if "★" in row[1]]
    assert len(starred) == 1 and starred[0][1].startswith("mean entropy")
    cal = calibration_table({"finetune": record})
    assert cal["rows"][0][2] == "80,000 (6)"
    flagged = flagged_table({"finetune": record})
    assert [row[1] for row in flagged["rows"]] == ["c4", "c1"]  # riskiest first


def test_sentences_give_aurc_beside_oracle_and_random(record):
    text = failure_statement("finetune", record)
    m = next(x for x in record["failure"]["measures"] if x["measure"] == "mean_entropy")
    assert f"AURC {m['aurc']:.4f} against {m['oracle_aurc']:.4f}" in text
    assert f"{m['random_aurc']:.4f} for a random ranking (better than" in text
    assert "2 have Dice below 0.8" in text and "it flags 2, 2 of them" in text
    assert "lowered the expected calibration error" in calibration_statement("finetune", record)


def test_a_calibration_that_did_not_help_says_so_and_why(record):
    worse = copy.deepcopy(record)
    worse["calibration"]["after"]["ece"] = worse["calibration"]["before"]["ece"] + 0.01
    worse["calibration"]["temperature"] = 1.02
    text = calibration_statement("finetune", worse)
    assert "did not lower" in text and "already about as calibrated" in text
    assert trust_records({"finetune": worse})["finetune"]["calibration_lowered_ece"] is False


def test_model_table_gives_size_time_and_memory(record):
    summaries = [{"arm": "finetune", "trainable_parameters": {"start": 10, "max": 700}}]
    row = model_table({"finetune": record}, summaries)["rows"][0]
    assert row[:5] == ["finetune", "1,000", "700", "0.00", "2"]
    assert row[5] == "1.000" and row[6] == "301 (process RSS)"


def test_no_score_that_ranks_says_what_is_flagged(record):
    none = copy.deepcopy(record)
    none["failure"]["chosen"] = None
    none["rule"]["rule"] = "all"
    text = failure_statement("finetune", none)
    assert "no per-case score ranked them better than a random ranking" in text
    assert text.endswith("every case is flagged, as every held-out case was a failure.")
    none["rule"]["rule"] = None
    assert failure_statement("finetune", none).endswith("nothing is flagged.")
