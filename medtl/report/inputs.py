"""What the report reads from a results folder: manifest, folds, metrics and the files
each training run left (curves, summaries, load reports, run records), benchmarks,
label fractions and post-processing decisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.io.manifest import read_manifest
from medtl.kernel.errors import MedtlError
from medtl.layout import (
    BEST_CHECKPOINT,
    SHIFT_CASES,
    SHIFT_RECORD,
    plan_file,
    run_dir,
    shift_dir,
    trust_file,
)
from medtl.report.fractions import read_label_fraction
from medtl.split.folds import load_folds


class ReportError(MedtlError):
    """A required input of the report that is missing or inconsistent."""


# ----------------------------------------------------------------------------- helpers


def _require(path: Path, what: str, stage: str) -> Path:
    if not path.is_file():
        raise ReportError(
            f"{what} not found: expected {path}. How to fix: run the {stage} stage first "
            "(or point the report at the right results folder)."
        )
    return path


@dataclass
class Inputs:
    """Everything read from the result tree."""

    manifest: pd.DataFrame
    folds: dict
    metrics: pd.DataFrame
    rejected: pd.DataFrame | None = None
    plan: dict | None = None
    curves: dict[str, dict[tuple[int | None, int], pd.DataFrame]] = field(default_factory=dict)
    load_reports: list[dict] = field(default_factory=list)
    run_summaries: list[dict] = field(default_factory=list)
    benchmarks: pd.DataFrame | None = None
    label_fraction: pd.DataFrame | None = None
    postprocess: dict[str, dict] = field(default_factory=dict)
    run_records: list[dict] = field(default_factory=list)
    trust: dict[str, dict] = field(default_factory=dict)
    shift: dict | None = None
    shift_cases: pd.DataFrame | None = None


def _read_metrics(path: Path, arms: list[str]) -> pd.DataFrame:
    """``metrics.csv``: text columns kept as text (case ids such as ``007``), the rest numbers.

    Only the columns of the first evaluation (arm, fold, case, class, Dice, HD95) are
    required; the report shows the others when they are there.
    """
    _require(path, "metrics table", "evaluate")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = ["arm", "fold", "case", "class", "dice", "hd95"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ReportError(
            f"{path}: expected columns {needed}, missing {missing}. "
            "How to fix: rerun the evaluate stage."
        )
    for col in df.columns:
        if col not in ("arm", "case", "class", "empty"):
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
    absent = [a for a in arms if a not in set(df["arm"])]
    if absent:
        raise ReportError(
            f"{path}: expected results for arms {arms}, found {sorted(set(df['arm']))} "
            f"(missing {absent}). How to fix: evaluate every arm named in the config."
        )
    return df


def arm_seeds(metrics: pd.DataFrame, arms: list[str]) -> dict[str, list[int | None]]:
    """The seeds each arm was evaluated with (``[None]``: a table without seeds)."""
    if "seed" not in metrics:
        return {arm: [None] for arm in arms}
    return {
        arm: sorted(int(s) for s in metrics.loc[metrics["arm"] == arm, "seed"].dropna().unique())
        for arm in arms
    }


def _run_dirs(
    results: Path, seeds: dict[str, list[int | None]], folds: dict
) -> list[tuple[str, int | None, int, Path]]:
    """``(arm, seed, fold, folder)`` of every training run the metrics come from."""
    out = []
    for arm, arm_seeds_ in seeds.items():
        for seed in arm_seeds_:
            for fold in folds["folds"]:
                k = int(fold["fold"])
                # seed None: an earlier version's layout, no seed folder
                out.append((arm, seed, k, run_dir(results, arm, seed, k)))
    return out


def _read_curves(
    results: Path, seeds: dict[str, list[int | None]], folds: dict
) -> dict[str, dict[tuple[int | None, int], pd.DataFrame]]:
    """Per arm, per ``(seed, fold)``: the run's ``curves.csv``."""
    out: dict[str, dict[tuple[int | None, int], pd.DataFrame]] = {}
    for arm, seed, k, folder in _run_dirs(results, seeds, folds):
        path = folder / "curves.csv"
        if path.is_file():
            df = pd.read_csv(path)
            if {"step", "loss"} <= set(df.columns):
                out.setdefault(arm, {})[(seed, k)] = df
    return out


def _read_run_files(
    results: Path, seeds: dict[str, list[int | None]], folds: dict, name: str
) -> list[dict]:
    """A JSON file of every training run (``train/<arm>/seed<s>/fold<k>/<name>``) that
    exists, with ``arm``, ``seed``, ``fold`` and its ``weights`` (``best.pt``)."""
    out = []
    for arm, seed, k, folder in _run_dirs(results, seeds, folds):
        path = folder / name
        if path.is_file():
            record = json.loads(path.read_text())
            key = {"arm": arm, "seed": seed, "fold": k, "weights": folder / BEST_CHECKPOINT}
            out.append({**record, **key})
    return out


def _read_benchmarks(results: Path) -> pd.DataFrame | None:
    root = results / "benchmarks"
    if not root.is_dir():
        return None
    frames = []
    for path in sorted([*root.rglob("*.tsv"), *root.rglob("*.txt")]):
        try:
            df = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if "s" not in df.columns:
            continue
        rel = path.relative_to(root)
        df["rule"] = rel.parts[0] if len(rel.parts) > 1 else path.stem
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def load_inputs(results: Path, arms: list[str]) -> Inputs:
    """Read the result tree; required files raise :class:`ReportError` when missing.

    Args:
        results: the ``results`` folder.
        arms: arms that must appear in the metrics.
    """
    results = Path(results)
    manifest_path = _require(results / "ingest" / "manifest.tsv", "manifest", "ingest")
    folds_path = _require(results / "splits" / "folds.json", "folds file", "split")
    manifest = read_manifest(manifest_path)
    folds = load_folds(folds_path)
    metrics = _read_metrics(results / "evaluation" / "metrics.csv", arms)
    inputs = Inputs(manifest=manifest, folds=folds, metrics=metrics)
    rejected = results / "ingest" / "rejected.tsv"
    if rejected.is_file():
        inputs.rejected = pd.read_csv(rejected, sep="\t", dtype=str, keep_default_na=False)
    plan = plan_file(results)
    if plan.is_file():
        inputs.plan = json.loads(plan.read_text())
    seeds = arm_seeds(metrics, arms)
    inputs.curves = _read_curves(results, seeds, folds)
    inputs.load_reports = _read_run_files(results, seeds, folds, "load_report.json")
    inputs.run_summaries = _read_run_files(results, seeds, folds, "summary.json")
    inputs.benchmarks = _read_benchmarks(results)
    inputs.label_fraction = read_label_fraction(results / "evaluation" / "label_fraction.csv")
    inputs.run_records = _read_run_files(results, seeds, folds, "run.json")
    for arm in arms:
        path = results / "postprocess" / f"{arm}.json"
        if path.is_file():
            inputs.postprocess[arm] = json.loads(path.read_text())
        path = trust_file(results, arm)
        if path.is_file():
            inputs.trust[arm] = json.loads(path.read_text())
    shift = shift_dir(results)
    if (shift / SHIFT_RECORD).is_file():
        inputs.shift = json.loads((shift / SHIFT_RECORD).read_text())
    if (shift / SHIFT_CASES).is_file():
        inputs.shift_cases = pd.read_csv(shift / SHIFT_CASES, sep="\t", dtype={"case_id": str})
    return inputs
