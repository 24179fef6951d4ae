"""Metrics of the predicted masks, read from the files the workflow wrote: ``metrics.csv``.

Every metric is computed on the original image grid of each case: the prediction of each
arm, seed and fold against the reference label named in the manifest, per class
(:func:`medtl.evaluate.arrays.case_metrics`; the definitions are in
:mod:`medtl.evaluate.arrays`). :func:`evaluate_predictions` returns the table,
:func:`write_metrics` writes it.

In ``metrics.csv`` NaN is an empty field and so is ``empty = ""``; read it back with
:func:`read_metrics`, which keeps ``""`` a string and case ids such as ``007`` intact.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medtl.config import EvaluateConfig
from medtl.evaluate.arrays import case_metrics
from medtl.io.manifest import read_manifest
from medtl.io.volume import spacing_of
from medtl.kernel.classes import ClassMap
from medtl.kernel.errors import MedtlError
from medtl.kernel.files import atomic_write_text
from medtl.layout import PREDICT_RULE, run_predictions
from medtl.split.folds import load_folds

#: Columns of ``metrics.csv``, in order.
METRIC_COLUMNS = [
    "arm",
    "fold",
    "seed",
    "case",
    "class",
    "dice",
    "iou",
    "hd95",
    "assd",
    "nsd",
    "nsd_tolerance_mm",
    "volume_ref_ml",
    "volume_pred_ml",
    "volume_error_ml",
    "volume_error_rel",
    "lesions_ref",
    "lesions_pred",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
    "empty",
]

#: Columns holding counts (integers, never NaN) and text; every other one after
#: ``case`` and ``class`` is a float that may be NaN.
_INT_COLUMNS = [
    "fold",
    "seed",
    "lesions_ref",
    "lesions_pred",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
]
_TEXT_COLUMNS = ["arm", "case", "class", "empty"]
_FLOAT_COLUMNS = [c for c in METRIC_COLUMNS if c not in _INT_COLUMNS + _TEXT_COLUMNS]

#: Columns a table of an earlier version may lack (it then holds one seed).
_OPTIONAL_COLUMNS = ["seed"]


#: Largest absolute difference (mm) tolerated between the affines of two grids.
AFFINE_ATOL = 1e-3


class EvaluationError(MedtlError):
    """Input for evaluation that is missing or inconsistent."""


def load_label(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Read a label map: (integer array, affine, shape); trailing singleton axes dropped."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise EvaluationError(
            f"{path}: expected a 3-D label map, found shape {tuple(img.shape)}. "
            "How to fix: write one 3-D label volume per case."
        )
    if not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data)
    return data.astype(np.int32), np.asarray(img.affine, dtype=float), data.shape


def check_same_grid(pred_path: Path, ref_path: Path, pred_img: tuple, ref_img: tuple) -> None:
    """Refuse a prediction that is not on the reference label's grid.

    Args:
        pred_path: the prediction file, for the message.
        ref_path: the reference label file, for the message.
        pred_img: ``(array, affine, shape)`` of the prediction.
        ref_img: ``(array, affine, shape)`` of the reference.

    Raises:
        EvaluationError: naming both files, if shapes differ or affines are not allclose.
    """
    _, p_aff, p_shape = pred_img
    _, r_aff, r_shape = ref_img
    if tuple(p_shape) != tuple(r_shape):
        raise EvaluationError(
            f"prediction {pred_path} and reference label {ref_path} are on different grids: "
            f"expected shape {tuple(r_shape)}, found {tuple(p_shape)}. How to fix: "
            "write predictions in the original image space (resample back before saving)."
        )
    if not np.allclose(p_aff, r_aff, rtol=0.0, atol=AFFINE_ATOL):
        raise EvaluationError(
            f"prediction {pred_path} and reference label {ref_path} are on different grids: "
            f"expected affine {np.round(r_aff, 4).tolist()}, found {np.round(p_aff, 4).tolist()}. "
            "How to fix: save predictions with the affine of the manifest image."
        )


@dataclass(frozen=True)
class _Task:
    arm: str
    fold: int
    seed: int | None
    case: str
    pred: Path
    ref: Path


def _evaluate_task(task: _Task, classes: dict[int, str], cfg: EvaluateConfig) -> list[dict]:
    pred_img = load_label(task.pred)
    ref_img = load_label(task.ref)
    check_same_grid(task.pred, task.ref, pred_img, ref_img)
    rows = case_metrics(pred_img[0], ref_img[0], spacing_of(ref_img[1]), classes, cfg)
    key = {"arm": task.arm, "fold": task.fold, "seed": task.seed, "case": task.case}
    return [{**key, **row} for row in rows]


def _tasks(
    manifest_df: pd.DataFrame,
    manifest: Path,
    folds_data: dict,
    predictions: Path,
    arms: list[str],
    only_fold: int | None = None,
    seed: int | None = None,
) -> list[_Task]:
    labels = dict(zip(manifest_df["case_id"], manifest_df["label"], strict=True))
    tasks: list[_Task] = []
    missing: list[str] = []
    for arm in arms:
        for fold in folds_data["folds"]:
            k = int(fold["fold"])
            if only_fold is not None and k != only_fold:
                continue
            for case in fold["test"]:
                label = labels.get(case)
                if not label:
                    found = "no row" if label is None else "an empty label"
                    raise EvaluationError(
                        f"{manifest}: test case {case!r} of fold {k} needs a reference label; "
                        f"found {found}. How to fix: keep unlabelled cases out of the folds."
                    )
                # seed None: an earlier version's layout, no seed folder
                pred = run_predictions(predictions, arm, seed, k) / f"{case}.nii.gz"
                if not pred.is_file():
                    missing.append(str(pred))
                tasks.append(_Task(arm, k, seed, case, pred, Path(label)))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EvaluationError(
            f"prediction not found: expected {missing[0]}{more}, made by rule "
            f"'{PREDICT_RULE}'. How to fix: run the workflow's '{PREDICT_RULE}' rule for "
            "every arm and fold (e.g. snakemake --forcerun predict) before evaluating."
        )
    for t in tasks:
        if not t.ref.is_file():
            raise EvaluationError(
                f"reference label of case {t.case!r} not found: expected {t.ref} (from "
                f"{manifest}; paths are relative to the working directory). How to fix: run "
                "the workflow from the folder the manifest was made in."
            )
    return tasks


def _sorted_table(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The rows as a metrics table; without seeds (an earlier version's) no seed column."""
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    if df["seed"].isna().any():
        df = df.drop(columns="seed")
    for column in _INT_COLUMNS:
        if column in df:
            df[column] = df[column].astype(int)
    for column in _FLOAT_COLUMNS:
        df[column] = df[column].astype(float)
    key = [c for c in ("arm", "seed", "fold", "case", "class") if c in df]
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def evaluate_predictions(
    manifest: Path,
    folds: Path,
    predictions: Path,
    arms: list[str],
    classes: dict[int, str],
    threads: int = 1,
    cfg: EvaluateConfig | None = None,
    fold: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Every metric of every arm's predictions on the folds' held-out cases.

    Args:
        manifest: ``results/ingest/manifest.tsv``; label paths in it are relative to the
            working directory.
        folds: ``results/splits/folds.json``; each fold's ``test`` cases are evaluated.
        predictions: ``results/predictions`` (holds ``{arm}/seed{s}/fold{k}/{case}.nii.gz``,
            :func:`medtl.layout.run_predictions`).
        arms: arm names to evaluate.
        classes: ``{label value: class name}``, background excluded.
        threads: cases evaluated in parallel.
        cfg: NSD tolerances and the both-empty convention; defaults to
            ``EvaluateConfig()``.
        fold: evaluate only this fold's held-out cases (one job of a per-arm × fold
            workflow, merged later by :func:`combine_metrics`); None for every fold.
        seed: the training runs' seed (one job per arm, seed and fold). None: an earlier
            version's layout, ``{arm}/fold{k}/``, and a table without a seed column.

    Returns:
        The table (write it with :func:`write_metrics`), columns :data:`METRIC_COLUMNS`,
        sorted by arm, seed, fold, case and class.

    Raises:
        EvaluationError: on a missing input file or prediction (naming it), a prediction
            on another grid than its reference label (naming both), or a ``fold`` that
            ``folds.json`` does not have.
        InputError: on a missing or malformed ``folds.json``.
    """
    if not classes:
        raise EvaluationError(
            "no classes to evaluate: expected {label value: name}, found an empty mapping. "
            "How to fix: list the foreground classes in the config."
        )
    classes = ClassMap.parse(classes, "classes")
    cfg = EvaluateConfig() if cfg is None else cfg
    manifest_df = read_manifest(manifest)
    folds_data = load_folds(folds)
    if fold is not None:
        known = [int(f["fold"]) for f in folds_data["folds"]]
        if int(fold) not in known:
            raise EvaluationError(
                f"{folds}: fold {fold} to evaluate is not there: expected one of {known}, "
                f"found {int(fold)}. How to fix: pass a fold of this split, or rerun the "
                "split stage with more folds."
            )
        fold = int(fold)
    tasks = _tasks(
        manifest_df, Path(manifest), folds_data, Path(predictions), list(arms), fold, seed
    )
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        results = list(pool.map(lambda t: _evaluate_task(t, classes, cfg), tasks))
    return _sorted_table([row for rows in results for row in rows])


def write_metrics(table: pd.DataFrame, out_csv: Path) -> Path:
    """Write a table of :func:`evaluate_predictions` (atomically); NaN as an empty field.

    Returns:
        ``out_csv``.
    """
    atomic_write_text(Path(out_csv), table.to_csv(index=False))
    return Path(out_csv)


def read_metrics(path: Path) -> pd.DataFrame:
    """Read a table written by :func:`evaluate_predictions` or :func:`combine_metrics`.

    Text columns stay text (``empty = ""`` is not NaN, case id ``007`` stays ``007``);
    count columns are integers and the other columns floats, NaN where the field is
    empty. Only :data:`METRIC_COLUMNS` are kept, in that order (a table of an earlier
    version, without ``seed``, is read without it: one seed).

    Raises:
        EvaluationError: naming the file, if it is missing, lacks a column of
            :data:`METRIC_COLUMNS`, or holds a value that is not a number where one
            belongs.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(
            f"metrics table not found: expected {path}. How to fix: run the 'evaluate' "
            "rule for every arm and fold first."
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    missing = [c for c in METRIC_COLUMNS if c not in df.columns and c not in _OPTIONAL_COLUMNS]
    if missing:
        raise EvaluationError(
            f"{path}: expected the columns {METRIC_COLUMNS}, found {list(df.columns)} "
            f"(missing {missing}). How to fix: rerun the 'evaluate' rule that writes it "
            "(it may be from an older version of medtl)."
        )
    df = df[[c for c in METRIC_COLUMNS if c in df.columns]].copy()
    for column in [c for c in _INT_COLUMNS + _FLOAT_COLUMNS if c in df.columns]:
        values = df[column].str.strip().replace("", "nan")
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & (values.str.lower() != "nan")]
        if column in _INT_COLUMNS:
            bad = values[numbers.isna() | (numbers != numbers.round())]
        if len(bad):
            kind = "an integer" if column in _INT_COLUMNS else "a number or an empty field"
            raise EvaluationError(
                f"{path}: column {column!r} row {int(bad.index[0]) + 2}: expected {kind}, "
                f"found {bad.iloc[0]!r}. How to fix: rerun the 'evaluate' rule that writes it."
            )
        df[column] = numbers.astype(int) if column in _INT_COLUMNS else numbers.astype(float)
    return df


def combine_metrics(paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """Concatenate per-arm × fold tables of :func:`evaluate_predictions` into one.

    Args:
        paths: the tables to merge (each read with :func:`read_metrics`).
        out_csv: where to write ``metrics.csv`` (atomically).

    Returns:
        The table written: columns :data:`METRIC_COLUMNS`, sorted by arm, fold, case
        and class.

    Raises:
        EvaluationError: if no table is given, a table is missing or lacks a column
            (naming it), or one arm, fold, case and class appears in two rows (naming
            the files).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise EvaluationError(
            "no metrics tables to combine: expected at least one per-arm × fold table, "
            "found none. How to fix: pass the tables written by the 'evaluate' jobs."
        )
    frames = []
    for path in paths:
        df = read_metrics(path)
        df["_source"] = str(path)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    if "seed" in table and table["seed"].isna().any():
        raise EvaluationError(
            "metrics tables to combine: expected all with a seed column or all without "
            f"(an earlier version's), found both ({', '.join(map(str, paths))}). How to fix: "
            "rerun the 'evaluate' rule for every training run."
        )
    key = [c for c in ("arm", "seed", "fold", "case", "class") if c in table]
    dup = table[table.duplicated(key, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        sources = sorted(set(dup.loc[(dup[key] == first[key]).all(axis=1), "_source"]))
        raise EvaluationError(
            f"metrics of arm {first['arm']!r}, "
            + (f"seed {int(first['seed'])}, " if "seed" in key else "")
            + f"fold {first['fold']}, case {first['case']!r}, "
            f"class {first['class']!r}: expected one row, found "
            f"{int((dup[key] == first[key]).all(axis=1).sum())} in {', '.join(sources)}. "
            "How to fix: pass each per-arm × fold table once."
        )
    table = _sorted_table(table[[c for c in METRIC_COLUMNS if c in table]])
    write_metrics(table, out_csv)
    return table
