"""build_report on a tiny synthetic result tree."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medtl.evaluate.bootstrap import bootstrap_ci
from medtl.evaluate.cases import METHOD_PATIENTS, METHOD_RUNS, per_case
from medtl.evaluate.comparisons import paired_runs
from medtl.evaluate.metrics import METRIC_COLUMNS
from medtl.evaluate.runs import run_aware_mean
from medtl.layout import predictions_dir, run_dir
from medtl.provenance import weights_digest
from medtl.report.build import build_report
from medtl.report.inputs import ReportError

ARMS = ["scratch", "finetune"]
CLASSES = {1: "tumour"}
CASES = [f"case{i:02d}" for i in range(8)]
SHAPE = (16, 16, 8)
AFFINE = np.diag([-1.5, -1.5, 3.0, 1.0])  # LPS-like, anisotropic


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))


def _label(shift: int = 0) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[5 + shift : 11 + shift, 5:11, 2:6] = 1
    return lab


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """Manifest, folds, plan, curves, metrics for 2 arms x 2 folds, one load report."""
    monkeypatch.chdir(tmp_path)
    res = Path("results")
    rng = np.random.default_rng(0)
    manifest = []
    for i, case in enumerate(CASES):
        image = rng.normal(100.0, 10.0, SHAPE).astype(np.float32) + 50.0 * _label()
        _save(image, Path("data") / f"{case}.nii.gz")
        _save(_label(), Path("data") / f"{case}_seg.nii.gz")
        manifest.append(
            [
                case,
                f"pat{i // 2}",
                f"data/{case}.nii.gz",
                f"data/{case}_seg.nii.gz",
                "MR",
                "1.50x1.50x3.00",
                "16x16x8",
                "LPS",
            ]
        )
    cols = [
        "case_id",
        "patient_id",
        "image",
        "label",
        "modality",
        "spacing",
        "shape",
        "orientation",
    ]
    (res / "ingest").mkdir(parents=True)
    pd.DataFrame(manifest, columns=cols).to_csv(res / "ingest/manifest.tsv", sep="\t", index=False)
    pd.DataFrame(
        [["raw/bad.dcm", "no pixel data", "re-export the series"]],
        columns=["path", "reason", "fix"],
    ).to_csv(res / "ingest/rejected.tsv", sep="\t", index=False)
    (res / "preprocess").mkdir()
    plan = {
        "modality": "MR",
        "target_spacing": [1.5, 1.5, 3.0],
        "normalization": "zscore",
        "intensity": {"mean": 100.0, "std": 10.0},
        "patch_size": [16, 16, 8],
        "n_cases": 8,
    }
    (res / "preprocess/plan.json").write_text(json.dumps(plan))
    folds = {
        "k": 2,
        "seed": 1,
        "groups": {c: f"pat{i // 2}" for i, c in enumerate(CASES)},
        "folds": [
            {"fold": 0, "train": CASES[4:], "val": CASES[4:6], "test": CASES[:4]},
            {"fold": 1, "train": CASES[:4], "val": CASES[:2], "test": CASES[4:]},
        ],
    }
    (res / "splits").mkdir()
    (res / "splits/folds.json").write_text(json.dumps(folds))

    rows = []
    for arm, base in (("scratch", 0.60), ("finetune", 0.80)):
        for k, fold in enumerate(folds["folds"]):
            run = run_dir(res, arm, 1, k)
            run.mkdir(parents=True)
            steps = np.arange(0, 100, 10)
            val = [0.1 * s / 10 if s % 20 == 0 else np.nan for s in steps]
            pd.DataFrame(
                {
                    "step": steps,
                    "loss": 1.0 / (1 + steps),
                    "val_dice": val,
                    "lr": 1e-3,
                    "elapsed_s": steps * 0.1,
                }
            ).to_csv(run / "curves.csv", index=False)
            summary = {
                "steps": 100,
                "strategy": "finetune" if arm == "finetune" else "scratch",
                "trainable_parameters": {"start": 12345, "max": 12345},
                "parameters": {"encoder": 10000, "decoder": 2000, "head": 345},
                "stopped_early": False,
            }
            (run / "summary.json").write_text(json.dumps(summary))
            record = {"seed": 1000 + k, "git_commit": "abc", "hardware": {"machine": "x86_64"}}
            record["sha256"] = {"cases": {"combined": f"{k}" * 64, "files": {}}}
            (run / "run.json").write_text(json.dumps(record))
            torch.save({"format": "medtl", "state_dict": {"w": torch.ones(2)}}, run / "best.pt")
            if arm == "finetune":
                report = {
                    "source": "pretrain/model.pt",
                    "format": "medtl",
                    "loaded": ["a", "b"],
                    "missing": ["c"],
                    "unexpected": [],
                    "shape_mismatch": [],
                    "encoder_params_total": 1000,
                    "encoder_params_loaded": 950,
                    "fraction_loaded": 0.95,
                }
                (run / "load_report.json").write_text(json.dumps(report))
            for j, case in enumerate(fold["test"]):
                shift = 0 if arm == "finetune" else 1
                _save(_label(shift), predictions_dir(res, arm, 1, k) / f"{case}.nii.gz")
                dice = base + 0.02 * j + 0.01 * k
                hd95 = 4.0 - 2.0 * dice
                rows.append(
                    [arm, k, 1, case, "tumour", dice, dice - 0.1, hd95, hd95 / 3, dice + 0.05, 2.0]
                    + [5.4, 5.4 * dice, 5.4 * (dice - 1), dice - 1, 1, 1, 1, 0, 0, ""]
                )
    (res / "evaluation").mkdir()
    pd.DataFrame(rows, columns=METRIC_COLUMNS).to_csv(res / "evaluation/metrics.csv", index=False)
    bench = res / "benchmarks" / "train"
    bench.mkdir(parents=True)
    (bench / "scratch_fold0.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t512.3\n")
    return res


def _build(res: Path, out: Path, config: dict | None = None, **kw) -> None:
    build_report(
        res,
        out / "report.html",
        out / "figures",
        out / "summary.json",
        arms=ARMS,
        reference_arm="scratch",
        classes=CLASSES,
        config=config or {"arms": {"scratch": {"init": "random"}}, "seed": 1},
        **kw,
    )


def test_report_is_self_contained_and_complete(results, tmp_path):
    out = tmp_path / "out"
    _build(results, out)
    html = (out / "report.html").read_text()
    assert 'src="http' not in html
    assert "<script" not in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 4
    # per-arm table with numbers: finetune Dice mean over 8 cases
    finetune = 0.80 + np.mean([0.02 * j + 0.01 * k for k in (0, 1) for j in range(4)])
    # mean (95 % CI), the CI resampling patients (two cases each)
    groups = pd.Series({c: f"pat{i // 2}" for i, c in enumerate(CASES)})
    metrics = pd.read_csv(results / "evaluation/metrics.csv")
    low, high = bootstrap_ci(per_case(metrics, "finetune"), groups, n_boot=2000, seed=0)
    assert f"{finetune:.3f} ({low:.3f}–{high:.3f})" in html
    assert "finetune improved mean Dice over scratch by 0.200" in html
    assert "Best mean Dice: <strong>finetune</strong>" in html
    assert "Holm p" in html and "normalised surface Dice" in html
    # the verdict: one sentence naming the best arm
    assert re.search(r"<strong>finetune has the best mean Dice[^<]*\.</strong>", html)
    for text in ("no pixel data", "target_spacing", "1.5 × 1.5 × 3", "0.950", "Runtime", "torch"):
        assert text in html
    # What each arm trained: strategy and trainable parameters from the runs' summaries.
    assert "What each arm trained" in html and "12,345" in html
    for name in (
        "dice_boxplot",
        "nsd_boxplot",
        "hd95_boxplot",
        "difference_forest",
        "spacing_histogram",
        "label_volumes",
        "paired_differences",
        "training_curves",
        "overlays",
    ):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"] == ARMS
    assert {r["arm"] for r in summary["per_arm_class"]["dice"]} == set(ARMS)
    assert summary["best_arm"]["arm"] == "finetune"
    first = summary["versus_reference"][0]
    assert (first["arm"], first["metric"], first["n"]) == ("finetune", "dice", len(CASES))
    assert first["p_holm"] >= first["p_value"]
    assert summary["verdict"].startswith("finetune has the best mean Dice")
    assert len(summary["per_case"]) == len(CASES)
    assert len(summary["provenance"]["config_sha256"]) == 64
    # inputs and trained weights of every run, by SHA-256
    assert "Inputs and weights" in html and "000000000000" in html and "111111111111" in html
    best_sha = weights_digest(next(results.glob("train/*/seed1/fold0/best.pt")))
    hashes = summary["provenance"]["inputs_and_weights"]
    assert {h["trained_weights_sha256"] for h in hashes} == {best_sha}
    assert summary["provenance"]["seeds"]["training seeds"] == [1]
    assert summary["provenance"]["seeds"]["config seed"] == 1
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == ["figures", "report.html", "summary.json", "tables"]
    per_fold = pd.read_csv(out / "tables" / "per_fold.csv")
    assert set(per_fold["fold"]) == {0, 1} and set(per_fold["arm"]) == set(ARMS)
    per_case_csv = pd.read_csv(out / "tables" / "per_case.csv")
    assert per_case_csv.set_index("case").loc["case00", "finetune"] == pytest.approx(0.80)


def test_optional_inputs_are_omitted(results, tmp_path):
    for path in results.glob("train/*/seed*/fold*/*"):
        path.unlink()
    for path in results.glob("benchmarks/*/*"):
        path.unlink()
    out = tmp_path / "out"
    _build(results, out, n_overlays=1)
    html = (out / "report.html").read_text()
    assert 'id="runtime"' not in html
    assert 'id="weights"' not in html
    assert 'id="training"' not in html
    assert not (out / "figures" / "training_curves.png").exists()


def test_plan_section_shows_the_spacing_source_and_warnings(results, tmp_path):
    plan_path = results / "preprocess/plan.json"
    plan = json.loads(plan_path.read_text())
    warning = "the data's median spacing is more than 2x finer than the pretraining's along z"
    source = "like_pretrained: checkpoint_final.pth, nnssl plan"
    plan_path.write_text(json.dumps({**plan, "spacing_source": source, "warnings": [warning]}))
    out = tmp_path / "out"
    _build(results, out, n_overlays=0)
    html = (out / "report.html").read_text()
    section = html[html.index('<section id="plan">') :]
    section = section[: section.index("</section>")]
    assert source in section
    assert '<p class="warn">Plan warning — the data&#39;s median spacing' in section
    assert "[&#34;the data" not in section  # the list is not repeated as a table row


def test_missing_metrics_names_the_file(results, tmp_path):
    (results / "evaluation/metrics.csv").unlink()
    with pytest.raises(ReportError, match=r"evaluation/metrics\.csv"):
        _build(results, tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists()


def test_missing_arm_in_metrics_is_an_error(results, tmp_path):
    with pytest.raises(ReportError, match="frozen"):
        build_report(
            results,
            tmp_path / "r.html",
            tmp_path / "f",
            tmp_path / "s.json",
            arms=["scratch", "frozen"],
            reference_arm="scratch",
            classes=CLASSES,
            config={},
        )


def _second_seed(results: Path, shift: dict[str, float]) -> pd.DataFrame:
    """Seed 2 of every arm: the runs of seed 1 copied, their Dice moved by ``shift[arm]``."""
    for run in sorted(results.glob("train/*/seed1/fold*")):
        shutil.copytree(run, run.parent.parent / "seed2" / run.name)
    for preds in sorted(results.glob("predictions/*/seed1/fold*")):
        shutil.copytree(preds, preds.parent.parent / "seed2" / preds.name)
    metrics = pd.read_csv(results / "evaluation/metrics.csv", keep_default_na=False)
    second = metrics.assign(seed=2, dice=metrics["dice"] + metrics["arm"].map(shift))
    table = pd.concat([metrics, second], ignore_index=True)
    table.to_csv(results / "evaluation/metrics.csv", index=False)
    return table


def test_report_with_seeds_counts_runs_and_shows_the_noise_floor(results, tmp_path):
    metrics = _second_seed(results, {"scratch": 0.10, "finetune": -0.02})
    out = tmp_path / "out"
    _build(results, out)
    html = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    groups = pd.Series({c: f"pat{i // 2}" for i, c in enumerate(CASES)})
    # finetune against scratch: the paired difference within each seed, run-aware
    first = summary["versus_reference"][0]
    assert (first["arm"], first["seeds"], first["method"]) == ("finetune", 2, METHOD_RUNS)
    expected = run_aware_mean(paired_runs(metrics, "finetune", "scratch"), groups)
    assert first["mean_diff"] == pytest.approx(expected.mean)
    assert (first["ci_low"], first["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))
    # per seed, each arm's mean Dice; the A/A floor of scratch from its two seed means
    per_seed = {(r["arm"], r["seed"]): r["mean_dice"] for r in summary["runs"]["per_seed"]}
    base = per_case(metrics[metrics["seed"] == 1], "scratch").mean()
    assert per_seed[("scratch", 1)] == pytest.approx(base)
    assert per_seed[("scratch", 2)] == pytest.approx(base + 0.10)
    floors = {f["arm"]: f for f in summary["runs"]["noise_floor"]}
    assert floors["scratch"]["run_sd"] == pytest.approx(0.10 / np.sqrt(2))
    assert floors["scratch"]["aa_difference"] == pytest.approx(1.959964 * 0.10, rel=1e-5)
    assert summary["runs"]["pooled_noise_floor"]["seeds"] == 4
    assert "count both the patients and the training runs as random" in html
    assert "Run-to-run variation" in html and "A/A noise floor" in html
    assert (out / "figures" / "seed_spread.png").read_bytes()[:4] == b"\x89PNG"


def test_report_with_one_seed_says_the_intervals_are_lower_bounds(results, tmp_path):
    out = tmp_path / "out"
    _build(results, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"]["noise_floor"] == [] and summary["runs"]["pooled_noise_floor"] is None
    assert "run-to-run variance is not measured" in summary["runs"]["statement"]
    assert summary["versus_reference"][0]["method"] == METHOD_PATIENTS
    assert "lower bounds on the uncertainty" in (out / "report.html").read_text()
