"""Per-case, per-class segmentation metrics of predicted label maps, in physical units.

Every metric is computed on the original image grid of each case, from the NIfTI files
the workflow wrote: the prediction of each arm and fold against the reference label
named in the manifest. For one class, let ``P`` and ``R`` be the sets of predicted and
reference voxels carrying its label, ``s = (s0, s1, s2)`` the voxel size in mm (the
column norms of the reference label's affine, so anisotropic spacing is respected) and
``v = s0 * s1 * s2`` the voxel volume in mm³.

Overlap:

* ``dice`` = ``2 |P ∩ R| / (|P| + |R|)``;
* ``iou`` (Jaccard) = ``|P ∩ R| / |P ∪ R|``.

Surfaces and distances (MONAI's implementation, ``monai.metrics``, ``use_subvoxels``
off). The surface ``∂X`` of a mask is its set of *boundary voxels*: the voxels of ``X``
that one binary erosion with the 6-connected cross (``scipy.ndimage.binary_erosion``'s
default element) removes, i.e. foreground voxels with at least one face neighbour in
the background; voxels on the edge of the array count as boundary (outside the array is
background). ``d(x, ∂Y)`` is the Euclidean distance in mm between the centre of voxel
``x`` and the nearest voxel centre of ``∂Y``, with the spacing ``s``. Each boundary voxel
counts once, whatever the area of its exposed faces.

* ``hd95`` (mm) = ``max(q95{d(p, ∂R) : p ∈ ∂P}, q95{d(r, ∂P) : r ∈ ∂R})``, with ``q95``
  the 95th percentile with linear interpolation (``compute_hausdorff_distance``);
* ``assd`` (mm) = ``(Σ_{p∈∂P} d(p, ∂R) + Σ_{r∈∂R} d(r, ∂P)) / (|∂P| + |∂R|)``, the mean of
  both directed distance sets pooled (``compute_average_surface_distance``,
  ``symmetric=True``);
* ``nsd``, the normalised surface Dice at tolerance ``τ`` mm =
  ``(|{p ∈ ∂P : d(p, ∂R) ≤ τ}| + |{r ∈ ∂R : d(r, ∂P) ≤ τ}|) / (|∂P| + |∂R|)``
  (``compute_surface_dice``; the comparison is inclusive, ``≤ τ``, and the boundary is
  measured in boundary voxels, not in surface area as DeepMind's ``surface-distance``
  does). ``τ`` is ``EvaluateConfig.tolerance(class name)``, written to the column
  ``nsd_tolerance_mm``.

Volumes (ml): ``volume_ref_ml = |R| v / 1000``, ``volume_pred_ml = |P| v / 1000``,
``volume_error_ml = volume_pred_ml - volume_ref_ml`` and ``volume_error_rel =
(|P| - |R|) / |R|`` (a fraction, not a percentage).

Lesion-wise detection: ``P`` and ``R`` are split into connected components with full
26-connectivity (faces, edges and corners; ``scipy.ndimage.label``). ``lesions_ref`` and
``lesions_pred`` count them; ``lesion_tp`` counts reference components that contain at
least one voxel of ``P``, ``lesion_fn`` the reference components that contain none
(``lesions_ref = lesion_tp + lesion_fn``), and ``lesion_fp`` the predicted components
that contain no voxel of ``R``. A predicted component that bridges two reference
components makes both true positives; a reference component hit by several predicted
components counts once.

Edge cases, per class (defined values, never a crash, ``inf`` or a sentinel number):

* ``P`` and ``R`` both empty (``empty = "both"``): ``dice``, ``iou`` and ``nsd`` are 1.0
  when ``EvaluateConfig.empty_dice`` is ``"one"`` and NaN when it is ``"nan"``;
  ``hd95`` and ``assd`` NaN; volumes and ``volume_error_ml`` 0.0, ``volume_error_rel``
  NaN; all lesion counts 0;
* only ``R`` empty (``empty = "reference"``) or only ``P`` empty (``empty =
  "prediction"``): ``dice``, ``iou`` and ``nsd`` 0.0; ``hd95`` and ``assd`` NaN (no
  surface to measure against); ``volume_error_rel`` NaN when ``R`` is empty;
* otherwise ``empty = ""``.

In ``metrics.csv`` NaN is an empty field and so is ``empty = ""``; read it back with
:func:`read_metrics`, which keeps ``""`` a string and case ids such as ``007`` intact.
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
from scipy import ndimage

from medtl.config import EvaluateConfig
from medtl.io.manifest import read_manifest
from medtl.io.volume import spacing_of
from medtl.kernel.errors import MedtlError
from medtl.kernel.files import atomic_write_text
from medtl.layout import PREDICT_RULE, predictions_dir

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

#: The values of the ``empty`` column.
EMPTY_FLAGS = ("", "both", "reference", "prediction")

#: Columns a table of an earlier version may lack (it then holds one seed).
_OPTIONAL_COLUMNS = ["seed"]


def _quiet_monai() -> None:
    """Ignore the FutureWarning MONAI raises about its own internal call.

    MONAI's surface-distance functions pass the deprecated ``always_return_as_numpy``
    argument to ``get_mask_edges`` themselves (monai 1.5-1.6); the warning is about
    MONAI's code, not ours. The filter is (re)installed before each call because test
    runners reset the filters between tests; ``filterwarnings`` replaces an identical
    filter instead of stacking it, and it is not ``catch_warnings``, which is not safe
    across the evaluation threads.
    """
    warnings.filterwarnings(
        "ignore", message=".*always_return_as_numpy.*", category=FutureWarning, module="monai"
    )


_quiet_monai()

#: Largest absolute difference (mm) tolerated between the affines of two grids.
AFFINE_ATOL = 1e-3


class EvaluationError(MedtlError):
    """Input for evaluation that is missing or inconsistent."""


# ------------------------------------------------------------------ single metrics


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two binary masks.

    Args:
        pred: predicted mask (any shape, truthy = foreground).
        ref: reference mask of the same shape.

    Returns:
        ``2 |P ∩ R| / (|P| + |R|)``; 1.0 when both masks are empty.

    Example:
        >>> a = np.zeros((4, 4, 4), bool); a[:2] = True
        >>> b = np.zeros((4, 4, 4), bool); b[1:3] = True
        >>> dice_score(a, b)
        0.5
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def iou_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two binary masks.

    Counted directly (``monai.metrics.compute_iou`` gives the same from one-hot tensors).

    Args:
        pred: predicted mask (any shape, truthy = foreground).
        ref: reference mask of the same shape.

    Returns:
        ``|P ∩ R| / |P ∪ R|``; 1.0 when both masks are empty.

    Example:
        >>> a = np.zeros((4, 4, 4), bool); a[:2] = True
        >>> b = np.zeros((4, 4, 4), bool); b[1:3] = True
        >>> round(iou_score(a, b), 4)
        0.3333
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    union = int(np.logical_or(p, r).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, r).sum()) / union


def _crop_to_union(p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one voxel, where it fits.

    MONAI crops the same way inside its surface functions (``get_mask_edges``); doing it
    first keeps the float tensors it builds small. Boundary voxels and distances do not
    change: every foreground voxel keeps its six face neighbours, or lies on the array's
    edge in both the full and the cropped array.
    """
    union = p | r
    if not union.any():
        return p, r
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2))
    return p[tuple(box)], r[tuple(box)]


def _surface_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(pred, ref)`` as ``[1, 1, ...]`` float tensors for MONAI; None if either is empty."""
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if not p.any() or not r.any():
        return None
    p, r = _crop_to_union(p, r)
    return (
        torch.from_numpy(p[None, None].astype(np.float32)),
        torch.from_numpy(r[None, None].astype(np.float32)),
    )


def _scalar(value: torch.Tensor) -> float:
    out = float(value.reshape(-1)[0])
    return out if math.isfinite(out) else math.nan


def _spacing_list(spacing, ndim: int) -> list[float]:
    values = [float(s) for s in spacing]
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"voxel spacing: expected {ndim} finite sizes > 0 mm, found {tuple(spacing)}. "
            "How to fix: pass the voxel size of the reference label along each array axis."
        )
    return values


def hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two binary masks, in mm.

    Uses MONAI's surface-distance implementation (boundary voxels, exact Euclidean
    distance with the given spacing); the result is the larger of the two directed 95th
    percentiles, as in ``monai.metrics.compute_hausdorff_distance``.

    Args:
        pred: predicted 3-D mask.
        ref: reference 3-D mask of the same shape.
        spacing: voxel size in mm along the three array axes.

    Returns:
        The distance in mm, or NaN when either mask is empty.

    Example:
        >>> a = np.zeros((6, 6, 6), bool); a[1:4, 1:4, 1:4] = True
        >>> hd95_mm(np.roll(a, 1, axis=2), a, (1.0, 1.0, 2.5))
        2.5
    """
    pair = _surface_pair(pred, ref)
    if pair is None:
        return math.nan
    _quiet_monai()
    from monai.metrics import (
        compute_hausdorff_distance,  # imported here: monai takes seconds to load
    )

    value = compute_hausdorff_distance(
        *pair,
        include_background=True,
        percentile=95,
        spacing=_spacing_list(spacing, pair[0].ndim - 2),
    )
    return _scalar(value)


def assd_mm(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Average symmetric surface distance of two binary masks, in mm.

    ``monai.metrics.compute_average_surface_distance`` with ``symmetric=True``: the mean
    of the distances from every boundary voxel of each mask to the nearest boundary voxel
    of the other, both directions pooled.

    Args:
        pred: predicted 3-D mask.
        ref: reference 3-D mask of the same shape.
        spacing: voxel size in mm along the three array axes.

    Returns:
        The distance in mm, or NaN when either mask is empty.

    Example:
        >>> a = np.zeros((4, 6, 6), bool); a[0] = True
        >>> b = np.zeros((4, 6, 6), bool); b[3] = True
        >>> assd_mm(a, b, (2.0, 1.0, 1.0))  # two plates 3 voxels of 2 mm apart
        6.0
    """
    pair = _surface_pair(pred, ref)
    if pair is None:
        return math.nan
    _quiet_monai()
    from monai.metrics import (
        compute_average_surface_distance,  # imported here: monai takes seconds to load
    )

    value = compute_average_surface_distance(
        *pair,
        include_background=True,
        symmetric=True,
        spacing=_spacing_list(spacing, pair[0].ndim - 2),
    )
    return _scalar(value)


def nsd_score(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> float:
    """Normalised surface Dice of two binary masks at a tolerance in mm.

    ``monai.metrics.compute_surface_dice`` with ``class_thresholds=[tolerance_mm]`` and
    the spacing: the share of boundary voxels of both masks that lie within
    ``tolerance_mm`` (inclusive) of the other mask's boundary.

    Args:
        pred: predicted 3-D mask.
        ref: reference 3-D mask of the same shape.
        spacing: voxel size in mm along the three array axes.
        tolerance_mm: the tolerance τ in mm (finite, ≥ 0).

    Returns:
        The NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Example:
        >>> a = np.zeros((4, 6, 6), bool); a[0] = True
        >>> b = np.zeros((4, 6, 6), bool); b[3] = True
        >>> nsd_score(a, b, (2.0, 1.0, 1.0), 5.0), nsd_score(a, b, (2.0, 1.0, 1.0), 6.0)
        (0.0, 1.0)
    """
    p_any = bool(np.asarray(pred, dtype=bool).any())
    r_any = bool(np.asarray(ref, dtype=bool).any())
    if not p_any and not r_any:
        return 1.0
    pair = _surface_pair(pred, ref)
    if pair is None:
        return 0.0
    _quiet_monai()
    from monai.metrics import compute_surface_dice  # imported here: monai takes seconds to load

    value = compute_surface_dice(
        *pair,
        class_thresholds=[float(tolerance_mm)],
        include_background=True,
        spacing=_spacing_list(spacing, pair[0].ndim - 2),
    )
    return _scalar(value)


def lesion_counts(pred: np.ndarray, ref: np.ndarray) -> dict[str, int]:
    """Lesion-wise detection counts from connected components (26-connectivity in 3-D).

    Components are labelled by ``scipy.ndimage.label`` with the full neighbourhood
    (``generate_binary_structure(ndim, ndim)``); the matching below (a component is hit
    when it shares at least one voxel with the other mask) is simple counting on those
    labels.

    Args:
        pred: predicted mask.
        ref: reference mask of the same shape.

    Returns:
        ``lesions_ref``, ``lesions_pred``, ``lesion_tp`` (reference components with at
        least one predicted voxel), ``lesion_fp`` (predicted components with no
        reference voxel) and ``lesion_fn`` (reference components with no predicted
        voxel).

    Example:
        >>> r = np.zeros((1, 9), bool); r[0, [1, 4, 7]] = True
        >>> p = np.zeros((1, 9), bool); p[0, [1, 2, 5]] = True
        >>> lesion_counts(p, r)["lesion_tp"], lesion_counts(p, r)["lesion_fp"]
        (1, 1)
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    structure = ndimage.generate_binary_structure(r.ndim, r.ndim)
    ref_labels, n_ref = ndimage.label(r, structure=structure)
    pred_labels, n_pred = ndimage.label(p, structure=structure)
    tp = int(np.unique(ref_labels[p & r]).size)
    pred_hitting = int(np.unique(pred_labels[p & r]).size)
    return {
        "lesions_ref": int(n_ref),
        "lesions_pred": int(n_pred),
        "lesion_tp": tp,
        "lesion_fp": int(n_pred) - pred_hitting,
        "lesion_fn": int(n_ref) - tp,
    }


# ------------------------------------------------------------------ one case


def _class_row(
    p: np.ndarray, r: np.ndarray, spacing: list[float], name: str, cfg: EvaluateConfig
) -> dict:
    """Every metric of one class; ``p`` and ``r`` are its boolean masks."""
    n_p, n_r = int(p.sum()), int(r.sum())
    p, r = _crop_to_union(p, r)  # every metric below is unchanged by the crop
    tolerance = cfg.tolerance(name)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if n_p == 0 and n_r == 0:
        flag = "both"
        overlap = 1.0 if cfg.empty_dice == "one" else math.nan
        dice = iou = nsd = overlap
    else:
        flag = "reference" if n_r == 0 else ("prediction" if n_p == 0 else "")
        dice, iou = dice_score(p, r), iou_score(p, r)
        nsd = nsd_score(p, r, spacing, tolerance)
    return {
        "class": name,
        "dice": dice,
        "iou": iou,
        "hd95": hd95_mm(p, r, spacing),
        "assd": assd_mm(p, r, spacing),
        "nsd": nsd,
        "nsd_tolerance_mm": tolerance,
        "volume_ref_ml": n_r * voxel_ml,
        "volume_pred_ml": n_p * voxel_ml,
        "volume_error_ml": (n_p - n_r) * voxel_ml,
        "volume_error_rel": (n_p - n_r) / n_r if n_r else math.nan,
        **lesion_counts(p, r),
        "empty": flag,
    }


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    classes: dict[int, str],
    cfg: EvaluateConfig | None = None,
) -> list[dict]:
    """Every metric of one case, per class (definitions in the module docstring).

    Args:
        pred: predicted label map (integer labels), 3-D.
        ref: reference label map on the same grid.
        spacing: voxel size in mm along the array axes.
        classes: ``{label value: class name}``, background (0) excluded.
        cfg: NSD tolerances and the both-empty convention; defaults to
            ``EvaluateConfig()`` (τ = 2 mm, both empty scores 1.0).

    Returns:
        One dict per class, in the order of ``classes``, with the keys of
        :data:`METRIC_COLUMNS` after ``case`` (``class``, ``dice``, ... ``empty``).

    Raises:
        ValueError: if the two arrays differ in shape, or the spacing is not one size
            > 0 per axis.

    Example:
        >>> a = np.zeros((4, 4, 4), int); a[1:3, 1:3, 1:3] = 1
        >>> row = case_metrics(a, a, (1.0, 1.0, 2.0), {1: "fg"})[0]
        >>> row["dice"], row["hd95"], row["nsd"], row["volume_ref_ml"], row["empty"]
        (1.0, 0.0, 1.0, 0.016, '')
    """
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference differ in shape: expected {ref.shape} (reference), "
            f"found {pred.shape} (prediction). How to fix: predict on the reference grid."
        )
    cfg = EvaluateConfig() if cfg is None else cfg
    sizes = _spacing_list(spacing, ref.ndim)
    return [
        _class_row(pred == int(value), ref == int(value), sizes, str(name), cfg)
        for value, name in classes.items()
    ]


# ------------------------------------------------------------------ files


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
                if seed is None:  # an earlier version's layout: no seed folder
                    pred = Path(predictions) / arm / f"fold{k}" / f"{case}.nii.gz"
                else:
                    pred = (
                        predictions_dir(Path(predictions).parent, arm, seed, k) / f"{case}.nii.gz"
                    )
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
    out_csv: Path,
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
            :func:`medtl.layout.predictions_dir`).
        arms: arm names to evaluate.
        classes: ``{label value: class name}``, background excluded.
        out_csv: where to write the table (atomically).
        threads: cases evaluated in parallel.
        cfg: NSD tolerances and the both-empty convention; defaults to
            ``EvaluateConfig()``.
        fold: evaluate only this fold's held-out cases (one job of a per-arm × fold
            workflow, merged later by :func:`combine_metrics`); None for every fold.
        seed: the training runs' seed (one job per arm, seed and fold). None: an earlier
            version's layout, ``{arm}/fold{k}/``, and a table without a seed column.

    Returns:
        The table written, columns :data:`METRIC_COLUMNS`, sorted by arm, seed, fold,
        case and class.

    Raises:
        EvaluationError: on a missing input file or prediction (naming it), a prediction
            on another grid than its reference label (naming both), or a ``fold`` that
            ``folds.json`` does not have.
    """
    if not classes:
        raise EvaluationError(
            "no classes to evaluate: expected {label value: name}, found an empty mapping. "
            "How to fix: list the foreground classes in the config."
        )
    classes = {int(k): str(v) for k, v in classes.items()}
    cfg = EvaluateConfig() if cfg is None else cfg
    manifest_df = read_manifest(manifest)
    folds_data = read_folds(folds)
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
    df = _sorted_table([row for rows in results for row in rows])
    atomic_write_text(Path(out_csv), df.to_csv(index=False))
    return df


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
    atomic_write_text(Path(out_csv), table.to_csv(index=False))
    return table
