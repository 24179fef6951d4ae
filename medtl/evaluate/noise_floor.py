"""The A/A noise floor: how much an arm differs from itself between training seeds.

Per seed, the mean over cases; their spread and SD (the run SD); the size that the
difference of two single-seed runs of one arm reaches by chance; and how often the
patient-only test (:mod:`medtl.evaluate.bootstrap`) calls an arm different from itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd
from scipy.stats import t as t_dist

from medtl.evaluate.bootstrap import bootstrap_ci, wilcoxon_p
from medtl.evaluate.cases import StatsError, metric_info, per_case_runs


@dataclass(frozen=True)
class SeedPair:
    """One seed of an arm against another seed of the same arm, patients only.

    Attributes:
        seed: the seed compared.
        reference_seed: the other seed.
        n: paired cases.
        mean_diff: mean over cases of ``seed - reference_seed``.
        ci_low: lower end of the 95 % patient bootstrap CI (:func:`bootstrap_ci`).
        ci_high: upper end of that CI.
        p_value: two-sided Wilcoxon signed-rank p (NaN when not possible).
        called_different: whether ``p_value < 0.05``: the patient-only test called the
            arm different from itself.
    """

    seed: int
    reference_seed: int
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    called_different: bool


@dataclass(frozen=True)
class NoiseFloor:
    """How much an arm differs from itself between training seeds (the A/A floor).

    Attributes:
        arm: the arm (for a pooled floor, the arms joined by ``+``).
        metric: the metric.
        seeds: number of seeds (for a pooled floor, over all arms).
        seed_means: mean over cases per seed, indexed by seed (pooled: by ``(arm, seed)``).
        spread: largest minus smallest per-seed mean (pooled: the largest within an arm).
        run_sd: SD of the per-seed means (pooled: the square root of the variances pooled
            with weights ``S_a - 1``).
        run_df: degrees of freedom of ``run_sd`` (seeds minus 1, summed over arms).
        aa_difference: ``1.96 * sqrt(2) * run_sd``: the size that the difference of the
            means of two single-seed runs of the same arm stays below 95 % of the time,
            taking ``run_sd`` as known.
        aa_difference_t: ``t_{run_df, 0.975} * sqrt(2) * run_sd``: the same bound as a
            95 % prediction interval for a new pair of runs, allowing for ``run_sd``
            being estimated from few seeds (exact under normality; much wider at 2-3
            seeds).
        pairs: every pair of seeds compared with the patient-only method.
        false_calls: pairs the patient-only test called different (p < 0.05).
        statement: one English sentence with the above.
    """

    arm: str
    metric: str
    seeds: int
    seed_means: pd.Series
    spread: float
    run_sd: float
    run_df: int
    aa_difference: float
    aa_difference_t: float
    pairs: tuple[SeedPair, ...]
    false_calls: int
    statement: str


def _floor_statement(f: NoiseFloor, means_txt: str) -> str:
    name, unit, _, digits = metric_info(f.metric)

    def num(x: float) -> str:
        return f"{x:.{digits}f}{unit}"

    return (
        f"{f.arm}: per-seed mean {name} {means_txt} (spread {num(f.spread)}, run SD "
        f"{num(f.run_sd)}); two single-seed runs of the same arm differ by up to "
        f"{num(f.aa_difference)} 95 % of the time (1.96 × √2 × run SD; "
        f"{num(f.aa_difference_t)} as a t prediction bound with {f.run_df} df); "
        f"the patient-only test called the arm different from itself in {f.false_calls} "
        f"of {len(f.pairs)} seed pairs."
    )


def _means_txt(seed_means: pd.Series, metric: str) -> str:
    digits = metric_info(metric)[3]
    return " / ".join(f"{m:.{digits}f}" for m in seed_means)


def _aa(run_sd: float, run_df: int) -> tuple[float, float]:
    z = 1.959963984540054 * math.sqrt(2.0) * run_sd
    t = float(t_dist.ppf(0.975, run_df)) * math.sqrt(2.0) * run_sd if run_df > 0 else math.nan
    return z, t


def noise_floor(
    metrics: pd.DataFrame,
    arm: str,
    metric: str = "dice",
    groups: pd.Series | Mapping | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> NoiseFloor:
    """The A/A noise floor of an arm trained with at least 2 seeds.

    Per seed, the mean over cases (each case averaged over classes); their spread and
    SD (the run SD); the size of a difference between two single-seed runs that noise
    alone reaches 95 % of the time; and every pair of seeds compared with the
    patient-only method of a single-seed comparison (patient bootstrap CI, Wilcoxon p),
    to show how often that method calls an arm different from itself.

    Args:
        metrics: the ``metrics.csv`` table with a ``seed`` column.
        arm: the arm.
        metric: the column.
        groups: maps case → patient, for the bootstrap.
        n_boot: bootstrap resamples per seed pair.
        seed: seed of the bootstrap generator.

    Raises:
        StatsError: with fewer than 2 seeds for the arm.
    """
    runs = per_case_runs(metrics, arm, metric)
    if runs.shape[1] < 2:
        raise StatsError(
            f"noise floor of {arm!r}: expected {metric} values from at least 2 seeds, found "
            f"{runs.shape[1]}. How to fix: train the arm with 2 or more seeds (a seed column "
            "in metrics.csv)."
        )
    seed_means = runs.mean(axis=0)
    pairs = []
    for i, ref_seed in enumerate(runs.columns):
        for other in runs.columns[i + 1 :]:
            diffs = (runs[other] - runs[ref_seed]).dropna()
            ci = bootstrap_ci(diffs, groups, n_boot=n_boot, seed=seed)
            p = wilcoxon_p(diffs.to_numpy(dtype=float))
            pairs.append(
                SeedPair(
                    seed=int(other),
                    reference_seed=int(ref_seed),
                    n=int(diffs.size),
                    mean_diff=float(diffs.mean()),
                    ci_low=ci[0],
                    ci_high=ci[1],
                    p_value=p,
                    called_different=bool(math.isfinite(p) and p < 0.05),
                )
            )
    run_sd = float(seed_means.std(ddof=1))
    run_df = int(seed_means.size - 1)
    z, t = _aa(run_sd, run_df)
    floor = NoiseFloor(
        arm=arm,
        metric=metric,
        seeds=int(seed_means.size),
        seed_means=seed_means,
        spread=float(seed_means.max() - seed_means.min()),
        run_sd=run_sd,
        run_df=run_df,
        aa_difference=z,
        aa_difference_t=t,
        pairs=tuple(pairs),
        false_calls=sum(p.called_different for p in pairs),
        statement="",
    )
    return replace(floor, statement=_floor_statement(floor, _means_txt(seed_means, metric)))


def pooled_noise_floor(
    metrics: pd.DataFrame,
    arms: list[str] | None = None,
    metric: str = "dice",
    groups: pd.Series | Mapping | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> NoiseFloor:
    """The A/A floor pooled over the arms with at least 2 seeds.

    The run variance is pooled as ``sum_a (S_a - 1) s_a² / sum_a (S_a - 1)`` (arms
    assumed to share one run variance), the seed pairs of all arms are gathered, and the
    spread is the largest within an arm.

    Args:
        metrics: the ``metrics.csv`` table with a ``seed`` column.
        arms: the arms to pool (``None``: every arm); arms with fewer than 2 seeds are
            left out.
        metric: the column.
        groups: maps case → patient, for the bootstrap.
        n_boot: bootstrap resamples per seed pair.
        seed: seed of the bootstrap generator.

    Raises:
        StatsError: if no arm has 2 seeds.
    """
    arms = list(pd.unique(metrics["arm"])) if arms is None else list(arms)
    usable = [a for a in arms if per_case_runs(metrics, a, metric).shape[1] >= 2]
    if not usable:
        raise StatsError(
            f"pooled noise floor: expected an arm with {metric} values from at least 2 "
            f"seeds among {arms}, found none. How to fix: train an arm with 2 or more seeds."
        )
    floors = [noise_floor(metrics, a, metric, groups, n_boot=n_boot, seed=seed) for a in usable]
    run_df = sum(f.run_df for f in floors)
    run_sd = math.sqrt(sum(f.run_df * f.run_sd**2 for f in floors) / run_df)
    z, t = _aa(run_sd, run_df)
    pairs = tuple(p for f in floors for p in f.pairs)
    seed_means = pd.concat({f.arm: f.seed_means for f in floors})
    floor = NoiseFloor(
        arm=" + ".join(usable),
        metric=metric,
        seeds=sum(f.seeds for f in floors),
        seed_means=seed_means,
        spread=max(f.spread for f in floors),
        run_sd=run_sd,
        run_df=run_df,
        aa_difference=z,
        aa_difference_t=t,
        pairs=pairs,
        false_calls=sum(p.called_different for p in pairs),
        statement="",
    )
    means_txt = "; ".join(f"{f.arm} {_means_txt(f.seed_means, metric)}" for f in floors)
    return replace(floor, statement=_floor_statement(floor, means_txt))
