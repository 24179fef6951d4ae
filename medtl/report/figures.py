"""Figures of the report, drawn with Matplotlib's object API on the Agg canvas.

Every function returns a :class:`matplotlib.figure.Figure` bound to an Agg canvas (no
pyplot, no global backend switch, safe in threads); :func:`to_png` turns it into PNG
bytes for embedding and saving.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

#: Contour colour of the reference label in overlays.
REFERENCE_COLOUR = "#ffd400"

#: Colours of the arms, in the order the arms are given (the reference's yellow skipped).
ARM_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2"]

_METRIC_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "nsd": "NSD",
}

#: Metrics drawn on a 0-1 axis.
_UNIT_INTERVAL = {"dice", "iou", "nsd"}


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def arm_colours(arms: list[str]) -> dict[str, str]:
    """A fixed colour per arm, by position in ``arms``."""
    return {arm: ARM_COLOURS[i % len(ARM_COLOURS)] for i, arm in enumerate(arms)}


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so output is reproducible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def metric_boxplot(
    metrics: pd.DataFrame, arms: list[str], metric: str, class_names: list[str]
) -> Figure:
    """Box plot with jittered per-case points of ``metric`` per arm, one panel per class.

    Args:
        metrics: the ``metrics.csv`` table.
        arms: arms in display order.
        metric: ``dice`` or ``hd95``; NaN values are not drawn.
        class_names: class names, one panel each.
    """
    colours = arm_colours(arms)
    fig = new_figure(max(4.0, 1.4 * len(arms) + 1.5) * len(class_names), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(class_names), squeeze=False)[0])
    rng = np.random.default_rng(0)
    for ax, cls in zip(axes, class_names, strict=True):
        data = []
        for arm in arms:
            sel = metrics[(metrics["arm"] == arm) & (metrics["class"] == cls)]
            data.append(pd.to_numeric(sel[metric], errors="coerce").dropna().to_numpy())
        positions = np.arange(1, len(arms) + 1)
        drawn = [d if d.size else np.array([np.nan]) for d in data]
        box = ax.boxplot(
            drawn, positions=positions, widths=0.55, patch_artist=True, showfliers=False
        )
        for patch, arm in zip(box["boxes"], arms, strict=True):
            patch.set(facecolor=colours[arm], alpha=0.25, edgecolor=colours[arm])
        for median in box["medians"]:
            median.set(color="#222222", linewidth=1.4)
        for pos, d, arm in zip(positions, data, arms, strict=True):
            if not d.size:
                ax.text(
                    pos,
                    0.5,
                    "no values",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="center",
                    color="#888888",
                    fontsize=8,
                )
            jitter = rng.uniform(-0.12, 0.12, size=d.size)
            ax.scatter(pos + jitter, d, s=14, color=colours[arm], alpha=0.85, zorder=3, lw=0)
        ax.set_xticks(positions, arms)
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
        ax.set_title(f"{_METRIC_LABELS.get(metric, metric)} — {cls}", fontsize=10)
        if metric in _UNIT_INTERVAL:
            ax.set_ylim(-0.02, 1.02)
        _style(ax)
    return fig


def spacing_histogram(spacing: np.ndarray) -> Figure:
    """Histograms of voxel spacing along the three axes, one panel each.

    Args:
        spacing: ``(cases, 3)`` voxel sizes in mm (NaN rows are left out).
    """
    spacing = np.asarray(spacing, dtype=float).reshape(-1, 3)
    fig = new_figure(9.0, 2.6)
    axes = fig.subplots(1, 3)
    for i, (ax, axis) in enumerate(zip(axes, "xyz", strict=True)):
        values = spacing[:, i][np.isfinite(spacing[:, i])]
        if values.size:
            low, high = float(values.min()), float(values.max())
            bins = 10 if high - low > 1e-6 else [low - 0.05, low + 0.05]
            ax.hist(values, bins=bins, color="#1f5f99", alpha=0.8, edgecolor="white")
        ax.set_title(f"spacing {axis}", fontsize=10)
        ax.set_xlabel("mm")
        _style(ax)
    axes[0].set_ylabel("cases")
    return fig


def volume_distribution(volumes: dict[str, np.ndarray]) -> Figure:
    """Histogram of reference label volumes (ml) per class, one panel each.

    Args:
        volumes: per class name, the reference volume of every labelled case in ml.
    """
    names = list(volumes) or ["–"]
    fig = new_figure(max(4.0, 3.6 * len(names)), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(names), squeeze=False)[0])
    for ax, name in zip(axes, names, strict=True):
        values = np.asarray(volumes.get(name, []), dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(
                values,
                bins=min(15, max(3, values.size // 2)),
                color="#2e7d32",
                alpha=0.8,
                edgecolor="white",
            )
            empty = int((values == 0).sum())
            if empty:
                ax.text(
                    0.98,
                    0.92,
                    f"{empty} empty",
                    transform=ax.transAxes,
                    ha="right",
                    fontsize=8,
                    color="#555555",
                )
        ax.set_title(f"reference volume — {name}", fontsize=10)
        ax.set_xlabel("ml")
        ax.set_ylabel("cases")
        _style(ax)
    return fig


def difference_forest(
    rows: list[dict], metric_label: str = "Dice", noise_floor: float | None = None
) -> Figure:
    """Mean paired difference with its 95 % CI, one line per comparison.

    Args:
        rows: dicts with ``label`` (e.g. ``finetune − scratch``), ``mean_diff``,
            ``ci_low``, ``ci_high`` and ``significant`` (Holm-adjusted p < 0.05).
        metric_label: the metric's name for the axis.
        noise_floor: the A/A noise floor (how far two single-seed runs of one arm land
            apart 95 % of the time), drawn as a grey band around zero; None: no band.
    """
    fig = new_figure(6.4, 0.5 * max(1, len(rows)) + 1.2)
    ax = fig.subplots()
    if not rows:
        ax.text(
            0.5,
            0.5,
            "no paired comparison (one arm, or too few cases)",
            ha="center",
            va="center",
            color="#888888",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    for i, r in enumerate(reversed(rows)):
        colour = (
            "#2e7d32"
            if r["significant"] and r["mean_diff"] > 0
            else ("#c62828" if r["significant"] else "#5f6b76")
        )
        ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=colour, lw=2.2)
        ax.plot([r["mean_diff"]], [i], "o", color=colour, ms=6)
    ax.axvline(0.0, color="#222222", lw=0.9, ls="--")
    if noise_floor is not None and math.isfinite(noise_floor):
        ax.axvspan(
            -noise_floor,
            noise_floor,
            color="#bbbbbb",
            alpha=0.35,
            lw=0,
            label=f"A/A noise floor (±{noise_floor:.3f})",
        )
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.set_yticks(range(len(rows)), [r["label"] for r in reversed(rows)])
    ax.set_xlabel(f"mean paired difference in {metric_label} (95 % CI)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig


def paired_differences(
    per_case: dict[str, pd.Series], arms: list[str], reference: str, metric: str = "dice"
) -> Figure:
    """Per-case lines from the reference arm to each other arm (a slope graph per arm).

    Args:
        per_case: per arm, a Series of per-case values (mean over classes) indexed by case.
        arms: arms in display order (the reference is skipped as a panel).
        reference: the reference arm.
        metric: the metric shown, for the axis label.

    Lines are green where the arm did better than the reference on that case, red where
    it did worse, grey where equal.
    """
    others = [a for a in arms if a != reference]
    fig = new_figure(max(3.6, 3.2 * len(others)), 3.8)
    axes = fig.subplots(1, max(1, len(others)), squeeze=False)[0]
    higher_better = metric != "hd95"
    ref = per_case.get(reference, pd.Series(dtype=float))
    for ax, arm in zip(axes, others, strict=False):
        joined = pd.concat({"ref": ref, "arm": per_case.get(arm)}, axis=1, join="inner").dropna()
        for _, row in joined.iterrows():
            delta = row["arm"] - row["ref"]
            better = delta > 0 if higher_better else delta < 0
            colour = "#9e9e9e" if delta == 0 else ("#2e7d32" if better else "#c62828")
            ax.plot([0, 1], [row["ref"], row["arm"]], color=colour, alpha=0.75, lw=1.2)
            ax.scatter([0, 1], [row["ref"], row["arm"]], color=colour, s=12, zorder=3, lw=0)
        if len(joined):
            ax.plot(
                [0, 1],
                [joined["ref"].mean(), joined["arm"].mean()],
                color="#111111",
                lw=2.6,
                marker="D",
                label="mean",
            )
            ax.legend(loc="best", fontsize=8, frameon=False)
        ax.set_xticks([0, 1], [reference, arm])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylabel(f"per-case {_METRIC_LABELS.get(metric, metric)} (mean over classes)")
        ax.set_title(f"{arm} vs {reference} (n = {len(joined)})", fontsize=10)
        _style(ax)
    if not others:
        axes[0].text(0.5, 0.5, "only the reference arm", ha="center", va="center")
        axes[0].set_axis_off()
    return fig


def _run_label(key: object) -> str:
    """``fold 0``, or ``seed 2, fold 0`` for a ``(seed, fold)`` key."""
    if isinstance(key, tuple):
        seed, fold = key
        return f"fold {fold}" if seed is None else f"seed {seed}, fold {fold}"
    return f"fold {key}"


def training_curves(curves: dict[str, dict[object, pd.DataFrame]], arms: list[str]) -> Figure:
    """Loss and validation Dice against step, one row per arm and one line per run.

    Args:
        curves: per arm, per fold (or per ``(seed, fold)``), the ``curves.csv`` table
            (``step, loss, val_dice``).
        arms: arms in display order; arms without curves are skipped.
    """
    shown = [a for a in arms if curves.get(a)]
    fig = new_figure(9.0, 2.6 * max(1, len(shown)))
    axes = fig.subplots(max(1, len(shown)), 2, squeeze=False)
    for row, arm in zip(axes, shown, strict=False):
        for key, df in sorted(curves[arm].items(), key=lambda kv: str(kv[0])):
            step = pd.to_numeric(df["step"], errors="coerce")
            loss = pd.to_numeric(df["loss"], errors="coerce")
            row[0].plot(step, loss, lw=1.1, label=_run_label(key))
            val = pd.to_numeric(df.get("val_dice", pd.Series(dtype=float)), errors="coerce")
            ok = val.notna()
            row[1].plot(step[ok], val[ok], lw=1.1, marker="o", ms=3, label=_run_label(key))
        row[0].set_title(f"{arm}: training loss", fontsize=10)
        row[1].set_title(f"{arm}: validation Dice", fontsize=10)
        row[1].set_ylim(-0.02, 1.02)
        for ax in row:
            ax.set_xlabel("step")
            ax.legend(fontsize=7, frameon=False)
            _style(ax)
    return fig


def label_fraction_curves(points: pd.DataFrame, arms: list[str]) -> Figure:
    """Mean Dice with 95 % CI bars against labelled training cases, one line per arm.

    Args:
        points: per arm and fraction, columns ``arm, fraction, labelled_cases,
            mean_dice, ci_low, ci_high`` (see ``build.label_fraction_points``).
        arms: arms in display order (fixed colours); arms without points are skipped.

    The x axis is logarithmic when the measured points span a factor of 4 or more,
    else linear; its ticks are the measured numbers of labelled cases (with the
    fraction). Arms are nudged sideways a little so that their bars do not overlap.
    """
    colours = arm_colours(arms)
    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    xs = sorted(set(pd.to_numeric(points["labelled_cases"], errors="coerce").dropna()))
    log = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 4
    span = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
    shown = [a for a in arms if (points["arm"] == a).any()]
    for i, arm in enumerate(shown):
        sel = points[points["arm"] == arm].sort_values("labelled_cases")
        x = sel["labelled_cases"].to_numpy(dtype=float)
        nudge = 0.03 * (i - (len(shown) - 1) / 2)
        x = x * (1 + nudge) if log else x + nudge * span
        y = sel["mean_dice"].to_numpy(dtype=float)
        err = np.vstack(
            [
                np.clip(y - sel["ci_low"].to_numpy(dtype=float), 0, None),
                np.clip(sel["ci_high"].to_numpy(dtype=float) - y, 0, None),
            ]
        )
        ax.errorbar(
            x,
            y,
            yerr=np.nan_to_num(err),
            color=colours[arm],
            marker="o",
            ms=5,
            lw=1.6,
            capsize=3,
            label=arm,
        )
    if log:
        ax.set_xscale("log")
    labels = []
    for x in xs:
        fracs = sorted(
            set(points.loc[np.isclose(points["labelled_cases"], x), "fraction"].astype(float))
        )
        pct = "/".join(f"{100 * f:.0f}" for f in fracs)
        labels.append(f"{x:.3g}\n({pct} %)")
    ax.set_xticks(xs, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labelled training cases per fold (fraction of the fold's training cases)")
    ax.set_ylabel("mean Dice over held-out cases (95 % CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Label-fraction curves", fontsize=10)
    if shown:
        ax.legend(fontsize=8, frameon=False, loc="best")
    _style(ax)
    return fig


def seed_spread(per_seed: pd.DataFrame, overall: pd.DataFrame, arms: list[str]) -> Figure:
    """Each arm's mean Dice per seed (dots) beside its mean over seeds with a 95 % CI.

    Args:
        per_seed: columns ``arm, seed, mean_dice`` (one row per arm and seed).
        overall: columns ``arm, mean, ci_low, ci_high`` (one row per arm: the mean over
            its cases and seeds, with the interval the report uses).
        arms: arms in display order (fixed colours); arms without rows are skipped.

    The spread of the dots is the run-to-run variation: the part of the uncertainty a
    single training run cannot show.
    """
    colours = arm_colours(arms)
    shown = [a for a in arms if (per_seed["arm"] == a).any()]
    fig = new_figure(max(4.0, 1.3 * len(shown) + 1.5), 3.6)
    ax = fig.subplots()
    for i, arm in enumerate(shown):
        sel = per_seed[per_seed["arm"] == arm].sort_values("seed")
        y = sel["mean_dice"].to_numpy(dtype=float)
        ax.scatter(np.full(y.size, i - 0.12), y, color=colours[arm], s=22, zorder=3, label=None)
        for seed, value in zip(sel["seed"], y, strict=True):
            ax.annotate(
                f"{seed}",
                (i - 0.12, value),
                xytext=(-9, -3),
                textcoords="offset points",
                fontsize=6,
                color="#555555",
            )
        row = overall[overall["arm"] == arm]
        if len(row):
            m, lo, hi = (float(row.iloc[0][c]) for c in ("mean", "ci_low", "ci_high"))
            err = [[max(0.0, m - lo)], [max(0.0, hi - m)]] if np.isfinite([lo, hi]).all() else None
            ax.errorbar(
                [i + 0.12],
                [m],
                yerr=err,
                color=colours[arm],
                marker="s",
                ms=5,
                capsize=3,
                lw=1.4,
            )
    ax.set_xticks(range(len(shown)), shown)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylabel("mean Dice over held-out cases")
    ax.set_title("Per seed (dots, labelled) and over seeds (square, 95 % CI)", fontsize=9)
    _style(ax)
    return fig
