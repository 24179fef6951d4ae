"""Label-fraction curves: each arm retrained on shares of the training labels.

Reads ``evaluation/label_fraction.csv`` (one row per arm, fraction, seed, held-out case
and class) and turns it into points with 95 % CIs over patients and seeds, one sentence
per arm on the labels transfer saved, and a table for the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from medtl.evaluate.bootstrap import bootstrap_ci
from medtl.evaluate.cases import per_case, per_case_runs
from medtl.evaluate.fractions import full_label_rows
from medtl.evaluate.runs import run_aware_mean
from medtl.kernel.errors import MedtlError
from medtl.report.tables import fmt, table


class LabelFractionError(MedtlError):
    """A label-fraction table that lacks columns."""


#: Columns ``label_fraction.csv`` must have.
LABEL_FRACTION_COLUMNS = ["arm", "fraction", "labelled_cases", "fold", "case", "class", "dice"]


def read_label_fraction(path: Path) -> pd.DataFrame | None:
    """The label-fraction table, or None when the run made none (it is optional)."""
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    missing = [c for c in LABEL_FRACTION_COLUMNS if c not in df.columns]
    if missing:
        raise LabelFractionError(
            f"{path}: expected columns {LABEL_FRACTION_COLUMNS}, missing {missing}. "
            "How to fix: rerun the evaluate_fractions rule."
        )
    for col in ("arm", "case", "class"):
        df[col] = df[col].astype(str)
    for col in ("fraction", "labelled_cases", "dice", *(["seed"] if "seed" in df else [])):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def with_full_run(
    table: pd.DataFrame, metrics: pd.DataFrame, arm: str, folds: Mapping
) -> pd.DataFrame:
    """``table`` with ``arm``'s full-label run (fraction 1) added from ``metrics`` when
    ``table`` lacks it: the reference arm's 100 % point, to which the label saving of the
    other arms is compared, also when ``label_fraction_arms`` leaves the reference out
    (the demo retrains only ``finetune`` on fewer labels).

    Args:
        table: the ``label_fraction.csv`` table.
        metrics: the full runs' ``metrics.csv`` table.
        arm: the arm to add (the report's reference arm).
        folds: the split stage's ``folds.json`` (its training cases per fold).

    Returns:
        ``table``, or a new table with ``arm``'s rows of ``metrics`` at fraction 1.

    Example:
        >>> t = pd.DataFrame({"arm": ["a"], "fraction": [0.5], "labelled_cases": [1.0],
        ...                   "fold": [0], "case": ["x"], "class": ["c"], "dice": [0.5]})
        >>> m = pd.DataFrame({"arm": ["r"], "fold": [0], "case": ["x"], "class": ["c"],
        ...                   "dice": [0.7]})
        >>> with_full_run(t, m, "r", {"folds": [{"train": ["y", "z"]}]})[["arm", "fraction",
        ...     "labelled_cases", "dice"]].to_dict(orient="records")[-1]
        {'arm': 'r', 'fraction': 1.0, 'labelled_cases': 2.0, 'dice': 0.7}
    """
    has = (table["arm"] == arm) & (table["fraction"] >= 1.0)
    if has.any() or not (metrics["arm"] == arm).any():
        return table
    return pd.concat([table, full_label_rows(metrics, [arm], dict(folds))], ignore_index=True)


def label_fraction_points(
    table: pd.DataFrame,
    arms: list[str],
    groups: pd.Series | Mapping | None = None,
    n_boot: int = 2000,
) -> pd.DataFrame:
    """Per arm and fraction: labelled cases, cases, seeds, mean Dice and its 95 % CI.

    Each case is first averaged over its classes, so every held-out case counts once. With
    two or more seeds at a point, the mean is over cases and seeds and the interval
    counts patients and training runs as random (:func:`medtl.evaluate.runs.run_aware_mean`);
    with one, it is the cluster bootstrap over patients (a lower bound on the
    uncertainty). Intervals are clipped to the range of Dice, [0, 1]: with two seeds the
    t critical value has one degree of freedom (12.7), and an interval past 1 says only
    that the point is barely measured.

    Args:
        table: the ``label_fraction.csv`` table.
        arms: arms in display order (others in the table are left out).
        groups: maps case → patient (``None``: every case its own patient).
        n_boot: bootstrap resamples (one seed).

    Returns:
        Columns ``arm, fraction, labelled_cases, n_cases, seeds, mean_dice, ci_low,
        ci_high``, sorted by arm (in ``arms`` order) and fraction.
    """
    rows = []
    for arm in arms:
        sel = table[table["arm"] == arm]
        for fraction, part in sel.groupby("fraction", sort=True):
            runs = per_case_runs(part, arm, "dice")
            if runs.shape[1] >= 2:
                est = run_aware_mean(runs, groups)
                mean, low, high = est.mean, est.ci_low, est.ci_high
            else:
                cases = per_case(part, arm, "dice")
                mean = float(cases.mean()) if len(cases) else math.nan
                low, high = bootstrap_ci(cases, groups, n_boot=n_boot, seed=0)
            low, high = _clip(low), _clip(high)
            rows.append(
                {
                    "arm": arm,
                    "fraction": float(fraction),
                    "labelled_cases": float(part["labelled_cases"].mean()),
                    "n_cases": int(len(runs)),
                    "seeds": int(runs.shape[1]),
                    "mean_dice": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    cols = [
        "arm",
        "fraction",
        "labelled_cases",
        "n_cases",
        "seeds",
        "mean_dice",
        "ci_low",
        "ci_high",
    ]
    return pd.DataFrame(rows, columns=cols)


def _clip(x: float) -> float:
    """``x`` within the range of Dice, [0, 1] (NaN stays NaN)."""
    return x if math.isnan(x) else min(1.0, max(0.0, float(x)))


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
    points are compared (no interpolation). Where the arm's 95 % interval reaches below
    the reference's mean, the sentence says that the data do not confirm it: the saving
    is then a point estimate, and one that another seed may not repeat.
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
            f"({a['mean_dice']:.3f} vs {r['mean_dice']:.3f}): {saved:.0%} fewer labels"
            + _confirmed(a, r)
        )
    return out


def _confirmed(arm: pd.Series, reference: pd.Series) -> str:
    """``.`` when ``arm``'s interval lies at or above ``reference``'s mean, else a clause
    saying the intervals leave it open."""
    low = arm.get("ci_low", math.nan)
    if not math.isnan(low) and low >= reference["mean_dice"]:
        return "."
    return (
        f", a point estimate the data do not confirm (95 % CI {fmt(arm.get('ci_low'))} to "
        f"{fmt(arm.get('ci_high'))} against {reference['mean_dice']:.3f})."
    )


def label_fraction_table(points: pd.DataFrame) -> dict:
    rows = [
        [
            r["arm"],
            f"{100 * r['fraction']:.0f} %",
            _fmt_count(r["labelled_cases"]),
            int(r["n_cases"]),
            int(r["seeds"]),
            fmt(r["mean_dice"]),
            f"{fmt(r['ci_low'])} to {fmt(r['ci_high'])}",
        ]
        for _, r in points.iterrows()
    ]
    cols = [
        "arm",
        "fraction",
        "labelled cases per fold",
        "n cases",
        "seeds",
        "mean Dice",
        "95 % CI",
    ]
    return table(cols, rows)
