"""Voxel intensities of each set after the normalisation it gets, compared.

Both sets are normalised by the plan (:func:`medtl.preprocess.case.normalise`, through
:mod:`.sets`): under ``zscore`` each image is scaled by its own non-zero voxels, so a
change of units or gain vanishes and what is left is a change in the shape of the
distribution (contrast between tissues, noise, bias); under ``ct`` both keep the
target's fixed window. The voxels are those of each cropped case (its non-zero box),
foreground and background alike, sampled evenly (a seeded sample per case).

* Wasserstein-1 distance (:func:`scipy.stats.wasserstein_distance`) between the sets'
  pooled samples, and between each target case and the source's pooled sample, in
  normalised units (sd of the image under ``zscore``);
* the share of target voxels outside the source's 0.5-99.5 percentile range: values
  the pretrained encoder never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wasserstein_distance

from medtl.shift.sets import CaseSet

#: The source's range: its 0.5 and 99.5 percentiles (as ct normalisation clips).
RANGE_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class IntensityComparison:
    """The sets' intensity distributions compared.

    Attributes:
        wasserstein: distance between the pooled samples (normalised units).
        source_range: the source's 0.5 and 99.5 percentiles.
        outside_fraction: share of the target's sampled voxels outside that range.
        case_wasserstein: per target case, its distance to the source's pooled sample.
        case_outside: per target case, its share of voxels outside the source's range.
    """

    wasserstein: float
    source_range: tuple[float, float]
    outside_fraction: float
    case_wasserstein: tuple[float, ...]
    case_outside: tuple[float, ...]

    def summary(self) -> dict:
        return {
            "wasserstein": self.wasserstein,
            "source_range": list(self.source_range),
            "outside_fraction": self.outside_fraction,
        }


def voxel_sample(image: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` voxels of a case's first channel, drawn without replacement."""
    values = np.asarray(image[0], dtype=np.float64).ravel()
    if values.size <= n:
        return values
    return values[rng.choice(values.size, size=n, replace=False)]


def outside(values: np.ndarray, low: float, high: float) -> float:
    """Share of ``values`` below ``low`` or above ``high``.

    Example:
        >>> outside(np.array([-2.0, 0.0, 0.5, 3.0]), -1.0, 1.0)
        0.5
    """
    return float(np.mean((values < low) | (values > high))) if values.size else 0.0


def compare_intensity(
    source: CaseSet, target: CaseSet, voxels_per_case: int, seed: int
) -> IntensityComparison:
    """The target's normalised intensities against the source's (see the module)."""
    src = [
        voxel_sample(im, voxels_per_case, np.random.default_rng([seed, 0, i]))
        for i, im in enumerate(source.images)
    ]
    tgt = [
        voxel_sample(im, voxels_per_case, np.random.default_rng([seed, 1, i]))
        for i, im in enumerate(target.images)
    ]
    pooled_src, pooled_tgt = np.concatenate(src), np.concatenate(tgt)
    low, high = (float(v) for v in np.percentile(pooled_src, RANGE_PERCENTILES))
    return IntensityComparison(
        wasserstein=float(wasserstein_distance(pooled_src, pooled_tgt)),
        source_range=(low, high),
        outside_fraction=outside(pooled_tgt, low, high),
        case_wasserstein=tuple(float(wasserstein_distance(pooled_src, t)) for t in tgt),
        case_outside=tuple(outside(t, low, high) for t in tgt),
    )
