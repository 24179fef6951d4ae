"""Evaluation: metrics of the predicted masks, and the statistics of arms compared.

Modules, lowest first: :mod:`~medtl.evaluate.surfaces` and :mod:`~medtl.evaluate.arrays`
(metrics of two label arrays), :mod:`~medtl.evaluate.metrics` (metrics of prediction files,
``metrics.csv``), :mod:`~medtl.evaluate.fractions` (``label_fraction.csv``);
:mod:`~medtl.evaluate.cases` (per-case values of an arm), :mod:`~medtl.evaluate.bootstrap`
(patients only), :mod:`~medtl.evaluate.runs` (patients and runs),
:mod:`~medtl.evaluate.multiplicity` (Holm), :mod:`~medtl.evaluate.statements`,
:mod:`~medtl.evaluate.summaries`, :mod:`~medtl.evaluate.comparisons`,
:mod:`~medtl.evaluate.noise_floor` and :mod:`~medtl.evaluate.power` (simulated studies).

The statistics: per-arm summaries and paired comparisons of arms on the same held-out cases.

The input is ``metrics.csv``: one row per arm, held-out case, class and (optionally)
training seed. Each case is held out in exactly one fold, so the arms' results on a case
are paired; a case belongs to a patient, and several cases (studies) may share a
patient. Each arm is trained once per fold and seed; a table without a ``seed`` column
is one seed. Seeds use common random numbers: seed ``s`` gives every arm the same batch
order and augmentation, so arm differences are paired within a seed as well.

Methods, precisely:

* **Per-case values.** :func:`~medtl.evaluate.cases.per_case_runs` averages an arm's rows
  of a case and seed over its classes (NaN values left out);
  :func:`~medtl.evaluate.cases.per_case` then averages over the arm's seeds. The case is
  the unit of every comparison.
* **Two sources of variance.** Patients vary, and so do training runs (a run is one
  trained model, a (seed, fold) pair shared by the patients of the fold). With one seed
  the run-to-run variance is not measured: the patient-only intervals and tests below
  are then a lower bound on the uncertainty. With at least 2 seeds both sources enter
  (:mod:`medtl.evaluate.runs`).
* **Confidence interval of a mean, patients only**
  (:func:`~medtl.evaluate.bootstrap.bootstrap_ci`). The resampling unit is the *patient*,
  not the case: cases of one patient are correlated, and resampling them independently
  would give intervals that are too narrow. ``scipy.stats.bootstrap`` resamples the
  patient indices with replacement; the statistic of a resample is the sum of the case
  values of the drawn patients divided by the number of their cases (the cluster bootstrap
  of the case mean; on the full sample it is the plain mean over cases, so a patient with
  three cases weighs three times as much as a patient with one). The interval is BCa;
  where BCa is degenerate (NaN, e.g. all values equal) the percentile interval of the same
  bootstrap distribution is used. Without a patient map every case is its own patient, and
  the interval equals ``scipy.stats.bootstrap((x,), np.mean, method="BCa")`` with the same
  generator.
* **Patients and runs** (:func:`medtl.evaluate.runs.run_aware_mean`), for a case × seed
  table: the mean of the seed-averaged case values, with ``se² = V_pat + V_run``:
  ``V_pat`` the cluster-robust variance over patients of the mean of the seed-averaged
  case values, ``V_run`` the variance of the per-seed means divided by the number of
  seeds; a t interval and two-sided t test whose critical value is the Cochran–Cox
  variance-weighted mean of the ``t_{P-1}`` and ``t_{S-1}`` quantiles (Satterthwaite's df,
  reported, was liberal with 2–3 seeds in simulation). It counts the residual twice, so it
  is conservative by about ``σe²/(P S)``. :func:`~medtl.evaluate.summaries.summarise_arms`
  uses it for an arm with at least 2 seeds, and
  :func:`~medtl.evaluate.bootstrap.bootstrap_ci` otherwise.
* **Paired comparison** (:func:`~medtl.evaluate.comparisons.compare_arms`). When the two
  arms share at least 2 seeds, the differences ``arm - reference`` are taken per shared
  case and shared seed (:func:`~medtl.evaluate.comparisons.paired_runs`) and tested with
  the run-aware t test; its interval is the run-aware t interval. Otherwise each arm's
  case values are averaged over its own seeds, the per-case differences are tested with a
  two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, its defaults; not
  reported with fewer than 6 cases or when all differences are zero), the CI is
  :func:`~medtl.evaluate.bootstrap.bootstrap_ci` of the differences, and the statement
  says that run-to-run variance is not measured and the CI is a lower bound on the
  uncertainty. The Wilcoxon test treats cases as independent; with many cases per patient
  its p-value is optimistic, while the interval is not.
* **Several arms** (:func:`~medtl.evaluate.comparisons.compare_all_pairs`). Every
  unordered pair of arms is compared once, the better arm of the pair (by the mean over
  shared cases, in the metric's direction) as ``arm``. The family of p-values (t or
  Wilcoxon, whichever each comparison has) is adjusted with Holm's step-down method
  (:func:`~medtl.evaluate.multiplicity.holm`), which controls the family-wise error rate:
  with the p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value is ``max_{j <=
  i} min(1, (m - j + 1) p_(j))``.
* **Verdict** (:func:`~medtl.evaluate.comparisons.verdict`). The best arm is the one with
  the best mean over cases (each case averaged over its classes and seeds). The evidence
  holds when the best arm beats every other arm with a Holm-adjusted p < 0.05 (and the
  paired difference in its favour); otherwise the sentence names the arms it cannot be
  separated from.
* **A/A noise floor** (:func:`medtl.evaluate.noise_floor.noise_floor`): how far two seeds of
  one arm differ, and how often the patient-only test calls an arm different from
  itself. Simulated calibration and power: :mod:`medtl.evaluate.power`.
"""
