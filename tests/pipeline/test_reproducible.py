"""Reproducibility: the same config and seed give bit-identical results on CPU.

The micro workflow (``config_micro.yaml``: demo data, pretraining, two arms x two folds)
runs twice, in two fresh folders; the metrics table must be the same bytes, every trained
model the same weights bit for bit, and the report the same numbers. The first run is the
session fixture ``micro_run`` (``conftest.py``), which the SLURM test compares with too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.slow
def test_two_runs_give_identical_results(micro_run, run_workflow, tmp_path: Path) -> None:
    again = tmp_path / "again"
    again.mkdir()
    result = run_workflow(again, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]

    first = micro_run.results
    second = type(first)(again / "results")
    # The runs did something worth comparing: both arms, both folds, every case scored.
    metrics = pd.read_csv(first.folder / "evaluation" / "metrics.csv")
    assert set(metrics["arm"]) == {"scratch", "finetune"}
    assert set(metrics["fold"]) == {0, 1}
    assert metrics["hd95"].notna().any()
    assert len(first.state_dicts()) == 4

    first.assert_same_as(second)
