"""Build the self-contained HTML report of a workflow run.

:func:`build_report` reads the result tree (manifest, folds, metrics, and whatever
optional outputs exist: plan, training curves, load reports, benchmarks, predictions),
draws the figures, and writes three things atomically: one HTML file that opens
offline (inline CSS, every figure a base64 PNG, no JavaScript), the same figures as PNG
files for Snakemake's report, and ``summary.json`` with the numbers in machine-readable
form.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import math
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader

from medtl.evaluate.stats import (
    PairedComparison,
    StatsError,
    compare_arms,
    format_p_value,
    per_case,
    summarise_arms,
)
from medtl.io.errors import MedtlError
from medtl.io.files import atomic_write_bytes
from medtl.io.ingest import read_manifest
from medtl.report import figures as F

#: Packages whose versions are listed under provenance.
PROVENANCE_PACKAGES = [
    "medtl",
    "torch",
    "monai",
    "numpy",
    "nibabel",
    "scipy",
    "pandas",
    "matplotlib",
    "snakemake",
]

_TEMPLATES = Path(__file__).parent / "templates"


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


def _fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: fixed digits, '–' for missing values."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return "–" if not math.isfinite(float(x)) else f"{float(x):.{digits}f}"
    return str(x)


def _fmt_value(x: Any) -> str:
    """A value of the plan or config: lists of numbers as ``a × b × c``."""
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) for v in x):
        return " × ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple, dict)):
        return json.dumps(x)
    return str(x)


def _table(columns: list[str], rows: list[list[Any]], numeric_from: int = 1) -> dict:
    """A table for the template; columns from ``numeric_from`` on are right-aligned."""
    return {
        "columns": columns,
        "rows": [[str(c) for c in row] for row in rows],
        "numeric_from": numeric_from,
    }


def _json_safe(obj: Any) -> Any:
    """NaN/inf to None, numpy scalars to Python, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _parse_triplet(text: str) -> list[float]:
    parts = re.split(r"[x×,\s]+", str(text).strip())
    try:
        vals = [float(p) for p in parts if p]
    except ValueError:
        return [math.nan] * 3
    return vals if len(vals) == 3 else [math.nan] * 3


# ----------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Everything read from the result tree."""

    manifest: pd.DataFrame
    folds: dict
    metrics: pd.DataFrame
    rejected: pd.DataFrame | None = None
    plan: dict | None = None
    curves: dict[str, dict[int, pd.DataFrame]] = field(default_factory=dict)
    load_reports: list[dict] = field(default_factory=list)
    run_summaries: list[dict] = field(default_factory=list)
    benchmarks: pd.DataFrame | None = None
    label_fraction: pd.DataFrame | None = None


def _read_metrics(path: Path, arms: list[str]) -> pd.DataFrame:
    _require(path, "metrics table", "evaluate")
    df = pd.read_csv(path)
    needed = ["arm", "fold", "case", "class", "dice", "hd95"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ReportError(
            f"{path}: expected columns {needed}, missing {missing}. "
            "How to fix: rerun the evaluate stage."
        )
    df["arm"] = df["arm"].astype(str)
    df["case"] = df["case"].astype(str)
    df["class"] = df["class"].astype(str)
    absent = [a for a in arms if a not in set(df["arm"])]
    if absent:
        raise ReportError(
            f"{path}: expected results for arms {arms}, found {sorted(set(df['arm']))} "
            f"(missing {absent}). How to fix: evaluate every arm named in the config."
        )
    return df


def _read_curves(results: Path, arms: list[str], folds: dict) -> dict[str, dict[int, pd.DataFrame]]:
    out: dict[str, dict[int, pd.DataFrame]] = {}
    for arm in arms:
        for fold in folds["folds"]:
            k = int(fold["fold"])
            path = results / "train" / arm / f"fold{k}" / "curves.csv"
            if path.is_file():
                df = pd.read_csv(path)
                if {"step", "loss"} <= set(df.columns):
                    out.setdefault(arm, {})[k] = df
    return out


def _read_run_files(results: Path, arms: list[str], folds: dict, name: str) -> list[dict]:
    """A JSON file of every training run (``train/<arm>/fold<k>/<name>``) that exists."""
    out = []
    for arm in arms:
        for fold in folds["folds"]:
            k = int(fold["fold"])
            path = results / "train" / arm / f"fold{k}" / name
            if path.is_file():
                out.append({"arm": arm, "fold": k, **json.loads(path.read_text())})
    return out


def _trainable_table(summaries: list[dict], arms: list[str]) -> dict | None:
    """Per arm: strategy, trainable parameters at the start and at most, steps run."""
    rows = []
    for arm in arms:
        runs = [r for r in summaries if r["arm"] == arm]
        if not runs:
            continue
        first = runs[0]
        trainable = first.get("trainable_parameters") or {}
        total = sum((first.get("parameters") or {}).values())
        stopped = sum(bool(r.get("stopped_early")) for r in runs)
        rows.append(
            [
                arm,
                first.get("strategy", "–"),
                f"{trainable.get('start', 0):,}" if trainable else "–",
                f"{trainable.get('max', 0):,}" if trainable else "–",
                f"{total:,}" if total else "–",
                f"{np.mean([r.get('steps', 0) for r in runs]):.0f}",
                f"{stopped} of {len(runs)}",
            ]
        )
    if not rows:
        return None
    cols = [
        "arm",
        "strategy",
        "trainable at start",
        "trainable at most",
        "all parameters",
        "steps (mean)",
        "stopped early",
    ]
    return _table(cols, rows, numeric_from=2)


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
    folds = json.loads(folds_path.read_text())
    if not isinstance(folds.get("folds"), list):
        raise ReportError(
            f"{folds_path}: expected a 'folds' list, found keys {sorted(folds)}. "
            "How to fix: rerun the split stage."
        )
    metrics = _read_metrics(results / "evaluation" / "metrics.csv", arms)
    inputs = Inputs(manifest=manifest, folds=folds, metrics=metrics)
    rejected = results / "ingest" / "rejected.tsv"
    if rejected.is_file():
        inputs.rejected = pd.read_csv(rejected, sep="\t", dtype=str, keep_default_na=False)
    plan = results / "preprocess" / "plan.json"
    if plan.is_file():
        inputs.plan = json.loads(plan.read_text())
    inputs.curves = _read_curves(results, arms, folds)
    inputs.load_reports = _read_run_files(results, arms, folds, "load_report.json")
    inputs.run_summaries = _read_run_files(results, arms, folds, "summary.json")
    inputs.benchmarks = _read_benchmarks(results)
    inputs.label_fraction = _read_label_fraction(results / "evaluation" / "label_fraction.csv")
    return inputs


# ----------------------------------------------------------------------------- label fractions

#: Columns ``label_fraction.csv`` must have.
LABEL_FRACTION_COLUMNS = ["arm", "fraction", "labelled_cases", "fold", "case", "class", "dice"]


def _read_label_fraction(path: Path) -> pd.DataFrame | None:
    """The label-fraction table, or None when the run made none (it is optional)."""
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    missing = [c for c in LABEL_FRACTION_COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(
            f"{path}: expected columns {LABEL_FRACTION_COLUMNS}, missing {missing}. "
            "How to fix: rerun the evaluate_fractions rule."
        )
    for col in ("arm", "case", "class"):
        df[col] = df[col].astype(str)
    for col in ("fraction", "labelled_cases", "dice"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _mean_ci(values: np.ndarray, seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95 % CI of the mean (the mean itself for one value)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return mean, float(low), float(high)


def label_fraction_points(table: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Per arm and fraction: labelled cases, cases, mean Dice and its bootstrap 95 % CI.

    Each case is first averaged over its classes, so every held-out case counts once.

    Args:
        table: the ``label_fraction.csv`` table.
        arms: arms in display order (others in the table are left out).

    Returns:
        Columns ``arm, fraction, labelled_cases, n_cases, mean_dice, ci_low, ci_high``,
        sorted by arm (in ``arms`` order) and fraction.
    """
    rows = []
    for arm in arms:
        sel = table[table["arm"] == arm]
        for fraction, part in sel.groupby("fraction", sort=True):
            cases = per_case(part, arm, "dice")
            mean, low, high = _mean_ci(cases.to_numpy())
            rows.append(
                {
                    "arm": arm,
                    "fraction": float(fraction),
                    "labelled_cases": float(part["labelled_cases"].mean()),
                    "n_cases": int(len(cases)),
                    "mean_dice": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    cols = ["arm", "fraction", "labelled_cases", "n_cases", "mean_dice", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


def _fmt_count(x: float) -> str:
    """A (mean) number of cases: whole numbers without decimals, else one decimal."""
    return str(int(round(x))) if abs(x - round(x)) < 1e-9 else f"{x:.1f}"


def _cases(x: float) -> str:
    """``1 labelled training case``, ``2.5 labelled training cases``."""
    text = _fmt_count(x)
    return f"{text} labelled training case" + ("" if text == "1" else "s")


def label_fraction_statements(points: pd.DataFrame, arms: list[str], reference: str) -> list[str]:
    """One sentence per arm other than ``reference``: the labels it saves, if any.

    For the largest number of labelled cases ``M`` at which ``arm`` reached the
    reference's mean Dice with fewer cases, the fewest such cases ``N``: "with N
    labelled cases, arm reached the Dice reference reached with M". Only measured
    points are compared (no interpolation).
    """
    ref = points[points["arm"] == reference].sort_values("labelled_cases", ascending=False)
    out = []
    if ref.empty:
        return out
    for arm in arms:
        own = points[(points["arm"] == arm) & points["mean_dice"].notna()]
        if arm == reference or own.empty:
            continue
        found = None
        for _, r in ref.iterrows():
            hits = own[
                (own["labelled_cases"] < r["labelled_cases"]) & (own["mean_dice"] >= r["mean_dice"])
            ]
            if len(hits):
                found = (hits.sort_values("labelled_cases").iloc[0], r)
                break
        if found is None:
            out.append(
                f"{arm} did not reach, with fewer labelled cases, a mean Dice {reference} "
                "reached with more (at the measured points)."
            )
            continue
        a, r = found
        saved = 1.0 - a["labelled_cases"] / r["labelled_cases"]
        out.append(
            f"With {_cases(a['labelled_cases'])} per fold, {arm} "
            f"reached the mean Dice {reference} reached with {_fmt_count(r['labelled_cases'])} "
            f"({a['mean_dice']:.3f} vs {r['mean_dice']:.3f}): {saved:.0%} fewer labels."
        )
    return out


def _label_fraction_table(points: pd.DataFrame) -> dict:
    rows = [
        [
            r["arm"],
            f"{100 * r['fraction']:.0f} %",
            _fmt_count(r["labelled_cases"]),
            int(r["n_cases"]),
            _fmt(r["mean_dice"]),
            f"{_fmt(r['ci_low'])} to {_fmt(r['ci_high'])}",
        ]
        for _, r in points.iterrows()
    ]
    cols = ["arm", "fraction", "labelled cases per fold", "n cases", "mean Dice", "95 % CI"]
    return _table(cols, rows)


# ----------------------------------------------------------------------------- sections


def _dataset_section(inputs: Inputs) -> dict:
    m = inputs.manifest
    n_labelled = int((m.get("label", pd.Series(dtype=str)) != "").sum())
    patients = m["patient_id"].nunique() if "patient_id" in m else len(m)
    modalities = m["modality"].value_counts().to_dict() if "modality" in m else {}
    facts = [
        ["cases", len(m)],
        ["labelled cases", n_labelled],
        ["patients", patients],
        ["modality", ", ".join(f"{k} ({v})" for k, v in modalities.items()) or "–"],
    ]
    spacing = np.array([_parse_triplet(s) for s in m.get("spacing", [])] or np.zeros((0, 3)))
    shape = np.array([_parse_triplet(s) for s in m.get("shape", [])] or np.zeros((0, 3)))
    rows = []
    for i, axis in enumerate("xyz"):
        sp = spacing[:, i] if len(spacing) else np.array([math.nan])
        sh = shape[:, i] if len(shape) else np.array([math.nan])
        rows.append(
            [axis]
            + [_fmt(f(sp), 2) for f in (np.nanmin, np.nanmedian, np.nanmax)]
            + [_fmt(f(sh), 0) for f in (np.nanmin, np.nanmedian, np.nanmax)]
        )
    cols = ["case_id", "patient_id", "modality", "spacing", "shape", "orientation"]
    cols = [c for c in cols if c in m.columns]
    case_rows = [
        [*(r[c] for c in cols), "yes" if r.get("label", "") else "no"] for _, r in m.iterrows()
    ]
    section = {
        "facts": _table(["", "value"], facts, numeric_from=2),
        "grid": _table(
            ["axis", "spacing min", "median", "max (mm)", "shape min", "median", "max (voxels)"],
            rows,
        ),
        "cases": _table([*cols, "label"], case_rows, numeric_from=len(cols) + 1),
        "rejected": None,
    }
    if inputs.rejected is not None and len(inputs.rejected):
        r = inputs.rejected
        cols = [c for c in ("path", "reason", "fix") if c in r.columns]
        section["rejected"] = _table(cols, r[cols].values.tolist(), numeric_from=len(cols))
    return section


def _flatten(d: dict, prefix: str = "") -> list[list[str]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, key + ".")
        else:
            rows.append([key, _fmt_value(v)])
    return rows


def _folds_section(inputs: Inputs) -> dict:
    groups = inputs.folds.get("groups") or {}
    if not groups and "patient_id" in inputs.manifest:
        groups = dict(zip(inputs.manifest["case_id"], inputs.manifest["patient_id"], strict=True))
    rows = []
    for fold in inputs.folds["folds"]:
        row: list[Any] = [fold["fold"]]
        for part in ("train", "val", "test"):
            cases = fold.get(part, [])
            row += [len(cases), len({groups.get(c, c) for c in cases})]
        rows.append(row)
    cols = ["fold", "train cases", "patients", "val cases", "patients", "test cases", "patients"]
    meta = f"k = {inputs.folds.get('k', len(rows))}, seed = {inputs.folds.get('seed', '–')}"
    return {"table": _table(cols, rows), "meta": meta}


def _arm_table(metrics: pd.DataFrame, arms: list[str], class_names: list[str]) -> dict:
    dice = summarise_arms(metrics, "dice").set_index(["arm", "class"])
    hd = summarise_arms(metrics, "hd95").set_index(["arm", "class"])
    rows = []
    for arm in arms:
        for cls in class_names:
            if (arm, cls) not in dice.index:
                continue
            d, h = dice.loc[(arm, cls)], hd.loc[(arm, cls)]
            rows.append(
                [
                    arm,
                    cls,
                    f"{_fmt(d['mean'])} ± {_fmt(d['sd'])}",
                    _fmt(d["median"]),
                    _fmt(int(d["n"])),
                    f"{_fmt(h['mean'], 2)} ± {_fmt(h['sd'], 2)}",
                    _fmt(h["median"], 2),
                    _fmt(int(h["n"])),
                ]
            )
    cols = ["arm", "class", "Dice mean ± sd", "median", "n", "HD95 mm mean ± sd", "median", "n"]
    return _table(cols, rows, numeric_from=2)


def _comparisons(metrics: pd.DataFrame, arms: list[str], reference: str) -> list[PairedComparison]:
    out = []
    for metric in ("dice", "hd95"):
        for arm in arms:
            if arm == reference:
                continue
            try:
                out.append(compare_arms(metrics, arm, reference, metric=metric))
            except StatsError:
                if metric == "dice":
                    raise
    return out


def _comparison_table(comparisons: list[PairedComparison]) -> dict:
    rows = []
    for c in comparisons:
        digits = 3 if c.metric == "dice" else 2
        rows.append(
            [
                c.arm,
                c.reference,
                "Dice" if c.metric == "dice" else "HD95 (mm)",
                c.n,
                f"{c.mean_diff:+.{digits}f}",
                f"{_fmt(c.ci_low, digits)} to {_fmt(c.ci_high, digits)}",
                format_p_value(c.p_value),
            ]
        )
    cols = ["arm", "reference", "metric", "n cases", "mean diff", "95 % CI", "Wilcoxon p"]
    return _table(cols, rows, numeric_from=3)


def _load_report_table(reports: list[dict]) -> dict | None:
    if not reports:
        return None
    rows = []
    for r in reports:
        total, loaded = r.get("encoder_params_total"), r.get("encoder_params_loaded")
        rows.append(
            [
                r["arm"],
                r["fold"],
                r.get("format", "–"),
                Path(str(r.get("source", "–"))).name,
                _fmt(r.get("fraction_loaded")),
                f"{loaded:,} / {total:,}"
                if isinstance(loaded, int) and isinstance(total, int)
                else "–",
                len(r.get("loaded", [])),
                len(r.get("missing", [])),
                len(r.get("unexpected", [])),
                len(r.get("shape_mismatch", [])),
            ]
        )
    cols = [
        "arm",
        "fold",
        "format",
        "checkpoint",
        "fraction loaded",
        "encoder params",
        "loaded keys",
        "missing",
        "unexpected",
        "shape mismatch",
    ]
    return _table(cols, rows, numeric_from=4)


def _runtime_table(bench: pd.DataFrame | None) -> dict | None:
    if bench is None or bench.empty:
        return None
    bench = bench.copy()
    bench["s"] = pd.to_numeric(bench["s"], errors="coerce")
    rss = pd.to_numeric(bench.get("max_rss", pd.Series(np.nan, index=bench.index)), errors="coerce")
    bench["max_rss"] = rss
    g = bench.groupby("rule")
    table = pd.DataFrame(
        {
            "jobs": g.size(),
            "total": g["s"].sum(),
            "mean": g["s"].mean(),
            "max": g["s"].max(),
            "rss": g["max_rss"].max(),
        }
    ).sort_values("total", ascending=False)
    rows = [
        [
            rule,
            int(r["jobs"]),
            _fmt(r["total"], 1),
            _fmt(r["mean"], 1),
            _fmt(r["max"], 1),
            _fmt(r["rss"], 0),
        ]
        for rule, r in table.iterrows()
    ]
    total = _fmt(float(bench["s"].sum()), 1)
    rows.append(["all rules", int(len(bench)), total, "", "", ""])
    cols = ["rule", "jobs", "total wall s", "mean s", "max s", "peak max_rss MB"]
    return _table(cols, rows)


def _versions() -> list[list[str]]:
    rows = [["python", platform.python_version()]]
    for pkg in PROVENANCE_PACKAGES:
        try:
            rows.append([pkg, importlib.metadata.version(pkg)])
        except importlib.metadata.PackageNotFoundError:
            rows.append([pkg, "not installed"])
    rows.append(["platform", platform.platform()])
    return rows


def _config_text(config: dict) -> str:
    try:
        import yaml

        return yaml.safe_dump(_json_safe(config), sort_keys=False, allow_unicode=True)
    except Exception:  # noqa: BLE001 - provenance must never break the report
        return json.dumps(_json_safe(config), indent=2, default=str)


# ----------------------------------------------------------------------------- overlays


def _load_ras(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        data = data[..., 0]
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return data, spacing


def _pick_cases(scores: pd.Series, n: int) -> list[tuple[str, str]]:
    """``(case, role)`` for best, median, worst (and evenly spaced ranks between)."""
    ranked = scores.sort_values(ascending=False, kind="stable")
    if n <= 0 or ranked.empty:
        return []
    idx = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
    out = []
    for i in idx:
        if i == 0:
            role = "best"
        elif i == len(ranked) - 1:
            role = "worst"
        elif len(idx) == 3:
            role = "median"
        else:
            role = f"rank {i + 1}/{len(ranked)}"
        out.append((str(ranked.index[i]), role))
    return out


def _overlay_cases(
    results: Path, inputs: Inputs, arms: list[str], reference: str, n: int
) -> tuple[list[F.OverlayCase], str, list[str]]:
    metrics = inputs.metrics
    scores = per_case(metrics, reference, "dice")
    basis = f"{reference} Dice"
    if scores.empty:
        scores = pd.to_numeric(metrics["dice"], errors="coerce").groupby(metrics["case"]).mean()
        basis = "mean Dice over arms"
    rows = inputs.manifest.set_index("case_id")
    fold_of = {c: int(f["fold"]) for f in inputs.folds["folds"] for c in f.get("test", [])}
    cases, problems = [], []
    for case, role in _pick_cases(scores, n):
        row = rows.loc[case] if case in rows.index else None
        if row is None or not row.get("label"):
            problems.append(f"{case}: no labelled row in the manifest")
            continue
        image_path, label_path = Path(row["image"]), Path(row["label"])
        absent = [str(p) for p in (image_path, label_path) if not p.is_file()]
        if absent:
            problems.append(f"{case}: not found {', '.join(absent)}")
            continue
        image, spacing = _load_ras(image_path)
        label, _ = _load_ras(label_path)
        preds = {}
        for arm in arms:
            pred = results / "predictions" / arm / f"fold{fold_of.get(case, -1)}" / f"{case}.nii.gz"
            if pred.is_file():
                p, _ = _load_ras(pred)
                if p.shape == label.shape:
                    preds[arm] = p
        title = f"{role}: {case}\n({basis} {scores[case]:.3f})"
        cases.append(F.OverlayCase(case, title, image, label, preds, spacing))
    return cases, basis, problems


# ----------------------------------------------------------------------------- build


def _per_arm_summary(metrics: pd.DataFrame, arms: list[str]) -> dict:
    out: dict[str, Any] = {}
    for arm in arms:
        cases = per_case(metrics, arm, "dice")
        entry: dict[str, Any] = {"n_cases": int(len(cases)), "mean_dice": float(cases.mean())}
        for metric in ("dice", "hd95"):
            s = summarise_arms(metrics[metrics["arm"] == arm], metric)
            entry[metric] = {
                r["class"]: {k: r[k] for k in ("n", "mean", "sd", "median")}
                for _, r in s.iterrows()
            }
        out[arm] = entry
    return out


class _Figures:
    """Collects figures: saves each PNG in ``figures_dir`` and keeps a data URI for HTML."""

    def __init__(self, figures_dir: Path) -> None:
        self.dir = Path(figures_dir)
        self.uris: dict[str, str] = {}

    def add(self, name: str, fig) -> str:
        png = F.to_png(fig)
        fig.clear()
        atomic_write_bytes(self.dir / f"{name}.png", png)
        self.uris[name] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return self.uris[name]


def build_report(
    results: Path,
    out_html: Path,
    figures_dir: Path,
    summary_json: Path,
    *,
    arms: list[str],
    reference_arm: str,
    classes: dict[int, str],
    config: dict,
    n_overlays: int = 3,
) -> None:
    """Write the HTML report, its figures as PNG files, and ``summary.json``.

    Args:
        results: the ``results`` folder of a run.
        out_html: the report to write (one self-contained file).
        figures_dir: folder for ``dice_boxplot.png``, ``hd95_boxplot.png``,
            ``paired_differences.png``, ``training_curves.png``, ``overlays.png`` and, when
            ``evaluation/label_fraction.csv`` exists, ``label_fraction.png``.
        summary_json: machine-readable summary (per-arm stats, comparisons, best arm).
        arms: arms in display order.
        reference_arm: the arm the others are compared against (usually ``scratch``).
        classes: ``{label value: class name}``, background excluded.
        config: the run's configuration, printed under provenance.
        n_overlays: cases drawn as overlays (best, median, worst, ...).

    Raises:
        ReportError: if the manifest, folds or metrics are missing (naming the file) or
            the metrics lack an arm.
    """
    results = Path(results)
    arms = list(arms)
    if reference_arm not in arms:
        raise ReportError(
            f"reference arm {reference_arm!r} is not among the arms {arms}. "
            "How to fix: name one of the configured arms as the reference."
        )
    inputs = load_inputs(results, arms)
    metrics = inputs.metrics
    class_names = [str(v) for v in classes.values() if str(v) in set(metrics["class"])]
    class_names += sorted(set(metrics["class"]) - set(class_names))

    per_arm = _per_arm_summary(metrics, arms)
    best_arm = max(arms, key=lambda a: np.nan_to_num(per_arm[a]["mean_dice"], nan=-1.0))
    comparisons = _comparisons(metrics, arms, reference_arm)
    dice_comparisons = [c for c in comparisons if c.metric == "dice"]

    figs = _Figures(figures_dir)
    figure_uris = {
        "dice_boxplot": figs.add(
            "dice_boxplot", F.metric_boxplot(metrics, arms, "dice", class_names)
        ),
        "hd95_boxplot": figs.add(
            "hd95_boxplot", F.metric_boxplot(metrics, arms, "hd95", class_names)
        ),
        "paired_differences": figs.add(
            "paired_differences",
            F.paired_differences(
                {a: per_case(metrics, a, "dice") for a in arms}, arms, reference_arm
            ),
        ),
    }
    if inputs.curves:
        figure_uris["training_curves"] = figs.add(
            "training_curves", F.training_curves(inputs.curves, arms)
        )
    overlay_cases, overlay_basis, overlay_problems = _overlay_cases(
        results, inputs, arms, reference_arm, n_overlays
    )
    if overlay_cases:
        figure_uris["overlays"] = figs.add(
            "overlays", F.overlays(overlay_cases, arms, ("axial", "coronal", "sagittal"))
        )
    label_fraction = None
    if inputs.label_fraction is not None and len(inputs.label_fraction):
        points = label_fraction_points(inputs.label_fraction, arms)
        figure_uris["label_fraction"] = figs.add(
            "label_fraction", F.label_fraction_curves(points, arms)
        )
        label_fraction = {
            "table": _label_fraction_table(points),
            "statements": label_fraction_statements(points, arms, reference_arm),
            "points": points.to_dict(orient="records"),
        }

    context = {
        "title": "medtl report",
        "arms": arms,
        "reference_arm": reference_arm,
        "class_names": class_names,
        "best_arm": best_arm,
        "best_mean_dice": _fmt(per_arm[best_arm]["mean_dice"]),
        "best_n_cases": per_arm[best_arm]["n_cases"],
        "statements": [c.statement for c in dice_comparisons],
        "hd95_statements": [c.statement for c in comparisons if c.metric == "hd95"],
        "dataset": _dataset_section(inputs),
        "plan": _table(["key", "value"], _flatten(inputs.plan), numeric_from=2)
        if inputs.plan
        else None,
        "folds": _folds_section(inputs),
        "arm_table": _arm_table(metrics, arms, class_names),
        "comparison_table": _comparison_table(comparisons) if comparisons else None,
        "figures": figure_uris,
        "load_reports": _load_report_table(inputs.load_reports),
        "trainable": _trainable_table(inputs.run_summaries, arms),
        "overlay_cases": [c.case for c in overlay_cases],
        "overlay_basis": overlay_basis,
        "overlay_problems": overlay_problems,
        "runtime": _runtime_table(inputs.benchmarks),
        "label_fraction": label_fraction,
        "config_text": _config_text(config),
        "versions": _table(["package", "version"], _versions(), numeric_from=2),
    }
    env = Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=True)
    html = env.get_template("report.html.j2").render(**context).lstrip()

    summary = {
        "arms": arms,
        "reference_arm": reference_arm,
        "classes": {str(k): v for k, v in classes.items()},
        "best_arm": {"arm": best_arm, "mean_dice": per_arm[best_arm]["mean_dice"]},
        "per_arm": per_arm,
        "comparisons": [asdict(c) for c in comparisons],
        "n_cases": int(len(inputs.manifest)),
        "n_evaluated_cases": int(metrics["case"].nunique()),
        "figures": sorted(figure_uris),
    }
    if label_fraction is not None:
        summary["label_fraction"] = {
            "points": label_fraction["points"],
            "statements": label_fraction["statements"],
        }
    atomic_write_bytes(
        Path(summary_json), (json.dumps(_json_safe(summary), indent=2) + "\n").encode("utf-8")
    )
    atomic_write_bytes(Path(out_html), html.encode("utf-8"))
