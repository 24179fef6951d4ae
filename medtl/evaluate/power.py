"""Simulated studies: calibration of the comparisons and the power of a seeds design.

No training is involved: per-case Dice values are drawn from a variance-components
model with sizes taken from the demo (or estimated from a finished run with
:func:`~medtl.evaluate.estimation.estimate_components`), and the two comparisons of
:mod:`medtl.evaluate.comparisons` are applied to each simulated study:

* **run-aware**: the paired differences per case and seed, tested with the t test of
  :func:`medtl.evaluate.runs.run_aware_mean` (patients and runs random, Cochran–Cox
  critical value); what :func:`~medtl.evaluate.comparisons.compare_arms` does when the
  arms share at least 2 seeds;
* **patient-only**: each arm's case values averaged over its seeds, the per-case
  differences tested with the two-sided Wilcoxon signed-rank test; the decision of
  today's single-seed comparison (its CI is the patient bootstrap).

The model. Patients ``i`` (some with two cases ``c``) are assigned to folds ``i mod F``;
every arm ``a`` is trained for every seed ``s`` and fold ``f``. The Dice of a case is

``clip(mean + delta_a + u_i + w_c + r_{a,s,f} + e_{a,s,c}, 0, 1)``

with a patient effect ``u`` (SD ``patient_sd``), a case-within-patient effect ``w``
(``case_sd``), a run effect ``r`` per trained model (``run_sd``; the arms' effects in one
seed and fold correlated by ``run_corr``: common random numbers), a residual ``e`` per
case and run (``residual_sd``), and ``delta`` the true difference (0 for the first arm).
All draws are normal and independent; the generator is ``numpy.random.default_rng``
with a fixed seed, so every result is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from medtl.evaluate.cases import ALPHA, METHOD_PATIENTS, METHOD_RUNS, StatsError
from medtl.evaluate.runs import patient_codes, t_test, variance_components

# Component sizes of the demo (Dice, one class). The patient, case and residual sizes
# were estimated with estimate_components on a finished single-seed demo run (4 arms,
# 20 held-out cases of 14 patients, 3 folds); the run sizes from the per-seed mean Dice
# of a three-seed demo run: scratch 0.630 / 0.753 / 0.793 (SD 0.085), finetune
# 0.790 / 0.844 / 0.828 (SD 0.028), per-seed transfer gain SD 0.062.

#: Mean Dice over the demo's arms and cases (0.62 scratch to 0.79 finetune).
DEMO_MEAN = 0.74

#: SD of the patient effect. On the demo the case-level variance after removing each
#: model's mean is 0.027 (SD 0.165, estimate_components without a patient map), but its
#: 6 patients with two cases cannot split it between patients and cases (the
#: within-patient estimate, 0.041, exceeds the total). It is split evenly: 0.12 and
#: 0.12. The split matters little here: both cancel in paired differences and enter
#: only through the clipping at 0 and 1.
DEMO_PATIENT_SD = 0.12

#: SD of the case effect within a patient (see :data:`DEMO_PATIENT_SD`).
DEMO_CASE_SD = 0.12

#: SD of the run effect of one trained model (an arm, seed and fold). With 3 folds the
#: SD of an arm's per-seed mean is about ``run_sd / sqrt(3)``: 0.058 with 0.10, between
#: finetune's 0.028 and scratch's 0.085.
DEMO_RUN_SD = 0.10

#: Correlation of two arms' run effects in one seed and fold (common random numbers).
#: With :data:`DEMO_RUN_SD` and :data:`DEMO_RESIDUAL_SD` it gives a per-seed mean
#: difference SD of ``sqrt(2 * 0.1**2 * 0.5 / 3 + 2 * 0.08**2 / 20) = 0.063``, the
#: demo's 0.062.
DEMO_RUN_CORR = 0.5

#: SD of the residual of a case in one run (arm × case variation after removing each
#: trained model's mean, pooled over the demo's 4 arms: 0.081).
DEMO_RESIDUAL_SD = 0.08

#: The demo's design: patients, the share of them with two cases, folds.
DEMO_PATIENTS, DEMO_TWO_CASE_SHARE, DEMO_FOLDS = 14, 6 / 14, 3


@dataclass(frozen=True)
class Components:
    """Sizes of the variance components of per-case Dice (see the module docstring).

    Attributes:
        mean: mean Dice of the reference arm.
        patient_sd: SD of the patient effect.
        case_sd: SD of the case effect within a patient.
        run_sd: SD of the run effect of one trained model (arm, seed, fold).
        run_corr: correlation of two arms' run effects in one seed and fold.
        residual_sd: SD of the residual of a case in one run.
    """

    mean: float = DEMO_MEAN
    patient_sd: float = DEMO_PATIENT_SD
    case_sd: float = DEMO_CASE_SD
    run_sd: float = DEMO_RUN_SD
    run_corr: float = DEMO_RUN_CORR
    residual_sd: float = DEMO_RESIDUAL_SD

    def difference_run_sd(self, n_folds: int = DEMO_FOLDS) -> float:
        """SD of the run part of a per-seed mean difference: ``run_sd * sqrt(2 (1 - ρ) / F)``."""
        return self.run_sd * math.sqrt(2.0 * (1.0 - self.run_corr) / n_folds)


#: The demo's component sizes.
DEMO = Components()


@dataclass(frozen=True)
class Design:
    """Patients, cases and folds of a simulated study.

    Attributes:
        n_patients: patients.
        n_folds: cross-validation folds (patient ``i`` in fold ``i mod n_folds``).
        two_case_share: share of patients with two cases (the first ones).
    """

    n_patients: int = DEMO_PATIENTS
    n_folds: int = DEMO_FOLDS
    two_case_share: float = DEMO_TWO_CASE_SHARE

    def cases(self) -> tuple[np.ndarray, np.ndarray]:
        """``(patient, fold)`` of every case, patients in order."""
        if self.n_patients < 2 or not 1 <= self.n_folds <= self.n_patients:
            raise StatsError(
                f"simulated design: expected at least 2 patients and 1 to n_patients folds, "
                f"found {self.n_patients} patients and {self.n_folds} folds. How to fix: "
                "pass n_patients >= 2 and n_folds <= n_patients."
            )
        two = int(round(self.two_case_share * self.n_patients))
        patient = np.repeat(np.arange(self.n_patients), [2] * two + [1] * (self.n_patients - two))
        return patient, patient % self.n_folds


def simulate_dice(
    rng: np.random.Generator,
    n_studies: int,
    seeds: int,
    *,
    components: Components = DEMO,
    design: Design | None = None,
    differences: Sequence[float] = (0.0, 0.0),
) -> np.ndarray:
    """Per-case Dice of simulated studies, as an array (vectorized over studies).

    Args:
        rng: the generator.
        n_studies: independent studies.
        seeds: training seeds per arm.
        components: the component sizes.
        design: patients, cases and folds (default: the demo's).
        differences: true difference of each arm from ``components.mean`` (one per arm).

    Returns:
        ``(n_studies, arms, seeds, cases)`` Dice in ``[0, 1]``; cases ordered as
        :meth:`Design.cases`.
    """
    design = design or Design()
    patient, fold = design.cases()
    c = components
    n_arms, n_cases = len(differences), patient.size
    u = rng.standard_normal((n_studies, 1, 1, design.n_patients)) * c.patient_sd
    w = rng.standard_normal((n_studies, 1, 1, n_cases)) * c.case_sd
    shared = rng.standard_normal((n_studies, 1, seeds, design.n_folds))
    own = rng.standard_normal((n_studies, n_arms, seeds, design.n_folds))
    rho = min(max(c.run_corr, 0.0), 1.0)
    r = c.run_sd * (math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * own)
    e = rng.standard_normal((n_studies, n_arms, seeds, n_cases)) * c.residual_sd
    delta = np.asarray(differences, dtype=float)[None, :, None, None]
    y = c.mean + delta + u[..., patient] + w + r[..., fold] + e
    return np.clip(y, 0.0, 1.0)


def simulate_metrics(
    components: Components = DEMO,
    *,
    design: Design | None = None,
    seeds: Sequence[int] = (1, 2, 3),
    arms: Sequence[str] = ("scratch", "finetune"),
    difference: float = 0.0,
    rng: np.random.Generator | int = 0,
) -> pd.DataFrame:
    """One simulated study in the shape of ``metrics.csv`` (one class, Dice only).

    Args:
        components: the component sizes.
        design: patients, cases and folds (default: the demo's).
        seeds: the seeds every arm is trained with.
        arms: the arms; every arm after the first has the true ``difference``.
        difference: true difference of the later arms from the first.
        rng: a generator or the seed of ``numpy.random.default_rng``.

    Returns:
        Columns ``arm, fold, seed, case, class, dice, patient`` (``patient`` is not a
        column of ``metrics.csv``: pass ``dict(zip(df.case, df.patient))`` as ``groups``).
    """
    design = design or Design()
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    diffs = [0.0] + [difference] * (len(arms) - 1)
    y = simulate_dice(rng, 1, len(seeds), components=components, design=design, differences=diffs)
    patient, fold = design.cases()
    order = np.arange(patient.size) - np.searchsorted(patient, patient)  # case within patient
    names = [f"p{p:03d}_{i + 1:02d}" for p, i in zip(patient, order, strict=True)]
    frames = []
    for a, arm in enumerate(arms):
        for j, s in enumerate(seeds):
            frames.append(
                pd.DataFrame(
                    {
                        "arm": arm,
                        "fold": fold,
                        "seed": int(s),
                        "case": names,
                        "class": "tumour",
                        "dice": y[0, a, j],
                        "patient": [f"p{p:03d}" for p in patient],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- decisions


def run_aware_p(diff: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Two-sided p of the run-aware t test for ``(..., seeds, cases)`` differences.

    The same computation as :func:`medtl.evaluate.runs.run_aware_mean` on complete
    tables, vectorized over the leading axes. NaN where the differences do not vary.
    """
    codes = patient_codes(pd.Index(patient), None)
    mean, v_pat, v_run, _ = variance_components(diff.mean(axis=-2), diff.mean(axis=-1), codes)
    return t_test(mean, v_pat, v_run, int(codes.max()), diff.shape[-2] - 1)[1]


def patient_only_p(diff: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon p of ``(..., cases)`` per-case differences (NaN when not possible).

    As :func:`~medtl.evaluate.comparisons.compare_arms` on one seed: ``scipy.stats.wilcoxon``
    with its defaults, along the last axis.
    """
    flat = diff.reshape(-1, diff.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    ok = np.any(flat != 0, axis=-1)
    if ok.any():
        out[ok] = wilcoxon(flat[ok], axis=-1).pvalue
    return out.reshape(diff.shape[:-1])


def _rates(y: np.ndarray, patient: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Rejection rates: run-aware (NaN below 2 seeds), patient-only, A/A patient-only."""
    diff = y[:, 1] - y[:, 0]
    seeds = y.shape[2]
    runs = float(np.mean(run_aware_p(diff, patient) < alpha)) if seeds >= 2 else math.nan
    patients = float(np.mean(patient_only_p(diff.mean(axis=1)) < alpha))
    aa = float(np.mean(patient_only_p(y[:, 0, 1] - y[:, 0, 0]) < alpha)) if seeds >= 2 else math.nan
    return runs, patients, aa


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """How often each comparison claims a difference in simulated studies.

    Attributes:
        n_studies: simulated studies per setting.
        seeds: seeds per arm in the null studies.
        alpha: significance level.
        false_positive_rate_runs: share of null studies (no true difference) in which
            the run-aware t test has p < alpha; should be at most alpha.
        false_positive_rate_patients_only: the same for the patient-only Wilcoxon test
            of seed-averaged case values, on the same studies.
        aa_false_positive_rate: share of studies in which the patient-only test called
            one seed of an arm different from another seed of the same arm.
        difference: true difference of the power studies.
        power: per number of seeds, the share of studies with the true ``difference``
            in which the run-aware test has p < alpha.
        monte_carlo_se: binomial standard error of a rate of alpha over ``n_studies``.
        components: the component sizes.
        design: the design.
    """

    n_studies: int
    seeds: int
    alpha: float
    false_positive_rate_runs: float
    false_positive_rate_patients_only: float
    aa_false_positive_rate: float
    difference: float
    power: dict[int, float]
    monte_carlo_se: float
    components: Components = field(default_factory=Components)
    design: Design = field(default_factory=Design)

    def table(self) -> pd.DataFrame:
        """The figures as a small table (``rate`` per ``what``)."""
        rows = [
            (f"false positives, run-aware t ({self.seeds} seeds)", self.false_positive_rate_runs),
            (
                f"false positives, patient-only Wilcoxon ({self.seeds} seeds averaged)",
                self.false_positive_rate_patients_only,
            ),
            ("false positives, A/A patient-only (seed vs seed)", self.aa_false_positive_rate),
        ]
        rows += [
            (f"power, run-aware, difference {self.difference:g}, {s} seeds", p)
            for s, p in self.power.items()
        ]
        return pd.DataFrame(rows, columns=["what", "rate"])


def calibrate(
    components: Components = DEMO,
    *,
    design: Design | None = None,
    seeds: int = 3,
    n_studies: int = 1000,
    difference: float = 0.05,
    power_seeds: Sequence[int] = (3, 5),
    alpha: float = ALPHA,
    rng_seed: int = 0,
) -> Calibration:
    """False-positive rates under no true difference, and power at a true difference.

    Args:
        components: the component sizes (default: the demo's).
        design: patients, cases and folds (default: the demo's).
        seeds: seeds per arm in the null studies (at least 2).
        n_studies: simulated studies per setting.
        difference: true difference (second arm minus first) of the power studies.
        power_seeds: numbers of seeds at which power is simulated.
        alpha: significance level.
        rng_seed: seed of ``numpy.random.default_rng``.

    Returns:
        The rates; see :class:`Calibration`.
    """
    if seeds < 2:
        raise StatsError(
            f"calibrate: expected at least 2 seeds for the run-aware test, found {seeds}. "
            "How to fix: pass seeds >= 2."
        )
    design = design or Design()
    rng = np.random.default_rng(rng_seed)
    patient, _ = design.cases()
    y = simulate_dice(rng, n_studies, seeds, components=components, design=design)
    runs, patients, aa = _rates(y, patient, alpha)
    power = {}
    for s in power_seeds:
        y = simulate_dice(
            rng, n_studies, s, components=components, design=design, differences=(0, difference)
        )
        power[int(s)] = _rates(y, patient, alpha)[0]
    return Calibration(
        n_studies=n_studies,
        seeds=seeds,
        alpha=alpha,
        false_positive_rate_runs=runs,
        false_positive_rate_patients_only=patients,
        aa_false_positive_rate=aa,
        difference=difference,
        power=power,
        monte_carlo_se=math.sqrt(alpha * (1 - alpha) / n_studies),
        components=components,
        design=design,
    )


def power_table(
    components: Components = DEMO,
    seeds: Sequence[int] = (1, 3, 5),
    differences: Sequence[float] = (0.05,),
    n_patients: int = DEMO_PATIENTS,
    n_folds: int = DEMO_FOLDS,
    n_studies: int = 500,
    alpha: float = ALPHA,
    *,
    two_case_share: float = DEMO_TWO_CASE_SHARE,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Simulated false-positive rate and power of a comparison of two arms, per design.

    For every number of seeds: ``n_studies`` null studies (no true difference) and
    ``n_studies`` studies per true difference, each arm trained with that many seeds.
    The comparison is the one :func:`~medtl.evaluate.comparisons.compare_arms` makes: the
    run-aware t test with at least 2 seeds, the patient-only Wilcoxon test with one.

    Args:
        components: the component sizes (:data:`DEMO`, or
            :func:`~medtl.evaluate.estimation.estimate_components` of a finished run).
        seeds: numbers of seeds per arm.
        differences: true differences (second arm minus first, in Dice).
        n_patients: patients.
        n_folds: folds.
        n_studies: simulated studies per setting.
        alpha: significance level.
        two_case_share: share of patients with two cases.
        rng_seed: seed of ``numpy.random.default_rng``.

    Returns:
        One row per number of seeds and difference: ``seeds, difference, method,
        false_positive_rate_runs`` (NaN with one seed), ``false_positive_rate_patients_only``
        (seed-averaged values), ``power`` (of ``method``: the run-aware test with at
        least 2 seeds, the patient-only test with one) and ``power_patients_only``.
    """
    design = Design(n_patients=n_patients, n_folds=n_folds, two_case_share=two_case_share)
    patient, _ = design.cases()
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds:
        y0 = simulate_dice(rng, n_studies, int(s), components=components, design=design)
        fp_runs, fp_patients, _ = _rates(y0, patient, alpha)
        for d in differences:
            y1 = simulate_dice(
                rng, n_studies, int(s), components=components, design=design, differences=(0, d)
            )
            pw_runs, pw_patients, _ = _rates(y1, patient, alpha)
            runs = s >= 2
            rows.append(
                {
                    "seeds": int(s),
                    "difference": float(d),
                    "method": METHOD_RUNS if runs else METHOD_PATIENTS,
                    "false_positive_rate_runs": fp_runs,
                    "false_positive_rate_patients_only": fp_patients,
                    "power": pw_runs if runs else pw_patients,
                    "power_patients_only": pw_patients,
                }
            )
    return pd.DataFrame(rows)
