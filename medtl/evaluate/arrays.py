"""Per-class segmentation metrics of a predicted label array against the reference, in mm.

Every metric is computed on the original image grid of each case, from the NIfTI files
the workflow wrote: the prediction of each arm and fold against the reference label
named in the manifest. For one class, let ``P`` and ``R`` be the sets of predicted and
reference voxels carrying its label, ``s = (s0, s1, s2)`` the voxel size in mm (the
column norms of the reference label's affine, so anisotropic spacing is respected) and
``v = s0 * s1 * s2`` the voxel volume in mm³.

Overlap:

* ``dice`` = ``2 |P ∩ R| / (|P| + |R|)``;
* ``iou`` (Jaccard) = ``|P ∩ R| / |P ∪ R|``.

Surfaces and distances: ``hd95`` and ``assd`` (mm) and ``nsd``, the normalised surface
Dice at the class's tolerance ``τ`` mm (``EvaluateConfig.tolerance(class name)``, written
to the column ``nsd_tolerance_mm``), are defined in :mod:`medtl.evaluate.surfaces`.

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
:func:`medtl.evaluate.metrics.read_metrics`, which keeps ``""`` a string and case ids
such as ``007`` intact.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from medtl.config import EvaluateConfig
from medtl.evaluate.surfaces import assd_mm, crop_to_union, hd95_mm, nsd_score, spacing_list

#: The values of the ``empty`` column.
EMPTY_FLAGS = ("", "both", "reference", "prediction")


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


def _class_row(
    p: np.ndarray, r: np.ndarray, spacing: list[float], name: str, cfg: EvaluateConfig
) -> dict:
    """Every metric of one class; ``p`` and ``r`` are its boolean masks."""
    n_p, n_r = int(p.sum()), int(r.sum())
    p, r = crop_to_union(p, r)  # every metric below is unchanged by the crop
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
    sizes = spacing_list(spacing, ref.ndim)
    return [
        _class_row(pred == int(value), ref == int(value), sizes, str(name), cfg)
        for value, name in classes.items()
    ]
