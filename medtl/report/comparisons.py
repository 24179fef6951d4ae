"""The comparison sections of the report: per-arm figures with CIs, paired comparisons,
fold and case tables, and the post-processing chosen on cross-validation.

Every function here turns the ``metrics.csv`` table (and the post-processing decisions)
into plain data: tables for the template (see :func:`medtl.report.tables.table`) and
records for ``summary.json``. The numbers come from :mod:`medtl.evaluate`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from medtl.evaluate.cases import (
    ALPHA,
    METHOD_POOLED,
    METHOD_RUNS,
    StatsError,
    per_case_table,
)
from medtl.evaluate.comparisons import (
    PairedComparison,
    compare_all_pairs,
    compare_arms,
    holm_family,
    verdict,
)
from medtl.evaluate.multiplicity import format_p_value
from medtl.evaluate.summaries import fold_table, summarise_arms
from medtl.report.tables import fmt, table

#: Metrics of the per-arm table that get a bootstrap CI: column, heading, digits.
CI_METRICS = (("dice", "Dice", 3), ("nsd", "NSD", 3), ("hd95", "HD95 mm", 2))

#: Metrics compared between arms (paired), in the order shown.
COMPARED = ("dice", "nsd", "hd95")


@dataclass(frozen=True)
class Evaluation:
    """Everything the report says about the metrics.

    Attributes:
        summaries: per metric, :func:`summarise_arms` with CIs.
        versus_reference: each arm against the reference arm, per metric, with Holm
            adjustment over the arms (one family per metric).
        all_pairs: every pair of arms on Dice, Holm-adjusted over the pairs.
        verdict: one sentence: the best arm and whether the evidence holds.
    """

    summaries: dict[str, pd.DataFrame]
    versus_reference: list[PairedComparison]
    all_pairs: list[PairedComparison]
    verdict: str


def patient_groups(manifest: pd.DataFrame, folds: dict) -> pd.Series:
    """Case → patient, the resampling unit of the bootstraps."""
    groups = folds.get("groups") or {}
    if not groups and "patient_id" in manifest:
        groups = dict(zip(manifest["case_id"], manifest["patient_id"], strict=True))
    return pd.Series(groups, dtype=object)


def _has(metrics: pd.DataFrame, metric: str) -> bool:
    return (
        metric in metrics.columns and pd.to_numeric(metrics[metric], errors="coerce").notna().any()
    )


def evaluate_arms(
    metrics: pd.DataFrame,
    arms: list[str],
    reference: str,
    groups: pd.Series,
    n_boot: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """Summaries, comparisons with the reference, all pairs and the verdict.

    Raises:
        StatsError: if the reference shares no case with another arm on Dice.
    """
    summaries = {
        m: summarise_arms(metrics, m, groups=groups, n_boot=n_boot, seed=seed)
        for m in ("dice", "iou", "nsd", "hd95", "assd")
        if _has(metrics, m)
    }
    versus: list[PairedComparison] = []
    for metric in COMPARED:
        if not _has(metrics, metric):
            continue
        family = []
        for arm in arms:
            if arm == reference:
                continue
            try:
                family.append(
                    compare_arms(
                        metrics,
                        arm,
                        reference,
                        metric=metric,
                        seed=seed,
                        n_boot=n_boot,
                        groups=groups,
                    )
                )
            except StatsError:
                if metric == "dice":
                    raise
        versus += holm_family(family)
    pairs = (
        compare_all_pairs(metrics, arms, "dice", groups=groups, n_boot=n_boot, seed=seed)
        if len(arms) > 1
        else []
    )
    return Evaluation(summaries, versus, pairs, verdict(metrics, arms, pairs, "dice"))


def _ci_cell(row: pd.Series, digits: int) -> str:
    if not math.isfinite(float(row["mean"])):
        return "–"
    ci = (
        f" ({fmt(row['ci_low'], digits)}–{fmt(row['ci_high'], digits)})"
        if math.isfinite(float(row.get("ci_low", math.nan)))
        else ""
    )
    return f"{fmt(row['mean'], digits)}{ci}"


def arm_table(ev: Evaluation, arms: list[str], class_names: list[str]) -> dict:
    """Per arm and class: n, then mean (95 % CI), median and sd of Dice; NSD and HD95."""
    shown = [(m, h, d) for m, h, d in CI_METRICS if m in ev.summaries]
    index = {m: ev.summaries[m].set_index(["arm", "class"]) for m, _, _ in shown}
    rows = []
    for arm in arms:
        for cls in class_names:
            if (arm, cls) not in index["dice"].index:
                continue
            d = index["dice"].loc[(arm, cls)]
            row: list[Any] = [
                arm,
                cls,
                int(d["n"]),
                int(d.get("seeds", 1)),
                _ci_cell(d, 3),
                fmt(d.get("run_sd", math.nan)),
                fmt(d["median"]),
                fmt(d["sd"]),
            ]
            for metric, _, digits in shown[1:]:
                s = index[metric].loc[(arm, cls)] if (arm, cls) in index[metric].index else None
                row.append("–" if s is None else _ci_cell(s, digits))
                if metric == "hd95":
                    row.append("–" if s is None else fmt(s["median"], digits))
            rows.append(row)
    cols = ["arm", "class", "n", "seeds", "Dice mean (95 % CI)", "run SD", "median", "sd"]
    for metric, heading, _ in shown[1:]:
        cols.append(f"{heading} mean (95 % CI)")
        if metric == "hd95":
            cols.append("HD95 median")
    return table(cols, rows, numeric_from=2)


def _sum(sel: pd.DataFrame, col: str) -> float:
    return float(pd.to_numeric(sel[col], errors="coerce").sum()) if col in sel else math.nan


def secondary_table(metrics: pd.DataFrame, arms: list[str], class_names: list[str]) -> dict | None:
    """Per arm and class: IoU, ASSD, volume error, lesion detection and empty cases."""
    if "iou" not in metrics.columns:
        return None
    rows = []
    for arm in arms:
        for cls in class_names:
            sel = metrics[(metrics["arm"] == arm) & (metrics["class"] == cls)]
            if sel.empty:
                continue
            num = {
                c: pd.to_numeric(sel[c], errors="coerce")
                for c in sel.columns
                if c not in ("arm", "case", "class", "empty")
            }
            tp, fn, fp = (_sum(sel, c) for c in ("lesion_tp", "lesion_fn", "lesion_fp"))
            sens = tp / (tp + fn) if tp + fn > 0 else math.nan
            empty = sel["empty"] if "empty" in sel else pd.Series(dtype=str)
            rows.append(
                [
                    arm,
                    cls,
                    fmt(num["iou"].mean()),
                    fmt(num.get("assd", pd.Series(dtype=float)).mean(), 2),
                    fmt(num.get("volume_error_ml", pd.Series(dtype=float)).mean(), 2),
                    fmt(num.get("volume_error_ml", pd.Series(dtype=float)).abs().mean(), 2),
                    fmt(100 * num.get("volume_error_rel", pd.Series(dtype=float)).median(), 1),
                    f"{fmt(tp, 0)} / {fmt(fp, 0)} / {fmt(fn, 0)}",
                    fmt(sens),
                    " · ".join(f"{k}: {v}" for k, v in empty[empty != ""].value_counts().items())
                    or "none",
                ]
            )
    cols = [
        "arm",
        "class",
        "IoU mean",
        "ASSD mm mean",
        "volume error ml (mean)",
        "|volume error| ml",
        "rel. volume error % (median)",
        "lesions TP / FP / FN",
        "lesion sensitivity",
        "empty masks",
    ]
    return table(cols, rows, numeric_from=2)


def _metric_name(metric: str) -> str:
    return {"dice": "Dice", "nsd": "NSD", "hd95": "HD95 (mm)"}.get(metric, metric)


def comparison_table(comparisons: list[PairedComparison]) -> dict:
    """One row per comparison: difference, CI, what the test treats as random, raw and
    Holm-adjusted p (run-aware t with 2 or more shared seeds, else Wilcoxon)."""
    rows = []
    for c in comparisons:
        digits = 2 if c.metric in ("hd95", "assd") else 3
        rows.append(
            [
                c.arm,
                c.reference,
                _metric_name(c.metric),
                c.n,
                c.seeds,
                f"{c.mean_diff:+.{digits}f}",
                f"{fmt(c.ci_low, digits)} to {fmt(c.ci_high, digits)}",
                {METHOD_RUNS: "patients and runs", METHOD_POOLED: "patients and runs (pooled)"}.get(
                    c.method, "patients only"
                ),
                format_p_value(c.p_value),
                format_p_value(c.p_holm),
                "yes" if math.isfinite(c.p_holm) and c.p_holm < ALPHA else "no",
            ]
        )
    cols = [
        "arm",
        "against",
        "metric",
        "n cases",
        "seeds",
        "mean diff",
        "95 % CI",
        "random in the test",
        "p",
        "Holm p",
        "significant",
    ]
    return table(cols, rows, numeric_from=3)


def forest_rows(comparisons: list[PairedComparison]) -> list[dict]:
    """Rows for :func:`medtl.report.figures.difference_forest` (Dice comparisons)."""
    return [
        {
            "label": f"{c.arm} − {c.reference}",
            "mean_diff": c.mean_diff,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "significant": math.isfinite(c.p_holm) and c.p_holm < ALPHA,
        }
        for c in comparisons
        if c.metric == "dice" and math.isfinite(c.ci_low)
    ]


def folds_metric_table(metrics: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Mean Dice per arm, fold and class (template table and the data)."""
    df = fold_table(metrics, "dice")
    rows = [
        [r["arm"], int(r["fold"]), r["class"], int(r["n"]), fmt(r["mean"]), fmt(r["sd"])]
        for _, r in df.iterrows()
    ]
    return table(["arm", "fold", "class", "n cases", "mean Dice", "sd"], rows, numeric_from=1), df


def cases_table(metrics: pd.DataFrame, arms: list[str]) -> tuple[dict, pd.DataFrame]:
    """Dice per held-out case (mean over classes), one column per arm."""
    df = per_case_table(metrics, "dice")
    shown = [a for a in arms if a in df.columns]
    rows = [[r["case"], int(r["fold"]), *(fmt(r[a]) for a in shown)] for _, r in df.iterrows()]
    return table(["case", "fold", *shown], rows, numeric_from=1), df


def postprocess_table(decisions: dict[str, dict]) -> dict | None:
    """Per arm and class: what was chosen on cross-validation and the CV Dice of each option."""
    if not decisions:
        return None
    options: list[str] = []
    for d in decisions.values():
        for cls in d.get("classes", {}).values():
            options += [o for o in cls.get("mean_dice", {}) if o not in options]
    rows = []
    for arm, d in decisions.items():
        for name, cls in d.get("classes", {}).items():
            dice = cls.get("mean_dice", {})
            rows.append(
                [
                    arm,
                    name,
                    cls.get("chosen", "–"),
                    *(fmt(dice.get(o)) for o in options),
                    cls.get("cases_changed", "–"),
                ]
            )
    cols = ["arm", "class", "chosen", *(f"CV Dice: {o}" for o in options), "cases changed"]
    return table(cols, rows, numeric_from=3)


def summary_records(ev: Evaluation) -> dict[str, Any]:
    """The evaluation for ``summary.json``: per-arm statistics and every comparison."""
    per_metric = {}
    for metric, df in ev.summaries.items():
        per_metric[metric] = df.replace({np.nan: None}).to_dict(orient="records")
    return {
        "per_arm_class": per_metric,
        "versus_reference": [asdict(c) for c in ev.versus_reference],
        "all_pairs": [asdict(c) for c in ev.all_pairs],
        "verdict": ev.verdict,
    }
