"""Overlays: image slices of chosen cases with the reference and predicted contours.

:func:`overlay_cases` picks the cases (best, median, worst by the reference arm's Dice)
and reads them; :func:`draw_overlays` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medtl.evaluate.cases import per_case
from medtl.layout import predictions_dir
from medtl.report.figures import REFERENCE_COLOUR, arm_colours, new_figure
from medtl.report.inputs import Inputs, arm_seeds


def largest_slice(mask: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the slice with the largest mask area (middle if empty)."""
    other = tuple(i for i in range(mask.ndim) if i != axis)
    area = np.asarray(mask, dtype=bool).sum(axis=other)
    if not area.any():
        return mask.shape[axis] // 2
    return int(np.argmax(area))


@dataclass
class OverlayCase:
    """One case to draw: arrays in RAS+ orientation (axis 2 = inferior→superior).

    Attributes:
        case: case id.
        title: panel title, e.g. ``"best: case_003 (Dice 0.91)"``.
        image: the image volume.
        reference: the reference label map.
        predictions: per arm, the predicted label map (arms without one are left out).
        spacing: voxel size in mm along the three axes.
    """

    case: str
    title: str
    image: np.ndarray
    reference: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


_VIEWS = {"axial": (2, (0, 1)), "coronal": (1, (0, 2)), "sagittal": (0, (1, 2))}


def _view(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    axis = _VIEWS[view][0]
    return np.take(volume, index, axis=axis).T  # rows = second in-plane axis


def _draw_view(ax, case: OverlayCase, view: str, colours: dict[str, str]) -> None:
    axis, (u, v) = _VIEWS[view]
    ref_fg = case.reference > 0
    index = largest_slice(ref_fg, axis)
    img = _view(case.image, view, index).astype(float)
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    aspect = case.spacing[v] / case.spacing[u]
    ax.imshow(
        img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower", aspect=aspect
    )
    masks = [(REFERENCE_COLOUR, ref_fg, 3.4)]
    masks += [(colours[a], p > 0, 1.3) for a, p in case.predictions.items()]
    for colour, mask, lw in masks:
        sl = _view(mask, view, index).astype(float)
        if sl.any() and not sl.all():
            ax.contour(sl, levels=[0.5], colors=[colour], linewidths=lw)
    ax.set_title(f"{view} slice {index}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_overlays(cases: list[OverlayCase], arms: list[str], views: tuple[str, ...]) -> Figure:
    """Image slices with reference and predicted contours, one row per case.

    Args:
        cases: the cases to draw.
        arms: all arms, for fixed colours and the legend.
        views: any of ``"axial"``, ``"coronal"``, ``"sagittal"``; each shows the slice
            with the largest reference-label area in that direction.
    """
    colours = arm_colours(arms)
    fig = new_figure(3.2 * len(views), 3.3 * max(1, len(cases)) + 0.4)
    axes = fig.subplots(max(1, len(cases)), len(views), squeeze=False)
    for row, case in zip(axes, cases, strict=False):
        for ax, view in zip(row, views, strict=True):
            _draw_view(ax, case, view, colours)
        row[0].set_ylabel(case.title, fontsize=9)
    handles = [Line2D([], [], color=REFERENCE_COLOUR, lw=3.4, label="reference")]
    handles += [Line2D([], [], color=colours[a], lw=1.5, label=a) for a in arms]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    return fig


def _load_ras(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        data = data[..., 0]
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return data, spacing


def _first_prediction(results: Path, metrics: pd.DataFrame, arm: str, fold: int, case: str) -> Path:
    """The mask of ``case`` by the arm's first seed (the run of an earlier version: its
    only one)."""
    seed = arm_seeds(metrics, [arm])[arm]
    first = seed[0] if seed else None  # None: an earlier version's layout, no seed folder
    return predictions_dir(results, arm, first, fold) / f"{case}.nii.gz"


def _pick_cases(scores: pd.Series, n: int) -> list[tuple[str, str]]:
    """``(case, role)`` for best, median, worst (and evenly spaced ranks between)."""
    ranked = scores.sort_values(ascending=False, kind="stable")
    if n <= 0 or ranked.empty:
        return []
    idx = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
    out = []
    for i in idx:
        if i == 0:
            role = "best"
        elif i == len(ranked) - 1:
            role = "worst"
        elif len(idx) == 3:
            role = "median"
        else:
            role = f"rank {i + 1}/{len(ranked)}"
        out.append((str(ranked.index[i]), role))
    return out


def overlay_cases(
    results: Path, inputs: Inputs, arms: list[str], reference: str, n: int
) -> tuple[list[OverlayCase], str, list[str]]:
    metrics = inputs.metrics
    scores = per_case(metrics, reference, "dice")
    basis = f"{reference} Dice"
    if scores.empty:
        scores = pd.to_numeric(metrics["dice"], errors="coerce").groupby(metrics["case"]).mean()
        basis = "mean Dice over arms"
    fold_of = {c: int(f["fold"]) for f in inputs.folds["folds"] for c in f.get("test", [])}
    cases, problems = [], []
    for case, role in _pick_cases(scores, n):
        preds = {
            arm: _first_prediction(results, inputs.metrics, arm, fold_of.get(case, -1), case)
            for arm in arms
        }
        title = f"{role}: {case}\n({basis} {scores[case]:.3f})"
        found = load_overlay_case(inputs, case, title, preds)
        if isinstance(found, str):
            problems.append(found)
        else:
            cases.append(found)
    return cases, basis, problems


def load_overlay_case(
    inputs: Inputs, case: str, title: str, predictions: dict[str, Path]
) -> OverlayCase | str:
    """A held-out case's image, reference and the masks named (those found, of its shape).

    Returns:
        The case to draw, or why it cannot be drawn (no labelled row, files not found).
    """
    rows = inputs.manifest.set_index("case_id")
    row = rows.loc[case] if case in rows.index else None
    if row is None or not row.get("label"):
        return f"{case}: no labelled row in the manifest"
    image_path, label_path = Path(row["image"]), Path(row["label"])
    absent = [str(p) for p in (image_path, label_path) if not p.is_file()]
    if absent:
        return f"{case}: not found {', '.join(absent)}"
    image, spacing = _load_ras(image_path)
    label, _ = _load_ras(label_path)
    preds = {}
    for arm, pred in predictions.items():
        if pred.is_file():
            p, _ = _load_ras(pred)
            if p.shape == label.shape:
                preds[arm] = p
    return OverlayCase(case, title, image, label, preds, spacing)
