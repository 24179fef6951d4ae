"""Fit an arm's trust on its cross-validation predictions: a temperature, and a flag rule.

Every training run of the arm (fold × seed) predicted its fold's held-out cases and wrote,
beside the masks (:mod:`medtl.predict.fold`), each case's uncertainty scores and a sample
of voxels near the structure. With the per-case Dice of those masks (the evaluation), this
module fits, for the whole arm:

- **calibration**: the temperature ``T`` that minimises the negative log-likelihood of
  the sampled voxels' labels under ``softmax(log p̄ / T)``
  (:mod:`medtl.trust.calibration`). The expected calibration error (ECE) *after* is
  measured honestly: each fold's voxels are tempered with the temperature fitted on the
  other folds (with one fold only, on the same voxels, and the record says so). The
  temperature stored is fitted on every fold.
- **failure detection**: how well each per-case score ranks the cases by their loss
  ``1 − Dice`` (Spearman, area under the risk–coverage curve against the oracle's and a
  random ranking), the score with the lowest AURC, and the threshold on it that best
  separates the cases below ``trust.bad_dice`` (:mod:`medtl.trust.failure`). A case
  predicted by several seeds counts once per seed.

The result is ``results/trust/<arm>.json``; ``rule`` in it is what ``medtl predict``
applies (:class:`medtl.trust.decision.TrustRule`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.config import TrustConfig
from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_write_text
from medtl.layout import (
    CV_CALIBRATION_SAMPLE,
    CV_CASE_SCORES,
    CV_PREDICTION_RECORD,
    PREDICT_RULE,
    TrainedRun,
    evaluation_file,
    predictions_dir,
    runs_of_arm,
)
from medtl.trust.calibration import (
    CalibrationFit,
    finite_or_none,
    fit_temperature,
    nll,
    reliability,
    temper_array,
)
from medtl.trust.decision import TrustRule
from medtl.trust.failure import MEASURES, assess

#: How the "after" calibration error is measured, by the number of folds.
CROSS_FITTED = "each fold's voxels tempered with the temperature fitted on the other folds"
IN_SAMPLE = "one fold only: tempered with the temperature fitted on the same voxels (optimistic)"


def fit_trust(
    results: Path,
    arm: str,
    cfg: TrustConfig,
    out: Path,
    seeds: Sequence[int] | None = None,
) -> dict:
    """Fit ``arm``'s temperature and flag rule on its CV predictions; write ``out`` (JSON).

    Args:
        results: the run's results folder (``train/``, ``predictions/`` and
            ``evaluation/`` of the arm's runs).
        arm: the arm.
        cfg: the ``trust`` section (``bad_dice``, ``ece_bins``).
        out: where to write the fit (atomically).
        seeds: the arm's training seeds (default: every run found).

    Returns:
        What was written: ``rule`` (:class:`~medtl.trust.decision.TrustRule` as a dict),
        ``calibration`` (before/after reliability, temperature), ``calibration_method``,
        ``failure`` (:class:`~medtl.trust.failure.FailureAssessment` as a dict), ``cases``
        (one row per held-out prediction) and ``model`` (size, time and memory per case).

    Raises:
        InputError: a run's predictions or evaluation are missing (naming the rule to rerun).
    """
    runs = _runs(Path(results), arm, seeds)
    cases = cv_cases(Path(results), runs)
    fit, method = _calibrate(Path(results), runs, cfg.ece_bins)
    measures = [m for m in MEASURES if m in cases.columns]
    assessment = assess(
        cases.set_index("key")[measures], cases.set_index("key")["dice"], cfg.bad_dice
    )
    rule = TrustRule(
        temperature=fit.temperature,
        measure=assessment.chosen,
        direction=MEASURES.get(assessment.chosen, 1) if assessment.chosen else 1,
        threshold=finite_or_none(assessment.threshold.value) if assessment.threshold else None,
        bad_dice=cfg.bad_dice,
        rule=assessment.threshold.rule if assessment.threshold else None,
    )
    flagged = set(assessment.flagged)
    cases["risk"] = [rule.risk_and_flag(row)[0] for row in cases.to_dict(orient="records")]
    cases["flag"] = cases["key"].isin(flagged)
    record = {
        "arm": arm,
        "rule": rule.as_dict(),
        "calibration": fit.as_dict(),
        "calibration_method": method,
        "failure": assessment.as_dict(),
        "cases": json.loads(cases.to_json(orient="records")),
        "model": model_record(Path(results), runs, cases),
    }
    atomic_write_text(Path(out), json.dumps(record, indent=2, allow_nan=False) + "\n")
    return record


def _runs(results: Path, arm: str, seeds: Sequence[int] | None) -> list[TrainedRun]:
    runs = runs_of_arm(results, arm, "run the workflow's training of this arm first")
    if seeds:
        runs = [r for r in runs if r.seed in set(seeds)]
    return runs


def _missing(path: Path, what: str) -> InputError:
    return InputError(
        path,
        f"{what} is missing (an earlier version's prediction, or an unfinished job)",
        f"rerun the workflow's '{PREDICT_RULE}' and 'evaluate_fold' rules for this run "
        f"(snakemake --forcerun {PREDICT_RULE})",
    )


def cv_cases(results: Path, runs: Sequence[TrainedRun]) -> pd.DataFrame:
    """One row per held-out prediction: run, case, Dice (mean over classes) and scores.

    ``key`` names the prediction: the case, with its seed when the arm has several.
    """
    frames = []
    several_seeds = len({r.seed for r in runs}) > 1
    for run in runs:
        scores_path = predictions_dir(results, run.arm, run.seed, run.fold) / CV_CASE_SCORES
        metrics_path = evaluation_file(results, run.arm, run.seed, run.fold)
        for path, what in ((scores_path, "the cases' scores"), (metrics_path, "the metrics")):
            if not path.is_file():
                raise _missing(path, what)
        scores = pd.read_csv(scores_path, sep="\t", dtype={"case": str})
        metrics = pd.read_csv(metrics_path, dtype={"case": str})
        dice = metrics.groupby("case")["dice"].mean().rename("dice")
        frame = scores.merge(dice, left_on="case", right_index=True, how="inner")
        frame.insert(0, "fold", run.fold)
        frame.insert(0, "seed", run.seed)
        frame.insert(
            0,
            "key",
            [f"{c} (seed {run.seed})" if several_seeds else c for c in frame["case"]],
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["key", "dice"])


def _read_sample(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A run's calibration voxels: probabilities, labels, and how many cases they are from."""
    if not path.is_file():
        raise _missing(path, "the calibration sample")
    with np.load(path, allow_pickle=False) as data:
        probs, labels = data["probs"].astype(np.float32), data["labels"].astype(np.int64)
        return probs, labels, len(data["case_ids"])


def _calibrate(results: Path, runs: Sequence[TrainedRun], bins: int) -> tuple[CalibrationFit, str]:
    """The temperature on every fold's voxels, and the error before and (cross-fitted) after."""
    by_fold: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    n_cases = 0
    for run in runs:
        probs, labels, n = _read_sample(
            predictions_dir(results, run.arm, run.seed, run.fold) / CV_CALIBRATION_SAMPLE
        )
        by_fold.setdefault(run.fold, []).append((probs, labels))
        n_cases += n
    folds = {
        k: (np.concatenate([p for p, _ in v], 1), np.concatenate([y for _, y in v]))
        for k, v in by_fold.items()
    }
    probs = np.concatenate([p for p, _ in folds.values()], 1)
    labels = np.concatenate([y for _, y in folds.values()])
    temperature = fit_temperature(probs, labels)
    if len(folds) > 1:
        tempered = [
            temper_array(p, fit_temperature(*_others(folds, k))) for k, (p, _) in folds.items()
        ]
        method = CROSS_FITTED
    else:
        tempered = [temper_array(p, temperature) for p, _ in folds.values()]
        method = IN_SAMPLE
    after = np.concatenate(tempered, 1)
    fit = CalibrationFit(
        temperature=temperature,
        voxels=int(labels.size),
        cases=n_cases,
        before=reliability(probs, labels, bins),
        after=reliability(after, labels, bins),
        nll_before=nll(probs, labels),
        nll_after=nll(after, labels),
    )
    return fit, method


def _others(folds: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    rest = [v for j, v in folds.items() if j != k]
    return np.concatenate([p for p, _ in rest], 1), np.concatenate([y for _, y in rest])


def model_record(results: Path, runs: Sequence[TrainedRun], cases: pd.DataFrame) -> dict:
    """The arm's model size, and time and memory per case of one model (as in CV)."""
    records = []
    for run in runs:
        path = predictions_dir(results, run.arm, run.seed, run.fold) / CV_PREDICTION_RECORD
        if path.is_file():
            records.append(json.loads(path.read_text()))
    seconds = pd.to_numeric(cases.get("seconds", pd.Series(dtype=float)), errors="coerce")
    gpu = pd.to_numeric(cases.get("peak_gpu_mb", pd.Series(dtype=float)), errors="coerce")
    first = records[0] if records else {}
    return {
        "models": len(runs),
        "parameters": first.get("parameters"),
        "checkpoint_bytes": first.get("checkpoint_bytes"),
        "device": first.get("device"),
        "tta": first.get("tta"),
        "seconds_per_case_median": float(seconds.median()) if seconds.notna().any() else None,
        "seconds_per_case_max": float(seconds.max()) if seconds.notna().any() else None,
        "peak_gpu_mb": float(gpu.max()) if gpu.notna().any() else None,
        "peak_rss_mb": max(
            (r["peak_rss_mb"] for r in records if r.get("peak_rss_mb")), default=None
        ),
    }
