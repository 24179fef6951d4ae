"""The report's run-to-run variation: per-seed means, the A/A noise floor, and what the
intervals count as random.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from medtl.evaluate.bootstrap import bootstrap_ci
from medtl.evaluate.cases import (
    per_case,
    per_case_runs,
)
from medtl.evaluate.noise_floor import NoiseFloor, noise_floor, pooled_noise_floor
from medtl.evaluate.runs import run_aware_mean
from medtl.report.tables import fmt, table


def per_seed_frame(metrics: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Per arm and seed: held-out cases and mean Dice (each case averaged over classes).

    A table without seeds (an earlier version's) counts as one seed, shown as ``NaN``.
    """
    seeds = metrics["seed"] if "seed" in metrics else pd.Series(np.nan, index=metrics.index)
    dice = pd.to_numeric(metrics["dice"], errors="coerce")
    frame = pd.DataFrame({"arm": metrics["arm"], "seed": seeds, "case": metrics["case"], "d": dice})
    cases = frame.groupby(["arm", "seed", "case"], dropna=False)["d"].mean().dropna()
    out = cases.groupby(level=["arm", "seed"], dropna=False).agg(["size", "mean"]).reset_index()
    out.columns = ["arm", "seed", "n_cases", "mean_dice"]
    order = {a: i for i, a in enumerate(arms)}
    out = out[out["arm"].isin(order)]
    out = out.assign(_o=out["arm"].map(order)).sort_values(["_o", "seed"]).drop(columns="_o")
    return out.reset_index(drop=True)


def per_seed_table(frame: pd.DataFrame) -> dict:
    """Per arm, the mean Dice of each seed's runs, and their spread."""
    rows = []
    for arm, part in frame.groupby("arm", sort=False):
        values = part["mean_dice"].to_numpy(dtype=float)
        seeds = ", ".join(
            f"{'–' if pd.isna(s) else int(s)}: {fmt(v)}"
            for s, v in zip(part["seed"], values, strict=True)
        )
        spread = fmt(float(values.max() - values.min())) if values.size > 1 else "–"
        sd = fmt(float(values.std(ddof=1))) if values.size > 1 else "–"
        rows.append([arm, int(values.size), seeds, spread, sd])
    cols = ["arm", "seeds", "mean Dice per seed", "spread (max − min)", "SD over seeds"]
    return table(cols, rows, numeric_from=1)


@dataclass(frozen=True)
class RunVariation:
    """What the report says about run-to-run variation.

    Attributes:
        per_seed: per arm and seed, the mean Dice (:func:`per_seed_frame`).
        overall: per arm, the mean Dice over cases and seeds with the 95 % CI the
            report uses (run-aware with 2 or more seeds, else patients only).
        floors: the A/A noise floor of every arm trained with 2 or more seeds.
        pooled: the floor pooled over those arms (None when there is none).
        statement: one sentence on what the intervals count as random.
    """

    per_seed: pd.DataFrame
    overall: pd.DataFrame
    floors: list[NoiseFloor]
    pooled: NoiseFloor | None
    statement: str


def run_variation(
    metrics: pd.DataFrame,
    arms: list[str],
    groups: pd.Series,
    n_boot: int = 2000,
    seed: int = 0,
) -> RunVariation:
    """Per-seed means, each arm's overall mean and CI, the A/A floors, one sentence."""
    per_seed = per_seed_frame(metrics, arms)
    rows, floors = [], []
    for arm in arms:
        runs = per_case_runs(metrics, arm, "dice")
        if runs.shape[1] >= 2:
            est = run_aware_mean(runs, groups)
            rows.append([arm, runs.shape[1], est.mean, est.ci_low, est.ci_high])
            floors.append(noise_floor(metrics, arm, "dice", groups, n_boot=n_boot, seed=seed))
        else:
            cases = per_case(metrics, arm, "dice")
            low, high = bootstrap_ci(cases, groups, n_boot=n_boot, seed=seed)
            rows.append([arm, runs.shape[1], float(cases.mean()), low, high])
    overall = pd.DataFrame(rows, columns=["arm", "seeds", "mean", "ci_low", "ci_high"])
    pooled = (
        pooled_noise_floor(metrics, [f.arm for f in floors], "dice", groups, n_boot=n_boot)
        if floors
        else None
    )
    multi = [f.arm for f in floors]
    single = [a for a in arms if a not in multi]
    if not multi:
        statement = (
            "Every arm was trained with one seed: run-to-run variance is not measured, and "
            "every interval and test below treats the trained models as fixed. Treat the "
            "intervals as lower bounds on the uncertainty; train with several seeds "
            "(config key seeds) to measure it."
        )
    else:
        statement = (
            f"{_join_names(multi)} {'was' if len(multi) == 1 else 'were'} trained with "
            f"{_seed_counts(overall, multi)}: their intervals, and the tests between them, "
            "count both the patients and the training runs as random."
        )
        if single:
            statement += (
                f" {_join_names(single)} had one seed: their own run-to-run variance is not "
                "measured, so their intervals are lower bounds on the uncertainty, and their "
                "comparisons take the run variance of the arms with several seeds (pooled; "
                "assumed alike)."
            )
    return RunVariation(per_seed, overall, floors, pooled, statement)


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _seed_counts(overall: pd.DataFrame, arms: list[str]) -> str:
    counts = sorted({int(overall.loc[overall["arm"] == a, "seeds"].iloc[0]) for a in arms})
    return " or ".join(str(c) for c in counts) + " seeds"


def noise_floor_table(rv: RunVariation) -> dict | None:
    """Per arm with 2 or more seeds (and pooled): the A/A noise floor."""
    shown = rv.floors + ([rv.pooled] if rv.pooled is not None and len(rv.floors) > 1 else [])
    if not shown:
        return None
    rows = [
        [
            f.arm if f is not rv.pooled else f"pooled ({f.arm})",
            f.seeds,
            fmt(f.spread),
            fmt(f.run_sd),
            f"±{fmt(f.aa_difference)}",
            f"±{fmt(f.aa_difference_t)}",
            f"{f.false_calls} of {len(f.pairs)}",
        ]
        for f in shown
    ]
    cols = [
        "arm",
        "seeds",
        "spread of seed means",
        "run SD",
        "A/A floor (1.96 √2 SD)",
        "A/A floor (t bound)",
        "A/A pairs called different, patients-only test",
    ]
    return table(cols, rows, numeric_from=1)


def run_records(rv: RunVariation) -> dict[str, Any]:
    """The run-to-run variation for ``summary.json``."""

    def floor(f: NoiseFloor) -> dict[str, Any]:
        record = asdict(f)
        record["seed_means"] = {str(k): float(v) for k, v in f.seed_means.items()}
        return record

    return {
        "statement": rv.statement,
        "per_seed": rv.per_seed.replace({np.nan: None}).to_dict(orient="records"),
        "per_arm": rv.overall.replace({np.nan: None}).to_dict(orient="records"),
        "noise_floor": [floor(f) for f in rv.floors],
        "pooled_noise_floor": floor(rv.pooled) if rv.pooled is not None else None,
    }
