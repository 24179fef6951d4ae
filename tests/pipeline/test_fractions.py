"""Label-fraction curves: the workflow's extra jobs, and the report's section and figure."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtl.evaluate.cases import per_case_runs
from medtl.evaluate.runs import run_aware_mean
from medtl.report.build import build_report
from medtl.report.fractions import label_fraction_points, label_fraction_statements
from tests.support.workflow import planned_rules, run_snakemake

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("config_tiny.yaml")
FRACTION_RULES = {"subset_folds", "train_fraction", "predict_fraction", "evaluate_fractions"}


def _dry_run(workdir: Path, configfile: Path) -> dict[str, int]:
    """Rule → job count of a dry run of the project's Snakefile (its job-stats table)."""
    result = run_snakemake(workdir, "--cores", "2", "-n", configfile=configfile, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return planned_rules(result)


def test_dry_run_plans_the_label_fraction_jobs(tmp_path: Path) -> None:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["label_fractions"] = [0.5]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "run"
    work.mkdir()
    rules = _dry_run(work, config)
    # tiny config: scratch and finetune with 2 seeds, frozen with 1; 2 folds
    runs, folds = 2 + 1 + 2, cfg["splits"]["folds"]
    assert rules["subset_folds"] == folds
    assert rules["train_fraction"] == runs * folds
    assert rules["predict_fraction"] == runs * folds
    assert rules["evaluate_fractions"] == 1
    assert rules["train"] == runs * folds  # the 100 % point: the normal runs, not repeated
    assert rules["report"] == 1


def test_dry_run_without_label_fractions_plans_none(tmp_path: Path) -> None:
    rules = _dry_run(tmp_path, TINY)
    assert not FRACTION_RULES & set(rules), rules


# ----------------------------------------------------------------------------- report

ARMS = ["scratch", "finetune"]
CASES = [f"case{i}" for i in range(6)]
#: Mean Dice per arm at 25 / 50 / 100 % (1, 2, 4 labelled cases per fold).
CURVE = {"scratch": [0.30, 0.50, 0.70], "finetune": [0.60, 0.72, 0.80]}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A minimal result tree: manifest, folds, metrics (no images: overlays are skipped)."""
    res = tmp_path / "results"
    (res / "ingest").mkdir(parents=True)
    pd.DataFrame(
        {
            "case_id": CASES,
            "patient_id": CASES,
            "image": [f"missing/{c}.nii.gz" for c in CASES],
            "label": [f"missing/{c}_seg.nii.gz" for c in CASES],
            "spacing": "1.00x1.00x2.00",
            "shape": "16x16x8",
        }
    ).to_csv(res / "ingest" / "manifest.tsv", sep="\t", index=False)
    folds = {
        "k": 2,
        "seed": 0,
        "groups": {c: c for c in CASES},
        "folds": [
            {"fold": 0, "train": CASES[3:], "val": CASES[5:], "test": CASES[:3]},
            {"fold": 1, "train": CASES[:3], "val": CASES[2:3], "test": CASES[3:]},
        ],
    }
    (res / "splits").mkdir()
    (res / "splits" / "folds.json").write_text(json.dumps(folds))
    fold_of = {c: f["fold"] for f in folds["folds"] for c in f["test"]}
    metrics = [
        [arm, fold_of[c], c, "tumour", CURVE[arm][2] + 0.01 * (i - 2.5), 3.0]
        for arm in ARMS
        for i, c in enumerate(CASES)
    ]
    (res / "evaluation").mkdir()
    pd.DataFrame(metrics, columns=["arm", "fold", "case", "class", "dice", "hd95"]).to_csv(
        res / "evaluation" / "metrics.csv", index=False
    )
    return res


def _write_label_fraction(res: Path) -> None:
    rows = [
        [arm, fraction, labelled, 0 if i < 3 else 1, c, "tumour", dice + 0.01 * (i - 2.5), 3.0]
        for arm in ARMS
        for fraction, labelled, dice in zip((0.25, 0.5, 1.0), (1, 2, 4), CURVE[arm], strict=True)
        for i, c in enumerate(CASES)
    ]
    cols = ["arm", "fraction", "labelled_cases", "fold", "case", "class", "dice", "hd95"]
    pd.DataFrame(rows, columns=cols).to_csv(res / "evaluation" / "label_fraction.csv", index=False)


def _build(res: Path, out: Path) -> tuple[str, dict]:
    build_report(
        res,
        out / "report.html",
        out / "figures",
        out / "summary.json",
        arms=ARMS,
        reference_arm="scratch",
        classes={1: "tumour"},
        config={"arms": {"scratch": {"init": "random"}, "finetune": {"init": "pretrained"}}},
        n_overlays=0,
    )
    return (out / "report.html").read_text(), json.loads((out / "summary.json").read_text())


def test_report_has_no_label_fraction_section_without_the_table(results: Path, tmp_path: Path):
    html, summary = _build(results, tmp_path / "out")
    assert 'id="label-fraction"' not in html
    assert "label_fraction" not in summary
    assert not (tmp_path / "out" / "figures" / "label_fraction.png").exists()


def test_report_label_fraction_section_and_figure(results: Path, tmp_path: Path):
    _write_label_fraction(results)
    html, summary = _build(results, tmp_path / "out")
    assert 'id="label-fraction"' in html and "Label-fraction curves" in html
    statement = (
        "With 2 labelled training cases per fold, finetune reached the mean Dice scratch "
        "reached with 4 (0.720 vs 0.700): 50% fewer labels."
    )
    assert statement in html
    for text in ("25 %", "50 %", "100 %", "0.600", "0.720", "0.800"):
        assert f">{text}<" in html, text
    png = tmp_path / "out" / "figures" / "label_fraction.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "label_fraction" in summary["figures"]
    points = summary["label_fraction"]["points"]
    assert len(points) == 6
    finetune_half = next(p for p in points if p["arm"] == "finetune" and p["fraction"] == 0.5)
    assert finetune_half["labelled_cases"] == 2.0 and finetune_half["n_cases"] == len(CASES)
    assert finetune_half["ci_low"] <= finetune_half["mean_dice"] <= finetune_half["ci_high"]
    assert summary["label_fraction"]["statements"] == [statement]


def test_reference_arm_left_out_of_the_fractions_keeps_its_full_point(
    results: Path, tmp_path: Path
) -> None:
    """``label_fraction_arms: [finetune]`` (the demo): the reference arm's 100 % point
    comes from its full runs in metrics.csv, so the labels saved are still stated."""
    _write_label_fraction(results)
    path = results / "evaluation" / "label_fraction.csv"
    table = pd.read_csv(path)
    table[table["arm"] == "finetune"].to_csv(path, index=False)
    _, summary = _build(results, tmp_path / "out")
    points = {(p["arm"], p["fraction"]): p for p in summary["label_fraction"]["points"]}
    assert set(points) == {("finetune", 0.25), ("finetune", 0.5), ("finetune", 1.0)} | {
        ("scratch", 1.0)
    }
    scratch = points[("scratch", 1.0)]
    assert scratch["mean_dice"] == pytest.approx(CURVE["scratch"][2])
    assert scratch["labelled_cases"] == 3.0 and scratch["n_cases"] == len(CASES)  # folds.json
    [statement] = summary["label_fraction"]["statements"]
    assert statement.startswith("With 2 labelled training cases per fold, finetune reached")
    assert "scratch reached with 3 (0.720 vs 0.700)" in statement


def test_statement_when_transfer_never_catches_up() -> None:
    rows = [
        ["scratch", 0.5, 2.0, 6, 0.6, 0.5, 0.7],
        ["scratch", 1.0, 4.0, 6, 0.8, 0.7, 0.9],
        ["finetune", 0.5, 2.0, 6, 0.5, 0.4, 0.6],
        ["finetune", 1.0, 4.0, 6, 0.9, 0.8, 1.0],
    ]
    cols = ["arm", "fraction", "labelled_cases", "n_cases", "mean_dice", "ci_low", "ci_high"]
    points = pd.DataFrame(rows, columns=cols)
    [text] = label_fraction_statements(points, ARMS, "scratch")
    assert text.startswith("finetune did not reach, with fewer labelled cases")
    assert label_fraction_statements(points, ARMS, "frozen") == []


def test_statement_says_when_the_intervals_leave_the_saving_open() -> None:
    """A saving is stated plainly only where the arm's interval clears the reference's
    mean; otherwise the sentence says it is a point estimate the data do not confirm."""
    cols = ["arm", "fraction", "labelled_cases", "n_cases", "mean_dice", "ci_low", "ci_high"]

    def statement(low: float) -> str:
        rows = [
            ["scratch", 1.0, 4.0, 6, 0.70, 0.60, 0.80],
            ["finetune", 0.5, 2.0, 6, 0.75, low, 0.85],
            ["finetune", 1.0, 4.0, 6, 0.80, 0.70, 0.90],
        ]
        [text] = label_fraction_statements(pd.DataFrame(rows, columns=cols), ARMS, "scratch")
        return text

    plain = statement(0.71)
    assert plain.endswith("(0.750 vs 0.700): 50% fewer labels.")
    open_ = statement(0.65)
    assert open_.endswith(
        "50% fewer labels, a point estimate the data do not confirm "
        "(95 % CI 0.650 to 0.850 against 0.700)."
    )


def test_points_average_classes_per_case_first() -> None:
    table = pd.DataFrame(
        {
            "arm": "scratch",
            "fraction": 0.5,
            "labelled_cases": [3.0, 3.0, 2.0, 2.0],
            "fold": [0, 0, 1, 1],
            "case": ["a", "a", "b", "b"],
            "class": ["x", "y", "x", "y"],
            "dice": [0.2, 0.4, 0.6, 1.0],
        }
    )
    [point] = label_fraction_points(table, ["scratch"]).to_dict(orient="records")
    assert point["n_cases"] == 2
    assert point["mean_dice"] == pytest.approx((0.3 + 0.8) / 2)
    assert point["labelled_cases"] == pytest.approx(2.5)


def test_points_with_seeds_count_runs_as_random() -> None:
    """Two seeds at a point: the mean over cases and seeds, the run-aware interval."""
    dice = {(1, "a"): 0.5, (1, "b"): 0.7, (1, "c"): 0.6, (2, "a"): 0.8, (2, "b"): 0.9}
    dice[(2, "c")] = 0.7
    table = pd.DataFrame(
        [
            {"arm": "scratch", "fraction": 0.5, "labelled_cases": 2.0, "fold": 0, "seed": s}
            | {"case": c, "class": "x", "dice": d}
            for (s, c), d in dice.items()
        ]
    )
    groups = {"a": "p1", "b": "p2", "c": "p3"}
    [point] = label_fraction_points(table, ["scratch"], groups).to_dict(orient="records")
    expected = run_aware_mean(per_case_runs(table, "scratch", "dice"), groups)
    assert point["seeds"] == 2 and point["n_cases"] == 3
    assert point["mean_dice"] == pytest.approx(sum(dice.values()) / 6)
    # the run-aware interval (two seeds: t with 1 df), clipped to the range of Dice
    assert expected.ci_low < 0 and expected.ci_high > 1
    assert (point["ci_low"], point["ci_high"]) == (0.0, 1.0)
    # wider than the patients-only interval of the seed-averaged cases: runs vary
    one = (
        table.groupby("case", as_index=False)["dice"]
        .mean()
        .assign(arm="scratch", fraction=0.5, labelled_cases=2.0, fold=0, **{"class": "x"})
    )
    [single] = label_fraction_points(one, ["scratch"], groups).to_dict(orient="records")
    assert single["seeds"] == 1
    assert point["ci_high"] - point["ci_low"] > single["ci_high"] - single["ci_low"]
