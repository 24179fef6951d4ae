"""Build the self-contained HTML report of a workflow run.

:func:`build_report` reads the result tree (manifest, folds, metrics, and whatever
optional outputs exist: plan, training curves, load reports, benchmarks, predictions),
draws the figures, and writes three things atomically: one HTML file that opens
offline (inline CSS, every figure a base64 PNG, no JavaScript), the same figures as PNG
files for Snakemake's report, and ``summary.json`` with the numbers in machine-readable
form.

What it reads is in :mod:`medtl.report.inputs`; the sections on data and training in
:mod:`medtl.report.sections`; the comparisons in :mod:`medtl.report.comparisons` and
:mod:`medtl.report.run_variation`; the overlays in :mod:`medtl.report.overlays`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader

from medtl.evaluate.cases import per_case, per_case_runs
from medtl.kernel.files import atomic_write_bytes, atomic_write_text
from medtl.report import comparisons, figures, run_variation
from medtl.report.fractions import (
    label_fraction_points,
    label_fraction_statements,
    label_fraction_table,
    with_full_run,
)
from medtl.report.inputs import Inputs, ReportError, load_inputs
from medtl.report.overlays import OverlayCase, draw_overlays, overlay_cases
from medtl.report.provenance import provenance_section
from medtl.report.sections import (
    dataset_section,
    flatten,
    folds_section,
    load_report_table,
    runtime_records,
    runtime_table,
    trainable_table,
)
from medtl.report.shift import gain_figure, shift_records, shift_section
from medtl.report.spec import load_spec, render_spec
from medtl.report.tables import fmt, json_safe, parse_triplet, table
from medtl.report.trust import (
    calibration_statement,
    calibration_table,
    failure_statement,
    failure_table,
    flagged_overlays,
    flagged_table,
    model_table,
    trust_records,
)
from medtl.report.trust_figures import reliability_diagram, risk_coverage_figure
from medtl.trust.calibration import CalibrationFit
from medtl.trust.failure import FailureAssessment

_TEMPLATES = Path(__file__).parent / "templates"


class _Figures:
    """Collects figures: saves each PNG in ``figures_dir`` and keeps a data URI for HTML."""

    def __init__(self, figures_dir: Path) -> None:
        self.dir = Path(figures_dir)
        self.uris: dict[str, str] = {}

    def add(self, name: str, fig) -> str:
        png = figures.to_png(fig)
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


@dataclass
class _Analysis:
    """The statistics every part of the report draws on."""

    inputs: Inputs
    arms: list[str]
    reference_arm: str
    class_names: list[str]
    groups: pd.Series
    n_boot: int
    ev: comparisons.Evaluation
    runs: run_variation.RunVariation
    case_dice: dict[str, pd.Series]
    mean_dice: dict[str, float]
    best_arm: str
    shift: dict | None = None
    shift_gain: list = field(default_factory=list)


@dataclass
class _Drawn:
    """What drawing the figures found out besides the figures."""

    volumes: dict[str, np.ndarray]
    overlay_cases: list[OverlayCase]
    overlay_basis: str
    overlay_problems: list[str]
    label_fraction: dict | None
    flagged_problems: list[str]


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
    analysis = _analyse(inputs, arms, reference_arm, classes, config)
    figs = _Figures(figures_dir)
    drawn = _draw_figures(figs, results, analysis, n_overlays)
    folds_table, folds_df = comparisons.folds_metric_table(inputs.metrics)
    cases_table, cases_df = comparisons.cases_table(inputs.metrics, arms)
    provenance = provenance_section(config, inputs.run_records, inputs.folds)
    context = _context(analysis, drawn, figs, config, folds_table, cases_table, provenance)
    html = _render(context, drawn, figs)
    tables_dir = Path(tables_dir) if tables_dir else Path(summary_json).parent / "tables"
    _write_tables(
        tables_dir,
        {
            "per_arm": pd.concat(
                [df.assign(metric=m) for m, df in analysis.ev.summaries.items()],
                ignore_index=True,
            ),
            "comparisons": pd.DataFrame(
                [{"family": "versus_reference", **asdict(c)} for c in analysis.ev.versus_reference]
                + [{"family": "all_pairs", **asdict(c)} for c in analysis.ev.all_pairs]
            ),
            "per_fold": folds_df,
            "per_case": cases_df,
        },
    )
    summary = _summary(analysis, drawn, figs, context, classes, folds_df, cases_df, provenance)
    atomic_write_bytes(Path(summary_json), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    atomic_write_bytes(Path(out_html), html.encode("utf-8"))
    return summary


def _analyse(
    inputs: Inputs, arms: list[str], reference_arm: str, classes: dict[int, str], config: dict
) -> _Analysis:
    """Summaries, comparisons and run-to-run variation of the arms, and the best arm."""
    metrics = inputs.metrics
    class_names = [str(v) for v in classes.values() if str(v) in set(metrics["class"])]
    class_names += sorted(set(metrics["class"]) - set(class_names))
    n_boot = int((config.get("evaluate") or {}).get("bootstrap", 2000))
    groups = comparisons.patient_groups(inputs.manifest, inputs.folds)
    ev = comparisons.evaluate_arms(metrics, arms, reference_arm, groups, n_boot=n_boot, seed=0)
    runs = run_variation.run_variation(metrics, arms, groups, n_boot=n_boot, seed=0)
    case_dice = {a: per_case(metrics, a, "dice") for a in arms}
    mean_dice = {a: float(case_dice[a].mean()) for a in arms}
    best_arm = max(arms, key=lambda a: np.nan_to_num(mean_dice[a], nan=-1.0))
    seeds = {a: per_case_runs(metrics, a).shape[1] for a in arms}
    shift, shift_gain = shift_section(
        inputs.shift, inputs.shift_cases, case_dice, arms, reference_arm, seeds
    )
    return _Analysis(
        inputs,
        arms,
        reference_arm,
        class_names,
        groups,
        n_boot,
        ev,
        runs,
        case_dice,
        mean_dice,
        best_arm,
        shift,
        shift_gain,
    )


def _draw_figures(figs: _Figures, results: Path, a: _Analysis, n_overlays: int) -> _Drawn:
    """Every figure whose data exists, in the report's order."""
    metrics, arms, inputs, runs = a.inputs.metrics, a.arms, a.inputs, a.runs
    for metric in ("dice", "nsd", "hd95"):
        if metric in a.ev.summaries:
            figs.add(
                f"{metric}_boxplot", figures.metric_boxplot(metrics, arms, metric, a.class_names)
            )
    figs.add("paired_differences", figures.paired_differences(a.case_dice, arms, a.reference_arm))
    figs.add(
        "difference_forest",
        figures.difference_forest(
            comparisons.forest_rows(a.ev.versus_reference),
            "Dice",
            noise_floor=runs.pooled.aa_difference if runs.pooled is not None else None,
        ),
    )
    figs.add("seed_spread", figures.seed_spread(runs.per_seed, runs.overall, arms))
    spacing = np.array([parse_triplet(s) for s in inputs.manifest.get("spacing", [])])
    if spacing.size:
        figs.add("spacing_histogram", figures.spacing_histogram(spacing))
    volumes = _volumes(metrics, a.class_names)
    if volumes:
        figs.add("label_volumes", figures.volume_distribution(volumes))
    if inputs.curves:
        figs.add("training_curves", figures.training_curves(inputs.curves, arms))
    cases, basis, problems = overlay_cases(results, inputs, arms, a.reference_arm, n_overlays)
    if cases:
        figs.add("overlays", draw_overlays(cases, arms, ("axial", "coronal", "sagittal")))
    label_fraction = None
    if inputs.label_fraction is not None and len(inputs.label_fraction):
        fractions = with_full_run(
            inputs.label_fraction, inputs.metrics, a.reference_arm, inputs.folds
        )
        points = label_fraction_points(fractions, arms, a.groups, n_boot=a.n_boot)
        figs.add("label_fraction", figures.label_fraction_curves(points, arms))
        label_fraction = {
            "table": label_fraction_table(points),
            "statements": label_fraction_statements(points, arms, a.reference_arm),
            "points": points.to_dict(orient="records"),
        }
    flagged_problems = _draw_trust(figs, results, a)
    if a.shift is not None and a.shift["per_case_distance"]:
        figs.add("shift_gain", gain_figure(a.shift_gain, arms))
    return _Drawn(volumes, cases, basis, problems, label_fraction, flagged_problems)


def _draw_trust(figs: _Figures, results: Path, a: _Analysis) -> list[str]:
    """The reliability diagram, the risk–coverage curves and the best arm's flagged cases."""
    trust = a.inputs.trust
    if not trust:
        return []
    fits = {arm: CalibrationFit.from_dict(rec["calibration"]) for arm, rec in trust.items()}
    figs.add("reliability", reliability_diagram(fits))
    assessed = {arm: FailureAssessment.from_dict(rec["failure"]) for arm, rec in trust.items()}
    figs.add("risk_coverage", risk_coverage_figure(assessed))
    arm = a.best_arm if a.best_arm in trust else next(iter(trust))
    cases, problems = flagged_overlays(results, a.inputs, arm, trust[arm])
    if cases:
        figs.add("flagged_overlays", draw_overlays(cases, [arm], ("axial", "coronal", "sagittal")))
    return problems


def _context(
    a: _Analysis,
    drawn: _Drawn,
    figs: _Figures,
    config: dict,
    folds_table: dict,
    cases_table: dict,
    provenance: dict,
) -> dict:
    """What the template shows."""
    inputs, metrics, ev, runs, arms = a.inputs, a.inputs.metrics, a.ev, a.runs, a.arms
    dice_versus = [c for c in ev.versus_reference if c.metric == "dice"]
    return {
        "title": "medtl report",
        "arms": arms,
        "reference_arm": a.reference_arm,
        "class_names": a.class_names,
        "best_arm": a.best_arm,
        "best_mean_dice": fmt(a.mean_dice[a.best_arm]),
        "best_n_cases": int(len(a.case_dice[a.best_arm])),
        "verdict": ev.verdict,
        "runs_statement": runs.statement,
        "runs": {
            "per_seed": run_variation.per_seed_table(runs.per_seed),
            "floors": run_variation.noise_floor_table(runs),
            "statements": [f.statement for f in runs.floors],
            "pooled": runs.pooled.aa_difference if runs.pooled is not None else None,
        },
        "statements": [c.statement for c in dice_versus],
        "other_statements": [c.statement for c in ev.versus_reference if c.metric != "dice"],
        "convention": _convention(config, metrics),
        "dataset": dataset_section(inputs),
        "plan": table(
            ["key", "value"],
            flatten({k: v for k, v in inputs.plan.items() if k != "warnings"}),
            numeric_from=2,
        )
        if inputs.plan
        else None,
        "plan_warnings": list((inputs.plan or {}).get("warnings") or []),
        "folds": folds_section(inputs),
        "arm_table": comparisons.arm_table(ev, arms, a.class_names),
        "secondary_table": comparisons.secondary_table(metrics, arms, a.class_names),
        "comparison_table": comparisons.comparison_table(ev.versus_reference)
        if ev.versus_reference
        else None,
        "pairs_table": comparisons.comparison_table(ev.all_pairs)
        if len(ev.all_pairs) > 1
        else None,
        "fold_table": folds_table,
        "case_table": cases_table,
        "postprocess": comparisons.postprocess_table(inputs.postprocess),
        "figures": figs.uris,
        "load_reports": load_report_table(inputs.load_reports),
        "trainable": trainable_table(inputs.run_summaries, arms),
        "overlay_cases": [c.case for c in drawn.overlay_cases],
        "overlay_basis": drawn.overlay_basis,
        "overlay_problems": drawn.overlay_problems,
        "runtime": runtime_table(inputs.benchmarks),
        "label_fraction": drawn.label_fraction,
        "trust": _trust_context(inputs, drawn),
        "model_size": model_table(inputs.trust, inputs.run_summaries),
        "shift": a.shift,
        "provenance": provenance,
    }


def _trust_context(inputs: Inputs, drawn: _Drawn) -> dict | None:
    """The trust section's tables and sentences (None without any arm's fit)."""
    trust = inputs.trust
    if not trust:
        return None
    return {
        "calibration": calibration_table(trust),
        "calibration_statements": [calibration_statement(a, r) for a, r in trust.items()],
        "failure": failure_table(trust),
        "failure_statements": [failure_statement(a, r) for a, r in trust.items()],
        "flagged": flagged_table(trust),
        "flagged_problems": drawn.flagged_problems,
    }


def _render(context: dict, drawn: _Drawn, figs: _Figures) -> str:
    """The HTML: the sections present and their captions (``spec.yaml``), then the template."""
    present = {
        "plan": context["plan"] is not None,
        "postprocess": context["postprocess"] is not None,
        "label-fraction": drawn.label_fraction is not None,
        "training": "training_curves" in figs.uris,
        "weights": context["load_reports"] is not None,
        "overlays": bool(drawn.overlay_cases or drawn.overlay_problems),
        "runtime": context["runtime"] is not None,
        "trust": context["trust"] is not None,
        "model-size": context["model_size"] is not None,
        "shift": context["shift"] is not None,
    }
    values = {
        "reference_arm": context["reference_arm"],
        "folds_meta": context["folds"]["meta"],
        "overlay_basis": drawn.overlay_basis,
        "overlay_cases": ", ".join(c.case for c in drawn.overlay_cases),
    }
    context["sections"], context["captions"] = render_spec(load_spec(), values, present)
    env = Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=True)
    return env.get_template("report.html.j2").render(**context).lstrip()


def _summary(
    a: _Analysis,
    drawn: _Drawn,
    figs: _Figures,
    context: dict,
    classes: dict[int, str],
    folds_df: pd.DataFrame,
    cases_df: pd.DataFrame,
    provenance: dict,
) -> dict:
    """Every number of the report, for ``summary.json`` (JSON-safe)."""
    inputs = a.inputs
    summary = {
        "arms": a.arms,
        "reference_arm": a.reference_arm,
        "classes": {str(k): v for k, v in classes.items()},
        "best_arm": {"arm": a.best_arm, "mean_dice": a.mean_dice[a.best_arm]},
        "mean_dice": a.mean_dice,
        "convention": context["convention"],
        **comparisons.summary_records(a.ev),
        "runs": run_variation.run_records(a.runs),
        "per_fold": folds_df.to_dict(orient="records"),
        "per_case": cases_df.to_dict(orient="records"),
        "postprocess": inputs.postprocess,
        "dataset": {
            "cases": int(len(inputs.manifest)),
            "patients": int(inputs.manifest["patient_id"].nunique())
            if "patient_id" in inputs.manifest
            else None,
            "reference_volume_ml": {k: v.tolist() for k, v in drawn.volumes.items()},
        },
        "n_cases": int(len(inputs.manifest)),
        "n_evaluated_cases": int(inputs.metrics["case"].nunique()),
        "runtime": runtime_records(inputs.benchmarks),
        "trust": trust_records(inputs.trust),
        "shift": shift_records(inputs.shift, a.shift_gain),
        "provenance": provenance["record"],
        "figures": sorted(figs.uris),
    }
    if drawn.label_fraction is not None:
        summary["label_fraction"] = {
            "points": drawn.label_fraction["points"],
            "statements": drawn.label_fraction["statements"],
        }
    return json_safe(summary)
