"""The whole medtl workflow on a benchmark's config: every fold and arm, and the report's
paired comparison of an arm with the reference arm (``summary.json``).

``make bench-transfer`` runs it with the transfer config, its pretrained arms loading
the nnssl file the harness wrote; the table's notes give the report's comparison
finetune − scratch and, when the config trains several seeds, the A/A run-variation
verdict (an arm compared with itself under other seeds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from bench_common import ROOT, Bench


def workflow_config(cfg: dict, weights: Path, fmt: str = "nnssl") -> dict:
    """The config the workflow runs: ``cfg`` with its pretrained arms reading ``weights``.

    Example:
        >>> c = workflow_config({"pretrain": {"source": "s", "steps": 9}}, Path("/w/c.pth"))
        >>> c["pretrain"]
        {'source': None, 'steps': 9, 'checkpoint': '/w/c.pth', 'format': 'nnssl'}
    """
    pretrain = {**cfg["pretrain"], "source": None, "checkpoint": str(weights), "format": fmt}
    return {**cfg, "pretrain": pretrain}


def run_workflow(b: Bench, cfg: dict, weights: Path) -> dict:
    """Snakemake on ``cfg`` (pretrained arms from ``weights``) in ``<work>/workflow``, with
    ``--threads`` cores; returns the run's wall time and the report's comparisons."""
    folder = b.work / "workflow"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(workflow_config(cfg, weights), sort_keys=False))
    b.say("the medtl workflow on the transfer config (every fold and arm)")
    t = b.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            ROOT / "Snakefile",
            "--directory",
            folder,
            "--configfile",
            config,
            "--profile",
            ROOT / "profiles" / "local",
            "--cores",
            b.threads,
        ],
        "workflow",
    )
    summary = json.loads((folder / "results" / "report" / "summary.json").read_text())
    return {"wall_s": t.wall_s, **paired(summary)}


def paired(summary: dict, metric: str = "dice") -> dict:
    """What the table's notes need from a report's ``summary.json``: each comparison with
    the reference arm on ``metric``, the run-variation statement and each arm's A/A noise
    floor (empty with one seed).

    Example:
        >>> s = {"reference_arm": "scratch", "versus_reference": [{"arm": "finetune",
        ...      "metric": "dice", "mean_diff": 0.1, "statement": "x"}],
        ...      "runs": {"statement": "one seed", "noise_floor": []}, "mean_dice": {}}
        >>> paired(s)["comparisons"][0]["mean_diff"]
        0.1
    """
    runs = summary.get("runs", {})
    keep = ("spread", "run_sd", "aa_difference", "false_calls", "seeds", "statement")
    return {
        "reference": summary["reference_arm"],
        "mean_dice": summary["mean_dice"],
        "comparisons": [c for c in summary["versus_reference"] if c["metric"] == metric],
        "runs_statement": runs.get("statement", ""),
        "noise_floor": [
            {"arm": f["arm"], **{k: f.get(k) for k in keep}}
            for f in runs.get("noise_floor", [])
            if f.get("metric") == metric
        ],
    }
