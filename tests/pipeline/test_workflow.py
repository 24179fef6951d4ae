"""The whole Snakemake workflow on a tiny config, its DAG, and its rerun behaviour."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import yaml

from medtl.evaluate.metrics import METRIC_COLUMNS
from medtl.layout import predictions_dir, run_dir
from tests.support.workflow import planned_rules, run_snakemake

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("config_tiny.yaml")
IDENTIFIERS = [b"DEMO-", b"Demo^", b"Demo^Patient"]


def snakemake(workdir: Path, *args: str, configfile: Path = TINY) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` on 2 cores (default: the tiny config)."""
    return run_snakemake(workdir, "--cores", "2", *args, configfile=configfile)


def test_dry_run_default_config_builds_the_dag(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = snakemake(tmp_path, "-n", configfile=tmp_path / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr
    rules = planned_rules(result)
    # The whole DAG is planned before any job runs: no rule waits on the case list.
    assert {"demo_data", "ingest", "ingest_source", "plan", "pretrain", "split"} <= set(rules)
    assert rules["pretrain_ssl"] == 1
    assert rules["evaluate"] == 1 and rules["report"] == 1
    # 3 folds of 3 seeds of scratch and finetune, 1 seed of frozen and ssl_finetune.
    assert rules["train"] == 24 and rules["predict_fold"] == 24 and rules["evaluate_fold"] == 24


def test_bad_config_names_key_value_and_allowed(tmp_path: Path) -> None:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["device"] = "gpu"
    cfg["train"]["stepz"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake(tmp_path, "-n", configfile=bad)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "config key 'device': got 'gpu'; allowed values: 'auto', 'cpu', 'cuda'" in text
    assert "config key 'train.stepz': unknown" in text


@pytest.mark.slow
def test_whole_workflow_on_tiny_config(tmp_path: Path) -> None:
    work = tmp_path / "run"
    work.mkdir()
    result = snakemake(work)
    assert result.returncode == 0, result.stderr[-4000:]
    res = work / "results"

    # Every stage left its product; the report is self-contained.
    html = (res / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert 'src="http' not in html
    cfg = yaml.safe_load(TINY.read_text())
    manifest = pd.read_csv(res / "ingest" / "manifest.tsv", sep="\t")
    metrics = pd.read_csv(res / "evaluation" / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert set(metrics["arm"]) == {"scratch", "frozen", "finetune"}
    seeds = metrics.groupby("arm")["seed"].unique().map(sorted).to_dict()
    assert seeds == {"scratch": [3, 4], "frozen": [3], "finetune": [3, 4]}
    # one class, every case held out once per seed of an arm
    assert len(metrics) == (2 + 1 + 2) * len(manifest)
    for metric in ("dice", "iou", "nsd"):
        assert metrics[metric].between(0, 1).all(), metric
    assert (metrics["lesion_tp"] + metrics["lesion_fn"] == metrics["lesions_ref"]).all()
    # one table per training run (arm, seed, fold), joined
    assert len(list((res / "evaluation").glob("*/seed*/fold*.csv"))) == (2 + 1 + 2) * 2
    summary = json.loads((res / "report" / "summary.json").read_text())
    assert summary["verdict"] and len(summary["all_pairs"]) == 3
    # scratch and finetune share seeds 3 and 4: compared counting runs as random
    pair = next(
        c for c in summary["all_pairs"] if {c["arm"], c["reference"]} == {"scratch", "finetune"}
    )
    assert pair["seeds"] == 2 and pair["method"].startswith("patients and runs")
    assert {f["arm"] for f in summary["runs"]["noise_floor"]} == {"scratch", "finetune"}
    # what decides bit-identity is recorded beside the report
    hardware = json.loads((res / "report" / "versions.json").read_text())["hardware"]
    assert hardware["cpu_capability"] and hardware["cpu_threads"] >= 1
    for arm in ("scratch", "frozen", "finetune"):
        decision = json.loads((res / "postprocess" / f"{arm}.json").read_text())
        assert decision["classes"]["tumour"]["chosen"] in ("none", "largest", "min_volume")
    # Trust: each arm calibrated and its flag rule chosen on its CV predictions; the
    # report gives the chosen score's AURC beside the oracle's and random's.
    for arm, n_seeds in (("scratch", 2), ("frozen", 1), ("finetune", 2)):
        fit = json.loads((res / "trust" / f"{arm}.json").read_text())
        assert len(fit["cases"]) == n_seeds * len(manifest)
        assert fit["calibration"]["temperature"] > 0 and fit["calibration"]["voxels"] > 0
        assert fit["rule"]["bad_dice"] == 0.8 and fit["model"]["parameters"] > 0
        measures = summary["trust"][arm]["measures"]
        assert {m["measure"] for m in measures} == {
            "mean_entropy", "mean_mutual_info", "agreement_dice", "volume_cv"
        }  # fmt: skip
        assert all(m["oracle_aurc"] <= m["aurc"] + 1e-12 for m in measures)
        chosen = summary["trust"][arm]["chosen"]  # None when no score beats random
        assert chosen is None or chosen["aurc"] < chosen["random_aurc"]
    assert "Trust in each prediction" in html and "Model size and inference cost" in html
    assert {"reliability", "risk_coverage"} <= set(summary["figures"])
    for arm in ("frozen", "finetune"):
        assert (run_dir(res, arm, 3, 0) / "load_report.json").is_file()
    # provenance: SHA-256 of each run's inputs, the pretrained weights among them
    record = json.loads((run_dir(res, "finetune", 3, 0) / "run.json").read_text())
    weights = record["sha256"]["pretrained_weights"]["files"]
    checkpoint = res / "pretrain" / "checkpoint.pt"
    assert weights == {"checkpoint.pt": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    assert len(record["sha256"]["cases"]["files"]) > 0 and record["settings"]["seed"] == cfg["seed"]
    assert json.loads((res / "device.json").read_text())["gpus_found"] == 0
    assert not (run_dir(res, "scratch", 4, 0) / "load_report.json").exists()
    # seeds differ in their runs, folds and data do not
    a, b = (run_dir(res, "scratch", s, 0) / "best.pt" for s in (3, 4))
    assert a.read_bytes() != b.read_bytes()

    # Masks are on the original image grid.
    case = manifest.iloc[0]
    fold = next(
        f
        for f in range(2)
        if (predictions_dir(res, "scratch", 3, f) / f"{case.case_id}.nii.gz").exists()
    )
    mask = nib.load(predictions_dir(res, "scratch", 3, fold) / f"{case.case_id}.nii.gz")
    image = nib.load(work / case.image)
    assert mask.shape == image.shape
    assert (mask.affine == image.affine).all()

    # No patient identifier in any output (NIfTI decompressed).
    for path in list(res.rglob("*")) + list((work / "logs").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert not any(i in data for i in IDENTIFIERS), path

    # The hashing salt is a secret: the report and the resolved config do not show it.
    for path in (res / "report" / "report.html", res / "report" / "config.resolved.yaml"):
        assert cfg["salt"] not in path.read_text(), path

    # A second run does nothing.
    again = snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    # A changed training option reruns train -> predict -> evaluate (-> postprocess, trust)
    # -> report only.
    cfg["train"]["steps"] = 5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    rules = planned_rules(snakemake(work, "-n", configfile=changed))
    assert set(rules) == {
        "train",
        "predict_fold",
        "evaluate_fold",
        "evaluate",
        "postprocess",
        "trust",
        "report",
        "all",
    }, rules

    # --forcerun evaluate reruns evaluate and report only.
    rules = planned_rules(snakemake(work, "-n", "--forcerun", "evaluate"))
    assert set(rules) == {"evaluate", "report", "all"}, rules

    # Snakemake's own report carries the figures with their captions.
    report_zip = tmp_path / "smk-report.zip"
    rep = snakemake(work, "--report", str(report_zip))
    assert rep.returncode == 0, rep.stderr[-2000:]
    archive = zipfile.ZipFile(report_zip)
    names = archive.namelist()
    for figure in (
        "dice_boxplot",
        "nsd_boxplot",
        "hd95_boxplot",
        "difference_forest",
        "spacing_histogram",
        "label_volumes",
        "paired_differences",
        "training_curves",
        "overlays",
        "reliability",
        "risk_coverage",
    ):
        assert any(n.endswith(f"{figure}.png") for n in names), figure
    pages = b"".join(archive.read(n) for n in names if n.endswith((".html", ".js")))
    caption = (REPO / "pipeline" / "report" / "difference_forest.rst").read_text().split()[:4]
    assert " ".join(caption).encode() in pages

    # medtl predict segments new cases (a DICOM folder) with the fold ensemble.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dicom = next((work / "data" / "demo" / "target" / "dicom").glob("patient000/study0/series1"))
    out = tmp_path / "masks"
    pred = subprocess.run(
        [
            sys.executable,
            "-m",
            "medtl",
            "predict",
            str(dicom),
            "--model",
            str(res),
            "--out",
            str(out),
            "--arm",
            "finetune",
            "--tta",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert pred.returncode == 0, pred.stderr
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert len(table) == 1 and table.loc[0, "folds"] == 2
    rule = json.loads((res / "trust" / "finetune.json").read_text())["rule"]
    if rule["measure"] is None:  # no score ranked the CV cases: flag all if all failed
        assert table.loc[0, "flag"] == (rule["rule"] == "all") or pd.isna(table.loc[0, "flag"])
    else:
        assert table.loc[0, "flag"] == (table.loc[0, "risk"] >= rule["threshold"])
    chosen = json.loads((res / "postprocess" / "finetune.json").read_text())
    assert table.loc[0, "postprocess"].startswith(
        "none" if chosen["classes"]["tumour"]["chosen"] == "none" else "tumour"
    )
    new_mask = nib.load(out / f"{table.loc[0, 'case_id']}.nii.gz")
    assert new_mask.shape == (48, 48, 24)


def test_several_gpus_launch_training_with_torchrun(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "config.yaml"
    one = snakemake(tmp_path, "-n", "-p", configfile=config)
    assert one.returncode == 0, one.stderr
    assert "torch.distributed.run" not in one.stdout
    two = snakemake(tmp_path, "-n", "-p", "--config", "gpus=2", "threads=4", configfile=config)
    assert two.returncode == 0, two.stderr
    launch = "python -m torch.distributed.run --standalone --nproc-per-node 2 -m medtl pretrain "
    assert launch in two.stdout
    # each of the two processes gets half of the job's threads (2 cores here)
    assert re.search(r"-m medtl pretrain .*--threads 1 ", two.stdout)
