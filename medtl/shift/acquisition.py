"""What the headers say: spacing, orientation and modality of each set, and how they differ.

Only what ingest read from the headers (``manifest.tsv``: modality, orientation, scanner
manufacturer and model; the spacing from each image's affine, in RAS order): a protocol,
sequence or reconstruction kernel ingest does not record is invisible here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from medtl.shift.sets import CaseSet


def _median_spacing(spacings: Sequence[Sequence[float]]) -> list[float]:
    return [float(v) for v in np.median(np.asarray(spacings, float), axis=0)]


def acquisition_summary(cases: CaseSet) -> dict:
    """One set's median spacing (mm, RAS), its range, and its modality, orientation and
    scanner counts (scanners the headers named; NIfTI cases have none)."""
    spacing = np.asarray(cases.spacing, float)
    return {
        "cases": len(cases),
        "median_spacing": _median_spacing(cases.spacing),
        "min_spacing": [float(v) for v in spacing.min(axis=0)],
        "max_spacing": [float(v) for v in spacing.max(axis=0)],
        "modality": dict(Counter(cases.modality)),
        "orientation": dict(Counter(cases.orientation)),
        "scanner": dict(Counter(s for s in cases.scanner if s)),
    }


def spacing_ratio(
    spacing: Sequence[float], reference: Sequence[float] | None
) -> list[float] | None:
    """``spacing / reference`` per axis (above 1: coarser); None without a reference.

    Example:
        >>> spacing_ratio([1.0, 1.0, 4.0], [1.0, 1.0, 1.0])
        [1.0, 1.0, 4.0]
    """
    if reference is None:
        return None
    return [float(s) / float(r) for s, r in zip(spacing, reference, strict=True)]


def compare_acquisition(
    target: CaseSet,
    source: CaseSet | None,
    pretraining_spacing: Sequence[float] | None,
) -> dict:
    """Both sets' summaries, and the target's spacing against the source's and pretraining's.

    Returns:
        ``target`` and ``source`` summaries (``source`` None without source images),
        ``spacing_ratio_to_source`` (target / source medians), ``network_spacing`` (the
        plan's, what the encoder sees), ``network_to_pretraining`` (plan / pretraining
        spacing; None when the checkpoint does not say), ``modalities_differ`` and
        ``scanners_shared`` (scanners named in both sets; None unless both name some).
    """
    tgt = acquisition_summary(target)
    src = acquisition_summary(source) if source is not None else None
    return {
        "target": tgt,
        "source": src,
        "spacing_ratio_to_source": (
            spacing_ratio(tgt["median_spacing"], src["median_spacing"]) if src else None
        ),
        "network_spacing": list(target.plan_spacing),
        "pretraining_spacing": list(pretraining_spacing) if pretraining_spacing else None,
        "network_to_pretraining": spacing_ratio(target.plan_spacing, pretraining_spacing),
        "modalities_differ": bool(src and set(tgt["modality"]) != set(src["modality"])),
        "scanners_shared": (
            sorted(set(tgt["scanner"]) & set(src["scanner"]))
            if src and tgt["scanner"] and src["scanner"]
            else None
        ),
    }
