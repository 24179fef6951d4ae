"""The report's sections on the data and the training: dataset, plan, folds, loaded
weights, what each arm trained, and runtime.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtl.report.inputs import Inputs
from medtl.report.tables import fmt, fmt_value, parse_triplet, table


def dataset_section(inputs: Inputs) -> dict:
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


def flatten(d: dict, prefix: str = "") -> list[list[str]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += flatten(v, key + ".")
        else:
            rows.append([key, fmt_value(v)])
    return rows


def folds_section(inputs: Inputs) -> dict:
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


def load_report_table(reports: list[dict]) -> dict | None:
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


def runtime_frame(bench: pd.DataFrame | None) -> pd.DataFrame | None:
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


def runtime_records(bench: pd.DataFrame | None) -> list[dict]:
    frame = runtime_frame(bench)
    return [] if frame is None else frame.reset_index().to_dict(orient="records")


def runtime_table(bench: pd.DataFrame | None) -> dict | None:
    frame = runtime_frame(bench)
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


def trainable_table(summaries: list[dict], arms: list[str]) -> dict | None:
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
