"""Per-case preprocessing with the plan, and its exact inverse for predictions.

Forward: reorient to the closest canonical (RAS) frame → crop to the non-zero bounding
box → resample to the plan's spacing → normalise intensities. Everything needed to
undo these steps is kept in the case's ``meta``, so a prediction made on the
preprocessed grid is written back on the original image grid, voxel for voxel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_write
from medtl.preprocess.plan import Plan


@dataclass
class PreprocessedCase:
    """A case on the plan's grid.

    Attributes:
        image: float32 array ``(channels, x, y, z)``.
        label: uint8 array ``(x, y, z)`` or None for unlabelled cases.
        meta: geometry needed to invert the preprocessing (JSON-able).
    """

    image: np.ndarray
    label: np.ndarray | None
    meta: dict[str, Any]


def _float_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 tensor of ``array`` in its own memory layout (copied only where a stride is
    negative, which torch cannot take, or to convert): a C-ordered copy of nibabel's
    Fortran-ordered volume cost 0.3 s of a CT case, and the resampling is bit-identical."""
    values = np.asarray(array, dtype=np.float32)
    if any(stride < 0 for stride in values.strides):
        values = values.copy(order="K")
    return torch.from_numpy(values)


def _resize(array: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray:
    t = _float_tensor(array)[None, None]
    if mode == "nearest":
        out = F.interpolate(t, size=shape, mode="nearest-exact")
    else:
        out = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def nonzero_bbox(array: np.ndarray) -> list[tuple[int, int]]:
    """Bounding box ``[(lo, hi), ...]`` of the non-zero voxels (the whole array if none).

    From each axis's projection (``any`` over the other axes), not the voxels' indices:
    on a 512 × 512 × 120 CT volume 0.1 s instead of 1.5.

    Example:
        >>> a = np.zeros((4, 5, 6)); a[1, 2:4, 3] = 1
        >>> nonzero_bbox(a)
        [(1, 2), (2, 4), (3, 4)]
    """
    box = []
    for axis in range(array.ndim):
        others = tuple(a for a in range(array.ndim) if a != axis)
        hits = np.flatnonzero(np.any(array, axis=others))
        if len(hits) == 0:
            return [(0, s) for s in array.shape]
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def normalise(image: np.ndarray, plan: Plan, channel: int = 0) -> np.ndarray:
    """Intensity normalisation of the plan (``ct`` or ``zscore``) for one channel.

    ``ct`` uses the data set's foreground statistics of the first channel (CT is one
    channel); other channels, and every channel under ``zscore``, are z-scored per image.
    """
    if plan.normalization == "ct" and channel == 0:
        lo, hi = plan.intensity["p005"], plan.intensity["p995"]
        out = np.clip(image, lo, hi)
        return ((out - plan.intensity["mean"]) / max(plan.intensity["std"], 1e-8)).astype(
            np.float32
        )
    mask = image != 0
    values = image[mask] if mask.any() else image
    return ((image - values.mean()) / max(float(values.std()), 1e-8)).astype(np.float32)


def preprocess_arrays(
    image: nib.Nifti1Image, label: nib.Nifti1Image | None, plan: Plan
) -> PreprocessedCase:
    """Preprocess one case given as NIfTI images.

    Example:
        >>> img = nib.Nifti1Image(np.random.rand(8, 8, 4).astype("f4"), np.diag([1, 1, 2, 1.0]))
        >>> plan = Plan("MR", (2.0, 2.0, 2.0), "zscore", {}, True, (4, 4, 4), 1, {"1": "x"})
        >>> preprocess_arrays(img, None, plan).image.shape
        (1, 4, 4, 4)
    """
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise InputError(
            image.get_filename() or "image",
            f"expected a 3-D image (or 4-D with channels last), got shape {data.shape}",
            "give one 3-D volume per case, or its channels stacked along a fourth axis",
        )
    grid = data.shape[:3]
    ornt = nib.orientations.io_orientation(image.affine)
    # apply_orientation reorients the first three axes and keeps the channel axis.
    canon = nib.orientations.apply_orientation(data, ornt)
    lab_canon = None
    if label is not None:
        lab = np.asarray(label.dataobj)
        if lab.shape != grid or not np.allclose(label.affine, image.affine, atol=1e-3):
            raise InputError(
                label.get_filename() or "label",
                f"label grid {lab.shape} does not match image grid {grid} (shape or affine differ)",
                "export the label on the image's grid (same shape and orientation)",
            )
        lab_canon = nib.orientations.apply_orientation(lab, ornt).astype(np.uint8)

    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = zooms
    canon_grid = canon.shape[:3]
    if plan.crop_foreground:
        bbox = nonzero_bbox(np.any(canon != 0, axis=3))
    else:
        bbox = [(0, s) for s in canon_grid]
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    cropped = canon[sl]
    new_shape = tuple(
        max(1, int(round(n * s / t)))
        for n, s, t in zip(cropped.shape[:3], spacing, plan.target_spacing, strict=True)
    )
    channels = [
        normalise(_resize(cropped[..., c], new_shape, "linear"), plan, c)
        for c in range(cropped.shape[3])
    ]
    out_label = None
    if lab_canon is not None:
        out_label = _resize(lab_canon[sl], new_shape, "nearest").astype(np.uint8)
    meta = {
        "original_shape": list(grid),
        "original_affine": image.affine.tolist(),
        "ornt": ornt.tolist(),
        "canonical_shape": list(canon_grid),
        "bbox": [list(b) for b in bbox],
        "cropped_shape": list(cropped.shape[:3]),
        "resampled_shape": list(new_shape),
        "source_spacing": spacing.tolist(),
        "channels": len(channels),
    }
    return PreprocessedCase(np.stack(channels), out_label, meta)


def preprocess_files(image: Path, label: Path | None, plan: Plan) -> PreprocessedCase:
    """Preprocess one case from NIfTI files."""
    img = nib.load(str(image))
    lab = nib.load(str(label)) if label else None
    return preprocess_arrays(img, lab, plan)


def save_case(path: Path, case: PreprocessedCase) -> None:
    """Save a preprocessed case as ``.npz`` (no pickles), atomically."""
    arrays = {"image": case.image, "meta": np.array(json.dumps(case.meta))}
    if case.label is not None:
        arrays["label"] = case.label
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def load_case(path: Path) -> PreprocessedCase:
    """Load a case written by :func:`save_case`."""
    with np.load(path, allow_pickle=False) as z:
        label = z["label"] if "label" in z.files else None
        return PreprocessedCase(z["image"], label, json.loads(str(z["meta"])))


def restore_labels(probs: torch.Tensor, meta: dict[str, Any]) -> np.ndarray:
    """Turn class probabilities on the preprocessed grid into labels on the original grid.

    Args:
        probs: ``(classes, x, y, z)`` probabilities on the resampled, cropped grid.
        meta: the case's ``meta`` from preprocessing.

    Returns:
        uint8 labels with the original image's shape and orientation.
    """
    cropped = argmax_classes(_resampled(probs, meta))
    # outside the crop the model saw nothing: background, as restore_map's fill [1, 0, ...]
    labels = np.zeros(tuple(meta["canonical_shape"]), dtype=np.uint8)
    labels[tuple(slice(lo, hi) for lo, hi in meta["bbox"])] = cropped.numpy()
    # apply_orientation(x, ornt) mapped the original array to canonical; undo it.
    back = nib.orientations.apply_orientation(labels, _invert_ornt(np.asarray(meta["ornt"])))
    return np.ascontiguousarray(back, dtype=np.uint8)


def restore_map(values: torch.Tensor, meta: dict[str, Any], fill: Sequence[float]) -> np.ndarray:
    """Float maps on the preprocessed grid onto the original grid, channels last.

    Resampled trilinearly, as :func:`restore_labels` resamples the probabilities it takes
    the argmax of: so the argmax of restored probabilities is the restored mask, and each
    value is a convex combination of its neighbours', which keeps every bound that holds
    voxel-wise (probabilities in [0, 1] summing to 1; 0 <= mutual information <= entropy).
    Outside the foreground crop (never seen by the model) each channel takes its ``fill``.

    Args:
        values: ``(channels, x, y, z)`` on the resampled, cropped grid.
        meta: the case's ``meta`` from preprocessing.
        fill: one value per channel for the voxels outside the crop.

    Returns:
        float32 ``(x, y, z, channels)`` in the original image's shape and orientation.
    """
    canon = _uncrop(values, meta, fill).permute(1, 2, 3, 0).numpy()
    back = nib.orientations.apply_orientation(canon, _invert_ornt(np.asarray(meta["ornt"])))
    return np.ascontiguousarray(back, dtype=np.float32)


def argmax_classes(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(0)`` as uint8 (the first class on a tie), class by class.

    A running maximum over the few classes, element-wise, instead of torch's reduction
    across the strided first axis: on 2 × 512 × 512 × 120 probabilities 0.15 s instead of 2.

    Example:
        >>> argmax_classes(torch.tensor([[0.2, 0.5, 0.1], [0.8, 0.5, 0.3], [0.0, 0.0, 0.6]]))
        tensor([1, 0, 2], dtype=torch.uint8)
    """
    best = probs[0].clone()
    labels = torch.zeros(probs.shape[1:], dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        labels.masked_fill_(probs[c] > best, c)
        torch.maximum(best, probs[c], out=best)
    return labels


def _resampled(values: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """``(channels, x, y, z)`` values resampled trilinearly to the foreground crop."""
    return F.interpolate(
        values[None].float(),
        size=tuple(meta["cropped_shape"]),
        mode="trilinear",
        align_corners=False,
    )[0]


def _uncrop(values: torch.Tensor, meta: dict[str, Any], fill: Sequence[float]) -> torch.Tensor:
    """``(channels, x, y, z)`` values resampled to the crop and pasted on the canonical grid."""
    cropped = _resampled(values, meta)
    canon = torch.zeros((values.shape[0], *meta["canonical_shape"]), dtype=cropped.dtype)
    for channel, value in enumerate(fill):
        if value:
            canon[channel] = value
    sl = tuple(slice(lo, hi) for lo, hi in meta["bbox"])
    canon[(slice(None), *sl)] = cropped
    return canon


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``apply_orientation(x, ornt)``."""
    inv = np.empty_like(ornt)
    for src_axis, (dst_axis, flip) in enumerate(ornt):
        inv[int(dst_axis)] = (src_axis, flip)
    return inv
