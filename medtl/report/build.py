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
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader

from medtl.evaluate.stats import per_case
from medtl.io.manifest import read_manifest
from medtl.kernel.errors import MedtlError
from medtl.kernel.files import atomic_write_bytes, atomic_write_text
from medtl.layout import predictions_dir, run_dir
from medtl.report import evaluation as E
from medtl.report import figures as F
from medtl.report.fractions import (
    label_fraction_points,
    label_fraction_statements,
    label_fraction_table,
    read_label_fraction,
    with_full_run,
)
from medtl.report.provenance import provenance_section
from medtl.report.spec import load_spec, render_spec
from medtl.report.tables import fmt, fmt_value, json_safe, parse_triplet, table

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


# ----------------------------------------------------------------------------- inputs


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
                if seed is None:  # an earlier version's layout: no seed folder
                    folder = results / "train" / arm / f"fold{k}"
                else:
                    folder = run_dir(results, arm, seed, k)
                out.append((arm, seed, k, folder))
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
            key = {"arm": arm, "seed": seed, "fold": k, "weights": folder / "best.pt"}
            out.append({**record, **key})
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
    return table(cols, rows, numeric_from=2)


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
    return inputs


# ----------------------------------------------------------------------------- label fractions

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
    spacing = np.array([parse_triplet(s) for s in m.get("spacing", [])] or np.zeros((0, 3)))
    shape = np.array([parse_triplet(s) for s in m.get("shape", [])] or np.zeros((0, 3)))
    rows = []
    for i, axis in enumerate("xyz"):
        sp = spacing[:, i] if len(spacing) else np.array([math.nan])
        sh = shape[:, i] if len(shape) else np.array([math.nan])
        rows.append(
            [axis]
            + [fmt(f(sp), 2) for f in (np.nanmin, np.nanmedian, np.nanmax)]
            + [fmt(f(sh), 0) for f in (np.nanmin, np.nanmedian, np.nanmax)]
        )
    cols = ["case_id", "patient_id", "modality", "spacing", "shape", "orientation"]
    cols = [c for c in cols if c in m.columns]
    case_rows = [
        [*(r[c] for c in cols), "yes" if r.get("label", "") else "no"] for _, r in m.iterrows()
    ]
    section = {
        "facts": table(["", "value"], facts, numeric_from=2),
        "grid": table(
            ["axis", "spacing min", "median", "max (mm)", "shape min", "median", "max (voxels)"],
            rows,
        ),
        "cases": table([*cols, "label"], case_rows, numeric_from=len(cols) + 1),
        "rejected": None,
    }
    if inputs.rejected is not None and len(inputs.rejected):
        r = inputs.rejected
        cols = [c for c in ("path", "reason", "fix") if c in r.columns]
        section["rejected"] = table(cols, r[cols].values.tolist(), numeric_from=len(cols))
    return section


def _flatten(d: dict, prefix: str = "") -> list[list[str]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, key + ".")
        else:
            rows.append([key, fmt_value(v)])
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
    return {"table": table(cols, rows), "meta": meta}


def _load_report_table(reports: list[dict]) -> dict | None:
    """Per arm and fold, what the checkpoint initialised (the first seed's runs: every
    seed loads the same weights)."""
    if not reports:
        return None
    first_seed = {}
    for r in reports:
        first_seed.setdefault(r["arm"], r.get("seed"))
    rows = []
    for r in [r for r in reports if r.get("seed") == first_seed[r["arm"]]]:
        total, loaded = r.get("encoder_params_total"), r.get("encoder_params_loaded")
        rows.append(
            [
                r["arm"],
                r["fold"],
                r.get("format", "–"),
                Path(str(r.get("source", "–"))).name,
                fmt(r.get("fraction_loaded")),
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
    return table(cols, rows, numeric_from=4)


def _runtime_frame(bench: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per workflow rule: jobs, total/mean/max wall seconds and peak RSS (MB)."""
    if bench is None or bench.empty:
        return None
    bench = bench.copy()
    bench["s"] = pd.to_numeric(bench["s"], errors="coerce")
    rss = pd.to_numeric(bench.get("max_rss", pd.Series(np.nan, index=bench.index)), errors="coerce")
    bench["max_rss"] = rss
    g = bench.groupby("rule")
    return pd.DataFrame(
        {
            "jobs": g.size(),
            "total": g["s"].sum(),
            "mean": g["s"].mean(),
            "max": g["s"].max(),
            "rss": g["max_rss"].max(),
        }
    ).sort_values("total", ascending=False)


def _runtime_records(bench: pd.DataFrame | None) -> list[dict]:
    frame = _runtime_frame(bench)
    return [] if frame is None else frame.reset_index().to_dict(orient="records")


def _runtime_table(bench: pd.DataFrame | None) -> dict | None:
    frame = _runtime_frame(bench)
    if frame is None:
        return None
    rows = [
        [
            rule,
            int(r["jobs"]),
            fmt(r["total"], 1),
            fmt(r["mean"], 1),
            fmt(r["max"], 1),
            fmt(r["rss"], 0),
        ]
        for rule, r in frame.iterrows()
    ]
    total = fmt(float(frame["total"].sum()), 1)
    rows.append(["all rules", int(frame["jobs"].sum()), total, "", "", ""])
    cols = ["rule", "jobs", "total wall s", "mean s", "max s", "peak max_rss MB"]
    return table(cols, rows)


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


def _first_prediction(results: Path, metrics: pd.DataFrame, arm: str, fold: int, case: str) -> Path:
    """The mask of ``case`` by the arm's first seed (the run of an earlier version: its
    only one)."""
    seed = arm_seeds(metrics, [arm])[arm]
    if not seed or seed[0] is None:
        return results / "predictions" / arm / f"fold{fold}" / f"{case}.nii.gz"
    return predictions_dir(results, arm, seed[0], fold) / f"{case}.nii.gz"


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
            pred = _first_prediction(results, inputs.metrics, arm, fold_of.get(case, -1), case)
            if pred.is_file():
                p, _ = _load_ras(pred)
                if p.shape == label.shape:
                    preds[arm] = p
        title = f"{role}: {case}\n({basis} {scores[case]:.3f})"
        cases.append(F.OverlayCase(case, title, image, label, preds, spacing))
    return cases, basis, problems


# ----------------------------------------------------------------------------- build


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


def _volumes(metrics: pd.DataFrame, class_names: list[str]) -> dict[str, np.ndarray]:
    """Reference volume (ml) of every evaluated case, per class (from one arm's rows)."""
    if "volume_ref_ml" not in metrics.columns or metrics.empty:
        return {}
    first = metrics[metrics["arm"] == metrics["arm"].iloc[0]]
    return {
        cls: pd.to_numeric(first.loc[first["class"] == cls, "volume_ref_ml"], errors="coerce")
        .dropna()
        .to_numpy()
        for cls in class_names
    }


def _convention(config: dict, metrics: pd.DataFrame) -> str:
    """The sentence that states how empty masks and NSD were scored."""
    ev = config.get("evaluate") or {}
    empty = ev.get("empty_dice", "one")
    both = "1 (a correct empty answer)" if empty == "one" else "NaN (left out of the means)"
    tol = ev.get("nsd_tolerance_mm", 2.0)
    per = ev.get("nsd_tolerance_by_class") or {}
    per_txt = "".join(f", {k}: {v} mm" for k, v in per.items())
    counts = ""
    if "empty" in metrics.columns:
        flags = metrics["empty"]
        found = flags[flags != ""].value_counts()
        if len(found):
            counts = (
                " Found: " + ", ".join(f"{v} rows with {k} empty" for k, v in found.items()) + "."
            )
    return (
        f"When reference and prediction are both empty, Dice, IoU and NSD count as {both}; "
        "when only one is empty they are 0 and the surface distances (HD95, ASSD) are "
        f"undefined and left out. NSD tolerance: {tol} mm{per_txt}.{counts}"
    )


def _write_tables(folder: Path, frames: dict[str, pd.DataFrame]) -> None:
    for name, df in frames.items():
        atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False))


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
    tables_dir: Path | None = None,
) -> dict:
    """Write the HTML report, its figures as PNG files, its tables as CSV and ``summary.json``.

    Args:
        results: the ``results`` folder of a run.
        out_html: the report to write (one self-contained file).
        figures_dir: folder for the figures as PNG (``dice_boxplot.png``,
            ``nsd_boxplot.png``, ``hd95_boxplot.png``, ``paired_differences.png``,
            ``difference_forest.png``, ``spacing_histogram.png``, ``label_volumes.png``,
            ``training_curves.png``, ``overlays.png`` and, with label fractions,
            ``label_fraction.png``), each when its data exists.
        summary_json: every number of the report, machine-readable.
        arms: arms in display order.
        reference_arm: the arm the others are compared against (usually ``scratch``).
        classes: ``{label value: class name}``, background excluded.
        config: the run's configuration (secrets redacted), shown under provenance.
        n_overlays: cases drawn as overlays (best, median, worst, ...).
        tables_dir: folder for ``per_arm.csv``, ``comparisons.csv``, ``per_fold.csv`` and
            ``per_case.csv`` (default: ``tables`` beside ``summary_json``).

    Returns:
        The summary written to ``summary_json``.

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
    n_boot = int((config.get("evaluate") or {}).get("bootstrap", 2000))
    groups = E.patient_groups(inputs.manifest, inputs.folds)
    ev = E.evaluate_arms(metrics, arms, reference_arm, groups, n_boot=n_boot, seed=0)
    runs = E.run_variation(metrics, arms, groups, n_boot=n_boot, seed=0)
    case_dice = {a: per_case(metrics, a, "dice") for a in arms}
    mean_dice = {a: float(case_dice[a].mean()) for a in arms}
    best_arm = max(arms, key=lambda a: np.nan_to_num(mean_dice[a], nan=-1.0))

    figs = _Figures(figures_dir)
    for metric in ("dice", "nsd", "hd95"):
        if metric in ev.summaries:
            figs.add(f"{metric}_boxplot", F.metric_boxplot(metrics, arms, metric, class_names))
    figs.add("paired_differences", F.paired_differences(case_dice, arms, reference_arm))
    figs.add(
        "difference_forest",
        F.difference_forest(
            E.forest_rows(ev.versus_reference),
            "Dice",
            noise_floor=runs.pooled.aa_difference if runs.pooled is not None else None,
        ),
    )
    figs.add("seed_spread", F.seed_spread(runs.per_seed, runs.overall, arms))
    spacing = np.array([parse_triplet(s) for s in inputs.manifest.get("spacing", [])])
    if spacing.size:
        figs.add("spacing_histogram", F.spacing_histogram(spacing))
    volumes = _volumes(metrics, class_names)
    if volumes:
        figs.add("label_volumes", F.volume_distribution(volumes))
    if inputs.curves:
        figs.add("training_curves", F.training_curves(inputs.curves, arms))
    overlay_cases, overlay_basis, overlay_problems = _overlay_cases(
        results, inputs, arms, reference_arm, n_overlays
    )
    if overlay_cases:
        figs.add("overlays", F.overlays(overlay_cases, arms, ("axial", "coronal", "sagittal")))
    label_fraction = None
    if inputs.label_fraction is not None and len(inputs.label_fraction):
        fractions = with_full_run(
            inputs.label_fraction, inputs.metrics, reference_arm, inputs.folds
        )
        points = label_fraction_points(fractions, arms, groups, n_boot=n_boot)
        figs.add("label_fraction", F.label_fraction_curves(points, arms))
        label_fraction = {
            "table": label_fraction_table(points),
            "statements": label_fraction_statements(points, arms, reference_arm),
            "points": points.to_dict(orient="records"),
        }

    folds_table, folds_df = E.folds_metric_table(metrics)
    cases_table, cases_df = E.cases_table(metrics, arms)
    provenance = provenance_section(config, inputs.run_records, inputs.folds)
    dice_versus = [c for c in ev.versus_reference if c.metric == "dice"]
    context = {
        "title": "medtl report",
        "arms": arms,
        "reference_arm": reference_arm,
        "class_names": class_names,
        "best_arm": best_arm,
        "best_mean_dice": fmt(mean_dice[best_arm]),
        "best_n_cases": int(len(case_dice[best_arm])),
        "verdict": ev.verdict,
        "runs_statement": runs.statement,
        "runs": {
            "per_seed": E.per_seed_table(runs.per_seed),
            "floors": E.noise_floor_table(runs),
            "statements": [f.statement for f in runs.floors],
            "pooled": runs.pooled.aa_difference if runs.pooled is not None else None,
        },
        "statements": [c.statement for c in dice_versus],
        "other_statements": [c.statement for c in ev.versus_reference if c.metric != "dice"],
        "convention": _convention(config, metrics),
        "dataset": _dataset_section(inputs),
        "plan": table(["key", "value"], _flatten(inputs.plan), numeric_from=2)
        if inputs.plan
        else None,
        "folds": _folds_section(inputs),
        "arm_table": E.arm_table(ev, arms, class_names),
        "secondary_table": E.secondary_table(metrics, arms, class_names),
        "comparison_table": E.comparison_table(ev.versus_reference)
        if ev.versus_reference
        else None,
        "pairs_table": E.comparison_table(ev.all_pairs) if len(ev.all_pairs) > 1 else None,
        "fold_table": folds_table,
        "case_table": cases_table,
        "postprocess": E.postprocess_table(inputs.postprocess),
        "figures": figs.uris,
        "load_reports": _load_report_table(inputs.load_reports),
        "trainable": _trainable_table(inputs.run_summaries, arms),
        "overlay_cases": [c.case for c in overlay_cases],
        "overlay_basis": overlay_basis,
        "overlay_problems": overlay_problems,
        "runtime": _runtime_table(inputs.benchmarks),
        "label_fraction": label_fraction,
        "provenance": provenance,
    }
    present = {
        "plan": context["plan"] is not None,
        "postprocess": context["postprocess"] is not None,
        "label-fraction": label_fraction is not None,
        "training": "training_curves" in figs.uris,
        "weights": context["load_reports"] is not None,
        "overlays": bool(overlay_cases or overlay_problems),
        "runtime": context["runtime"] is not None,
    }
    values = {
        "reference_arm": reference_arm,
        "folds_meta": context["folds"]["meta"],
        "overlay_basis": overlay_basis,
        "overlay_cases": ", ".join(c.case for c in overlay_cases),
    }
    context["sections"], context["captions"] = render_spec(load_spec(), values, present)
    env = Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=True)
    html = env.get_template("report.html.j2").render(**context).lstrip()

    per_arm_df = pd.concat(
        [df.assign(metric=m) for m, df in ev.summaries.items()], ignore_index=True
    )
    comparisons_df = pd.DataFrame(
        [{"family": "versus_reference", **asdict(c)} for c in ev.versus_reference]
        + [{"family": "all_pairs", **asdict(c)} for c in ev.all_pairs]
    )
    tables_dir = Path(tables_dir) if tables_dir else Path(summary_json).parent / "tables"
    _write_tables(
        tables_dir,
        {
            "per_arm": per_arm_df,
            "comparisons": comparisons_df,
            "per_fold": folds_df,
            "per_case": cases_df,
        },
    )
    summary = {
        "arms": arms,
        "reference_arm": reference_arm,
        "classes": {str(k): v for k, v in classes.items()},
        "best_arm": {"arm": best_arm, "mean_dice": mean_dice[best_arm]},
        "mean_dice": mean_dice,
        "convention": context["convention"],
        **E.summary_records(ev),
        "runs": E.run_records(runs),
        "per_fold": folds_df.to_dict(orient="records"),
        "per_case": cases_df.to_dict(orient="records"),
        "postprocess": inputs.postprocess,
        "dataset": {
            "cases": int(len(inputs.manifest)),
            "patients": int(inputs.manifest["patient_id"].nunique())
            if "patient_id" in inputs.manifest
            else None,
            "reference_volume_ml": {k: v.tolist() for k, v in volumes.items()},
        },
        "n_cases": int(len(inputs.manifest)),
        "n_evaluated_cases": int(metrics["case"].nunique()),
        "runtime": _runtime_records(inputs.benchmarks),
        "provenance": provenance["record"],
        "figures": sorted(figs.uris),
    }
    if label_fraction is not None:
        summary["label_fraction"] = {
            "points": label_fraction["points"],
            "statements": label_fraction["statements"],
        }
    summary = json_safe(summary)
    atomic_write_bytes(Path(summary_json), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    atomic_write_bytes(Path(out_html), html.encode("utf-8"))
    return summary
