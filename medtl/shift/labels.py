"""The labelled structures of each set: volume and position, and their standardised differences.

Per case and label value: the volume in ml (voxels on the plan's grid × voxel volume) and
the centroid as a fraction of the cropped case along each RAS axis (0 at the low edge of
the case's non-zero box, 1 at the high edge), so cases of other sizes compare. A target
label value is compared with the source label value ``label_pairs`` maps it to (the same
value when not given): the sets may number their structures differently.

The difference of a measure is Cohen's d: (target mean − source mean) / pooled sd. With
few cases it is noisy; it says where the target's structures differ, not that they do.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from medtl.shift.sets import CaseSet

MEASURES = ("volume_ml", "centroid_x", "centroid_y", "centroid_z")


def label_table(cases: CaseSet) -> pd.DataFrame:
    """One row per case and label value present: ``case_id``, ``label`` and :data:`MEASURES`."""
    voxel_ml = float(np.prod(cases.plan_spacing)) / 1000.0
    rows = []
    for case_id, case in zip(cases.case_ids, cases.cases, strict=True):
        if case.label is None:
            continue
        shape = np.asarray(case.label.shape, float)
        for value in np.unique(case.label):
            if value == 0:
                continue
            where = np.argwhere(case.label == value)
            centroid = (where.mean(axis=0) + 0.5) / shape
            rows.append(
                {
                    "case_id": case_id,
                    "label": int(value),
                    "volume_ml": len(where) * voxel_ml,
                    **{f"centroid_{a}": float(c) for a, c in zip("xyz", centroid, strict=True)},
                }
            )
    return pd.DataFrame(rows, columns=["case_id", "label", *MEASURES])


def cohens_d(target: np.ndarray, source: np.ndarray) -> float | None:
    """(target mean − source mean) / pooled sd; None with fewer than 2 values in a set.

    Example:
        >>> cohens_d(np.array([2.0, 4.0]), np.array([0.0, 2.0]))
        1.414214
    """
    if len(target) < 2 or len(source) < 2:
        return None
    pooled = np.sqrt(
        ((len(target) - 1) * target.var(ddof=1) + (len(source) - 1) * source.var(ddof=1))
        / (len(target) + len(source) - 2)
    )
    return round(float((target.mean() - source.mean()) / pooled), 6) if pooled > 0 else None


def compare_labels(
    target: pd.DataFrame, source: pd.DataFrame, pairs: Mapping[str, int]
) -> list[dict]:
    """Per target label value: its source value, cases, means and Cohen's d of each measure."""
    out = []
    for value in sorted(target["label"].unique()):
        paired = int(pairs.get(str(value), value))
        tgt, src = target[target["label"] == value], source[source["label"] == paired]
        entry = {
            "target_label": int(value),
            "source_label": paired,
            "target_cases": len(tgt),
            "source_cases": len(src),
        }
        for m in MEASURES:
            t, s = tgt[m].to_numpy(float), src[m].to_numpy(float)
            entry[m] = {
                "target_mean": float(t.mean()) if len(t) else None,
                "source_mean": float(s.mean()) if len(s) else None,
                "cohens_d": cohens_d(t, s),
            }
        out.append(entry)
    return out
