"""Where a run keeps what each training run made: one place for the library and the rules.

A *training run* is one (arm, seed, fold): the arm's model trained on the fold's training
cases with that seed. Its files live under the results folder:

* ``train/<arm>/seed<s>/fold<k>/`` — ``best.pt``, ``curves.csv``, ``run.json``, ...
* ``predictions/<arm>/seed<s>/fold<k>/<case>.nii.gz`` — its masks of the held-out cases
* ``evaluation/<arm>/seed<s>/fold<k>.csv`` — their metrics

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

from medtl.kernel.errors import InputError

#: The rule that writes each training run's masks of its held-out cases.
PREDICT_RULE = "predict_fold"

_RUN = re.compile(r"^(?:seed(?P<seed>\d+)/)?fold(?P<fold>\d+)$")


def run_dir(results: Path | str, arm: str, seed: int | str, fold: int | str) -> Path:
    """The folder of one training run (``best.pt``, ``curves.csv``, ``run.json``)."""
    return Path(results) / "train" / str(arm) / f"seed{seed}" / f"fold{fold}"


def predictions_dir(results: Path | str, arm: str, seed: int | str, fold: int | str) -> Path:
    """The masks one training run made of its fold's held-out cases."""
    return Path(results) / "predictions" / str(arm) / f"seed{seed}" / f"fold{fold}"


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


#: A training run's best model, in its folder (``train/<arm>/seed<s>/fold<k>/best.pt``).
BEST_CHECKPOINT = "best.pt"


def arm_dir(results: Path | str, arm: str) -> Path:
    """The folder of every training run of one arm (``train/<arm>``)."""
    return Path(results) / "train" / str(arm)


def plan_file(results: Path | str) -> Path:
    """The run's preprocessing plan (``preprocess/plan.json``)."""
    return Path(results) / "preprocess" / "plan.json"


def checkpoint_file(results: Path | str, arm: str, seed: int | str | None, fold: int | str) -> Path:
    """The best model of one training run; seed ``None``: a run of an earlier version.

    Example:
        >>> checkpoint_file("results", "scratch", None, 1).as_posix()
        'results/train/scratch/fold1/best.pt'
    """
    if seed is None:
        return arm_dir(results, arm) / f"fold{fold}" / BEST_CHECKPOINT
    return run_dir(results, arm, seed, fold) / BEST_CHECKPOINT


def runs_of_arm(results: Path | str, arm: str, fix: str) -> list[TrainedRun]:
    """Every finished training run of ``arm`` (as :func:`trained_runs`), at least one.

    Args:
        results: the results folder of a run.
        arm: the arm.
        fix: what the caller's user should do when there is none.

    Raises:
        InputError: the arm has no trained model (naming the arms that have one).
    """
    runs = trained_runs(results, arm)
    if not runs:
        arms = sorted({r.arm for r in trained_runs(results)})
        raise InputError(
            arm_dir(results, arm),
            f"no trained models for arm {arm!r}"
            + (f" (arms found: {', '.join(arms)})" if arms else ""),
            fix,
        )
    return runs
