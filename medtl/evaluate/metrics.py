"""Dice and HD95 of predicted label maps against the reference labels.

Both metrics are computed per class on the original image grid of each case, from the
NIfTI files the workflow wrote: the prediction of each arm and fold against the label
named in the manifest. HD95 is in millimetres and uses the physical (possibly
anisotropic) voxel spacing of the reference label's affine.

Edge cases, per class:

* reference and prediction both empty: Dice 1.0, HD95 NaN (no surface to measure);
* exactly one of them empty: Dice 0.0, HD95 NaN (never ``inf`` or a sentinel number).
"""

from __future__ import annotations

import json
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_hausdorff_distance

from medtl.io.errors import MedtlError
from medtl.io.files import atomic_write_text
from medtl.io.ingest import read_manifest

#: Columns of ``metrics.csv``, in order.
METRIC_COLUMNS = ["arm", "fold", "case", "class", "dice", "hd95"]

#: The workflow rule that writes ``predictions/{arm}/fold{k}/{case}.nii.gz``.
PREDICT_RULE = "predict"

# MONAI's own compute_hausdorff_distance passes a deprecated argument internally
# (monai 1.5-1.6); the warning is about MONAI's code, not ours.
warnings.filterwarnings(
    "ignore", message=".*always_return_as_numpy.*", category=FutureWarning, module="monai"
)

#: Largest absolute difference (mm) tolerated between the affines of two grids.
AFFINE_ATOL = 1e-3


class EvaluationError(MedtlError):
    """Input for evaluation that is missing or inconsistent."""


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two binary masks.

    Args:
        pred: predicted mask (any shape, truthy = foreground).
        ref: reference mask of the same shape.

    Returns:
        ``2 |P ∩ R| / (|P| + |R|)``; 1.0 when both masks are empty.
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two binary masks, in mm.

    Uses MONAI's surface-distance implementation (edge voxels, exact Euclidean distance
    with the given spacing); the result is the larger of the two directed 95th
    percentiles, as in ``monai.metrics.compute_hausdorff_distance``.

    Args:
        pred: predicted 3-D mask.
        ref: reference 3-D mask of the same shape.
        spacing: voxel size in mm along the three array axes.

    Returns:
        The distance in mm, or NaN when either mask is empty.
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if not p.any() or not r.any():
        return math.nan
    value = compute_hausdorff_distance(
        torch.from_numpy(p[None, None].astype(np.float32)),
        torch.from_numpy(r[None, None].astype(np.float32)),
        include_background=True,
        percentile=95,
        spacing=[float(s) for s in spacing],
    )
    out = float(value.reshape(-1)[0])
    return out if math.isfinite(out) else math.nan


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    classes: dict[int, str],
) -> list[dict]:
    """Dice and HD95 of one case, per class.

    Args:
        pred: predicted label map (integer labels), 3-D.
        ref: reference label map on the same grid.
        spacing: voxel size in mm along the array axes.
        classes: ``{label value: class name}``, background (0) excluded.

    Returns:
        One dict per class, in the order of ``classes``:
        ``{"class": name, "dice": float, "hd95": float}``.

    Raises:
        ValueError: if the two arrays differ in shape.

    Example:
        >>> a = np.zeros((4, 4, 4), int); a[1:3, 1:3, 1:3] = 1
        >>> case_metrics(a, a, (1.0, 1.0, 1.0), {1: "fg"})[0]["dice"]
        1.0
    """
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference differ in shape: expected {ref.shape} (reference), "
            f"found {pred.shape} (prediction). How to fix: predict on the reference grid."
        )
    rows = []
    for value, name in classes.items():
        p = pred == int(value)
        r = ref == int(value)
        rows.append({"class": name, "dice": dice_score(p, r), "hd95": hd95_mm(p, r, spacing)})
    return rows


def _load_label(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
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


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))


@dataclass(frozen=True)
class _Task:
    arm: str
    fold: int
    case: str
    pred: Path
    ref: Path


def _evaluate_task(task: _Task, classes: dict[int, str]) -> list[dict]:
    pred_img = _load_label(task.pred)
    ref_img = _load_label(task.ref)
    check_same_grid(task.pred, task.ref, pred_img, ref_img)
    rows = case_metrics(pred_img[0], ref_img[0], _spacing(ref_img[1]), classes)
    return [{"arm": task.arm, "fold": task.fold, "case": task.case, **row} for row in rows]


def read_folds(folds: Path) -> dict:
    """Read ``folds.json``.

    Raises:
        EvaluationError: if the file is missing or has no ``folds`` list.
    """
    folds = Path(folds)
    if not folds.is_file():
        raise EvaluationError(
            f"folds file not found: expected {folds}. How to fix: run the split stage first."
        )
    data = json.loads(folds.read_text())
    if not isinstance(data.get("folds"), list):
        raise EvaluationError(
            f"{folds}: expected a 'folds' list, found keys {sorted(data)}. "
            "How to fix: regenerate it with the split stage."
        )
    return data


def _tasks(
    manifest_df: pd.DataFrame, manifest: Path, folds_data: dict, predictions: Path, arms: list[str]
) -> list[_Task]:
    labels = dict(zip(manifest_df["case_id"], manifest_df["label"], strict=True))
    tasks: list[_Task] = []
    missing: list[str] = []
    for arm in arms:
        for fold in folds_data["folds"]:
            k = int(fold["fold"])
            for case in fold["test"]:
                label = labels.get(case)
                if not label:
                    found = "no row" if label is None else "an empty label"
                    raise EvaluationError(
                        f"{manifest}: test case {case!r} of fold {k} needs a reference label; "
                        f"found {found}. How to fix: keep unlabelled cases out of the folds."
                    )
                pred = Path(predictions) / arm / f"fold{k}" / f"{case}.nii.gz"
                if not pred.is_file():
                    missing.append(str(pred))
                tasks.append(_Task(arm, k, case, pred, Path(label)))
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


def evaluate_predictions(
    manifest: Path,
    folds: Path,
    predictions: Path,
    arms: list[str],
    classes: dict[int, str],
    out_csv: Path,
    threads: int = 1,
) -> pd.DataFrame:
    """Dice and HD95 of every arm's predictions on every fold's held-out cases.

    Args:
        manifest: ``results/ingest/manifest.tsv``; label paths in it are relative to the
            working directory.
        folds: ``results/splits/folds.json``; each fold's ``test`` cases are evaluated.
        predictions: ``results/predictions`` (holds ``{arm}/fold{k}/{case}.nii.gz``).
        arms: arm names to evaluate.
        classes: ``{label value: class name}``, background excluded.
        out_csv: where to write ``metrics.csv`` (atomically).
        threads: cases evaluated in parallel.

    Returns:
        The table written, columns ``arm, fold, case, class, dice, hd95``, sorted by
        arm, fold, case and class.

    Raises:
        EvaluationError: on a missing input file or prediction (naming it), or a
            prediction on another grid than its reference label (naming both).
    """
    if not classes:
        raise EvaluationError(
            "no classes to evaluate: expected {label value: name}, found an empty mapping. "
            "How to fix: list the foreground classes in the config."
        )
    classes = {int(k): str(v) for k, v in classes.items()}
    manifest_df = read_manifest(manifest)
    folds_data = read_folds(folds)
    tasks = _tasks(manifest_df, Path(manifest), folds_data, Path(predictions), list(arms))
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        results = list(pool.map(lambda t: _evaluate_task(t, classes), tasks))
    rows = [row for rows in results for row in rows]
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    df["fold"] = df["fold"].astype(int)
    df = df.sort_values(["arm", "fold", "case", "class"], kind="stable").reset_index(drop=True)
    atomic_write_text(Path(out_csv), df.to_csv(index=False))
    return df
