"""Where a run keeps what each training run made: one place for the library and the rules.

A *training run* is one (arm, seed, fold): the arm's model trained on the fold's training
cases with that seed. Its files live under the results folder:

* ``train/<arm>/seed<s>/fold<k>/`` — ``best.pt``, ``curves.csv``, ``run.json``, ...
* ``predictions/<arm>/seed<s>/fold<k>/<case>.nii.gz`` — its masks of the held-out cases
* ``evaluation/<arm>/seed<s>/fold<k>.csv`` — their metrics
* ``fractions/frac<pct>/`` — the runs of one label fraction, laid out as above, and
  ``fractions/frac<pct>/fold<k>/folds.json``, the folds they train on

The axes that tell runs apart are written down once, in :data:`RUN_AXES`; every path
and the reader :func:`trained_runs` are built from it. The workflow's rules
(``pipeline/*.smk``) build their paths with :func:`run_path`, passing wildcard names
(:func:`wildcards`), so a new axis (a data set, an image size …) is a new :class:`Axis`
here, a field of :class:`TrainedRun`, and the rule that gives the axis its values
(``docs/architecture.md`` walks through it). Runs of an earlier version kept
``train/<arm>/fold<k>/`` (one seed, no seed folder): the readers here still find them,
as seed ``None``.

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

#: A training run's best model, in its folder (``train/<arm>/seed<s>/fold<k>/best.pt``).
BEST_CHECKPOINT = "best.pt"

#: Beside a training run's held-out masks (``predictions/<arm>/seed<s>/fold<k>/``): one row
#: per case (uncertainty scores, seconds), the voxels calibration is fitted on, and the
#: prediction job's record (model size, peak memory).
CV_CASE_SCORES = "cases.tsv"
CV_CALIBRATION_SAMPLE = "calibration.npz"
CV_PREDICTION_RECORD = "prediction.json"


@dataclass(frozen=True)
class Axis:
    """One axis that tells training runs apart.

    Attributes:
        name: its wildcard in the rules and its field in :class:`TrainedRun`.
        folder: its folder name, ``{}`` standing for the value (``seed{}``).
        pattern: a regular expression that matches any of its values.
        optional: runs of an earlier version may lack its folder (read as ``None``).
        integer: its values are whole numbers (read back from a folder name as ``int``).
    """

    name: str
    folder: str
    pattern: str
    optional: bool = False
    integer: bool = False

    def value(self, text: str | None) -> str | int | None:
        """The axis's value as read from a folder name (``None`` stays ``None``)."""
        return int(text) if self.integer and text is not None else text


#: The axes of a training run, outermost folder first.
RUN_AXES: tuple[Axis, ...] = (
    Axis("arm", "{}", r"[A-Za-z0-9_.-]+"),
    Axis("seed", "seed{}", r"\d+", optional=True, integer=True),
    Axis("fold", "fold{}", r"\d+", integer=True),
)

#: Each kind of run output: its top folder under the results, and the suffix of the last
#: axis (a folder for ``train`` and ``predictions``, one CSV file for ``evaluation``).
KINDS: dict[str, tuple[str, str]] = {
    "train": ("train", ""),
    "predictions": ("predictions", ""),
    "evaluation": ("evaluation", ".csv"),
}


def run_path(kind: str, results: Path | str, **values: object) -> Path:
    """Where one training run keeps its output of one kind.

    Args:
        kind: ``train`` (its folder), ``predictions`` (its masks' folder) or
            ``evaluation`` (its metrics file).
        results: the results folder.
        **values: the value of every axis of :data:`RUN_AXES` (wildcards allowed;
            ``None`` for an optional axis: a run of an earlier version, without its folder).

    Example:
        >>> run_path("evaluation", "r", arm="a", seed=1, fold=3).as_posix()
        'r/evaluation/a/seed1/fold3.csv'
        >>> run_path("train", "r", **wildcards()).as_posix()
        'r/train/{arm}/seed{seed}/fold{fold}'
    """
    missing = [a.name for a in RUN_AXES if a.name not in values]
    unknown = sorted(set(values) - {a.name for a in RUN_AXES})
    if missing or unknown or kind not in KINDS:
        raise ValueError(
            f"run_path({kind!r}, ...): expected a kind of {sorted(KINDS)} and a value for "
            f"each axis {[a.name for a in RUN_AXES]}; missing {missing}, unknown {unknown}"
        )
    top, suffix = KINDS[kind]
    parts = _run_parts(**values)
    parts[-1] += suffix
    return Path(results, top, *parts)


def _run_parts(**values: object) -> list[str]:
    """The folder names of one run, outermost first; an optional axis given ``None`` is left out."""
    return [
        axis.folder.format(values[axis.name])
        for axis in RUN_AXES
        if not (axis.optional and values[axis.name] is None)
    ]


def wildcards() -> dict[str, str]:
    """Every axis as a Snakemake wildcard (``{"arm": "{arm}", ...}``), for the rules."""
    return {axis.name: "{" + axis.name + "}" for axis in RUN_AXES}


def wildcard_patterns() -> dict[str, str]:
    """The regular expression of each axis's values: the rules' wildcard constraints."""
    return {axis.name: axis.pattern for axis in RUN_AXES}


def run_dir(results: Path | str, arm: str, seed: int | str | None, fold: int | str) -> Path:
    """The folder of one training run (``best.pt``, ``curves.csv``, ``run.json``).

    Seed ``None``: a run of an earlier version, ``train/<arm>/fold<k>/``.
    """
    return run_path("train", results, arm=arm, seed=seed, fold=fold)


def predictions_dir(results: Path | str, arm: str, seed: int | str | None, fold: int | str) -> Path:
    """The masks one training run made of its fold's held-out cases.

    Seed ``None``: a run of an earlier version, ``predictions/<arm>/fold<k>/``.
    """
    return run_predictions(predictions_root(results), arm, seed, fold)


def predictions_root(results: Path | str) -> Path:
    """The folder of every training run's masks, ``predictions/``."""
    return Path(results) / KINDS["predictions"][0]


def run_predictions(
    predictions: Path | str, arm: str, seed: int | str | None, fold: int | str
) -> Path:
    """One training run's masks in a predictions folder: ``<predictions>/<arm>/seed<s>/fold<k>``.

    For readers given the predictions folder itself (``medtl evaluate --predictions``).
    """
    return Path(predictions, *_run_parts(arm=arm, seed=seed, fold=fold))


def trust_file(results: Path | str, arm: str) -> Path:
    """Where the workflow writes ``arm``'s calibration and flag rule: ``trust/<arm>.json``."""
    return Path(results) / "trust" / f"{arm}.json"


def evaluation_file(results: Path | str, arm: str, seed: int | str, fold: int | str) -> Path:
    """The metrics of one training run's held-out masks."""
    return run_path("evaluation", results, arm=arm, seed=seed, fold=fold)


@dataclass(frozen=True, order=True)
class TrainedRun:
    """One finished training run found in a results folder: a value per axis, and its model.

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


def _run_folder() -> re.Pattern[str]:
    """The path of a run folder under ``train/``, one named group per axis."""
    parts = []
    for axis in RUN_AXES:
        value = f"(?P<{axis.name}>{axis.pattern})"
        part = re.escape(axis.folder).replace(re.escape("{}"), value).replace("{}", value)
        parts.append(f"(?:{part}/)?" if axis.optional else f"{part}/")
    return re.compile("^" + "".join(parts)[:-1] + "$")


def trained_runs(results: Path | str, arm: str | None = None) -> list[TrainedRun]:
    """Every finished training run (a ``best.pt``) of one arm, or of all arms.

    Sorted by arm, seed and fold; runs of an earlier version (``train/<arm>/fold<k>/``)
    come with seed ``None``, before the seeded ones.
    """
    root = Path(results) / KINDS["train"][0]
    folder = _run_folder()
    found = []
    for path in root.glob(f"**/{BEST_CHECKPOINT}"):
        match = folder.match(path.parent.relative_to(root).as_posix())
        if match is None or (arm is not None and match["arm"] != arm):
            continue
        values = {axis.name: axis.value(match[axis.name]) for axis in RUN_AXES}
        found.append(TrainedRun(**values, path=path))
    return sorted(found, key=lambda r: (r.arm, -1 if r.seed is None else r.seed, r.fold))


def arm_dir(results: Path | str, arm: str) -> Path:
    """The folder of every training run of one arm (``train/<arm>``)."""
    return Path(results) / KINDS["train"][0] / str(arm)


def plan_file(results: Path | str) -> Path:
    """The run's preprocessing plan (``preprocess/plan.json``)."""
    return Path(results) / "preprocess" / "plan.json"


def checkpoint_file(results: Path | str, arm: str, seed: int | str | None, fold: int | str) -> Path:
    """The best model of one training run; seed ``None``: a run of an earlier version.

    Example:
        >>> checkpoint_file("results", "scratch", None, 1).as_posix()
        'results/train/scratch/fold1/best.pt'
    """
    return run_path("train", results, arm=arm, seed=seed, fold=fold) / BEST_CHECKPOINT


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


#: The domain-shift record and its per-case table, in :func:`shift_dir`.
SHIFT_RECORD = "shift.json"
SHIFT_CASES = "per_case.tsv"


def shift_dir(results: Path | str) -> Path:
    """Where ``medtl shift`` writes the workflow's domain-shift measures: ``shift/``.

    Example:
        >>> (shift_dir("results") / SHIFT_RECORD).as_posix()
        'results/shift/shift.json'
    """
    return Path(results) / "shift"
