"""Where a run keeps what each training run made: one place for the library and the rules.

A *training run* is one (arm, seed, fold): the arm's model trained on the fold's training
cases with that seed. Its files live under the results folder:

* ``train/<arm>/seed<s>/fold<k>/`` — ``best.pt``, ``curves.csv``, ``run.json``, ...
* ``predictions/<arm>/seed<s>/fold<k>/<case>.nii.gz`` — its masks of the held-out cases
* ``evaluation/<arm>/seed<s>/fold<k>.csv`` — their metrics
* ``fractions/frac<pct>/`` — the runs of one label fraction, laid out as above, and
  ``fractions/frac<pct>/fold<k>/folds.json``, the folds they train on

The workflow's rules (``pipeline/*.smk``) build their paths with the same functions,
passing wildcard names (``"{arm}"``), so adding an axis is one change here. Runs of an
earlier version kept ``train/<arm>/fold<k>/`` (one seed, no seed folder): the readers
here still find them, as seed ``None``.

Example:
    >>> run_dir("results", "scratch", 2, 0).as_posix()
    'results/train/scratch/seed2/fold0'
    >>> run_dir("results", "{arm}", "{seed}", "{fold}").as_posix()
    'results/train/{arm}/seed{seed}/fold{fold}'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: The rule that writes each training run's masks of its held-out cases.
PREDICT_RULE = "predict_fold"

_RUN = re.compile(r"^(?:seed(?P<seed>\d+)/)?fold(?P<fold>\d+)$")


def _run_parts(arm: str, seed: int | str | None, fold: int | str) -> tuple[str, ...]:
    if seed is None:  # an earlier version's run: no seed folder
        return (str(arm), f"fold{fold}")
    return (str(arm), f"seed{seed}", f"fold{fold}")


def run_dir(results: Path | str, arm: str, seed: int | str | None, fold: int | str) -> Path:
    """The folder of one training run (``best.pt``, ``curves.csv``, ``run.json``).

    Seed ``None``: a run of an earlier version, ``train/<arm>/fold<k>/``.
    """
    return Path(results, "train", *_run_parts(arm, seed, fold))


def predictions_root(results: Path | str) -> Path:
    """The folder of every training run's masks, ``predictions/``."""
    return Path(results) / "predictions"


def predictions_dir(results: Path | str, arm: str, seed: int | str | None, fold: int | str) -> Path:
    """The masks one training run made of its fold's held-out cases.

    Seed ``None``: a run of an earlier version, ``predictions/<arm>/fold<k>/``.
    """
    return run_predictions(predictions_root(results), arm, seed, fold)


def run_predictions(
    predictions: Path | str, arm: str, seed: int | str | None, fold: int | str
) -> Path:
    """One training run's masks in a predictions folder: ``<predictions>/<arm>/seed<s>/fold<k>``.

    For readers given the predictions folder itself (``medtl evaluate --predictions``).
    """
    return Path(predictions, *_run_parts(arm, seed, fold))


def fraction_dir(fractions_root: Path | str, pct: int | str) -> Path:
    """The results folder of one label fraction's runs, ``fractions/frac<pct>``.

    It holds ``train/`` and ``predictions/`` laid out as under ``results/``.

    Example:
        >>> fraction_dir("results/fractions", 25).as_posix()
        'results/fractions/frac25'
    """
    return Path(fractions_root) / f"frac{pct}"


def subset_folds_file(fractions_root: Path | str, pct: int | str, fold: int | str) -> Path:
    """The folds file whose fold ``fold`` trains on the ``pct`` % subset of its patients."""
    return fraction_dir(fractions_root, pct) / f"fold{fold}" / "folds.json"


def evaluation_file(results: Path | str, arm: str, seed: int | str, fold: int | str) -> Path:
    """The metrics of one training run's held-out masks."""
    return Path(results) / "evaluation" / str(arm) / f"seed{seed}" / f"fold{fold}.csv"


@dataclass(frozen=True, order=True)
class TrainedRun:
    """One finished training run found in a results folder.

    Attributes:
        arm: the arm.
        seed: its seed; ``None`` for a run of an earlier version (no seed folder).
        fold: the fold.
        path: its ``best.pt``.
    """

    arm: str
    seed: int | None
    fold: int
    path: Path


def trained_runs(results: Path | str, arm: str | None = None) -> list[TrainedRun]:
    """Every finished training run (a ``best.pt``) of one arm, or of all arms.

    Sorted by arm, seed and fold; runs of an earlier version (``train/<arm>/fold<k>/``)
    come with seed ``None``, before the seeded ones.
    """
    root = Path(results) / "train"
    arms = [arm] if arm is not None else sorted(p.name for p in root.glob("*") if p.is_dir())
    found = []
    for name in arms:
        base = root / name
        for path in [*base.glob("fold*/best.pt"), *base.glob("seed*/fold*/best.pt")]:
            match = _RUN.match(path.parent.relative_to(base).as_posix())
            if match is None:
                continue
            seed = match["seed"]
            found.append(
                TrainedRun(name, None if seed is None else int(seed), int(match["fold"]), path)
            )
    return sorted(found, key=lambda r: (r.arm, -1 if r.seed is None else r.seed, r.fold))
