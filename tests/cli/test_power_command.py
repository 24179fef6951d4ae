"""`medtl power`: how many seeds a comparison needs, on the demo's sizes or a run's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.evaluate.metrics import METRIC_COLUMNS
from medtl.evaluate.power import Components, simulate_metrics

runner = CliRunner()


def _rows(output: str) -> dict[int, list[str]]:
    """seeds → the printed numbers of its row."""
    rows = {}
    for line in output.splitlines():
        m = re.match(r"\s*(\d+)\s+(0\.\d+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s*$", line)
        if m:
            rows[int(m[1])] = list(m.groups()[1:])
    return rows


def test_power_on_the_demo_sizes():
    result = runner.invoke(app, ["power", "--seeds", "1,3", "--studies", "400"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert set(rows) == {1, 3}
    # one seed: the patient-only test claims false differences far above 5 % (the run
    # variance is larger than the patients'); three seeds: the run-aware test stays below
    # 5 % plus three Monte Carlo standard errors of 400 studies (3 * sqrt(.05 * .95 / 400))
    assert float(rows[1][1]) > 15.0
    assert float(rows[3][1]) <= 100 * (0.05 + 3 * (0.05 * 0.95 / 400) ** 0.5)
    assert "With 1 seed the test treats the trained models as fixed" in result.output


def _run_folder(root: Path, seeds: tuple[int, ...]) -> Path:
    table = simulate_metrics(Components(run_sd=0.05), seeds=seeds, rng=1)
    results = root / "results"
    (results / "evaluation").mkdir(parents=True)
    (results / "splits").mkdir(parents=True)
    metrics = table.drop(columns="patient").reindex(columns=METRIC_COLUMNS)
    counts = ["lesions_ref", "lesions_pred", "lesion_tp", "lesion_fp", "lesion_fn"]
    metrics = metrics.assign(empty="", **dict.fromkeys(counts, 1))
    metrics.to_csv(results / "evaluation" / "metrics.csv", index=False)
    groups = dict(zip(table["case"], table["patient"], strict=True))
    folds = [{"fold": int(k)} for k in sorted(table["fold"].unique())]
    (results / "splits" / "folds.json").write_text(json.dumps({"groups": groups, "folds": folds}))
    return results


def test_power_measures_the_sizes_of_a_finished_run(tmp_path):
    results = _run_folder(tmp_path, (1, 2, 3))
    result = runner.invoke(
        app, ["power", "--results", str(results), "--seeds", "3", "--studies", "100"]
    )
    assert result.exit_code == 0, result.output
    assert f"the sizes measured in {results}" in result.output
    assert "14 patients, 3 folds" in result.output
    assert set(_rows(result.output)) == {3}


def test_power_refuses_a_run_with_one_seed(tmp_path):
    results = _run_folder(tmp_path, (1,))
    result = runner.invoke(app, ["power", "--results", str(results)])
    assert result.exit_code != 0
    # Typer's error panel wraps the message at the terminal's width: read it as one line.
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output + str(result.stderr)).split())
    assert "every arm was trained with one seed" in text
