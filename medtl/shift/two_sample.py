"""Two samples of feature vectors: are they drawn from one distribution, and which cases stand out.

The samples are one vector per case (its patches averaged), because cases (patients) are
the independent units: patches of one case resemble each other, and a test that
exchanged patches would find a "shift" between any two small sets of cases.

Both measure in the source's own units: every feature is centred and scaled by the
source's mean and standard deviation, and the Gaussian kernel's bandwidth is the median
distance between source cases. Scaling by the pooled sample instead would cap how far
apart the sets can look (a feature that separates them widens the pooled spread with the
shift), so the measures would stop growing with the shift.

* :func:`mmd_test`: the unbiased squared maximum mean discrepancy (MMD², Gretton et al.
  2012, eq. 3) and its permutation p-value ``(1 + #{permuted MMD² >= observed}) / (1 +
  permutations)``. Each permutation relabels the pooled cases and recomputes everything,
  the scaling and bandwidth included, so the p-value is valid (never below its level
  under the null) for any number of permutations.
* :func:`case_distances`: how far each target case lies from the source: its squared
  distance to the source's mean embedding in the kernel's feature space, standardised by
  the same distance of each source case to the other source cases (leave one out), so
  that a typical source case scores about 0 and 1 is one source spread.

The kernel matrix comes from :func:`sklearn.metrics.pairwise.rbf_kernel` and the distances
from :func:`scipy.spatial.distance.pdist`; the estimator itself is a few sums of that
matrix, written out here because neither library has it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.metrics.pairwise import rbf_kernel


@dataclass(frozen=True)
class MMDResult:
    """A two-sample test of source against target features.

    Attributes:
        mmd2: the unbiased MMD² (can be slightly negative when the sets do not differ).
        p_value: the permutation p-value.
        permutations: how many permutations it used.
        exceeding: permutations whose MMD² reached the observed one.
        bandwidth: the kernel's bandwidth (median distance between source cases, in the
            source's units).
        n_source: source cases.
        n_target: target cases.
    """

    mmd2: float
    p_value: float
    permutations: int
    exceeding: int
    bandwidth: float
    n_source: int
    n_target: int


def in_source_units(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples centred and scaled by the source's per-feature mean and sd.

    A feature constant over the source keeps its scale (divided by 1).
    """
    source = np.asarray(source, dtype=np.float64)
    mean, sd = source.mean(axis=0), source.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (source - mean) / sd, (np.asarray(target, dtype=np.float64) - mean) / sd


def median_bandwidth(sample: np.ndarray) -> float:
    """The median Euclidean distance between distinct rows (1.0 when all coincide)."""
    distances = pdist(sample)
    positive = distances[distances > 0]
    return float(np.median(positive)) if positive.size else 1.0


def gaussian_kernel(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    """``exp(-|x - y|² / (2 bandwidth²))`` for every row pair of ``a`` and ``b``."""
    return rbf_kernel(a, b, gamma=1.0 / (2.0 * bandwidth**2))


def mmd2_unbiased(kernel: np.ndarray, m: int) -> float:
    """The unbiased MMD² of the first ``m`` rows against the rest of a pooled kernel matrix.

    Example:
        >>> k = np.full((4, 4), 0.1)
        >>> k[0, 1] = k[1, 0] = 0.5
        >>> k[2, 3] = k[3, 2] = 0.7
        >>> round(mmd2_unbiased(k, 2), 12)  # 0.5 within x + 0.7 within y - 2 * 0.1 across
        1.0
    """
    n = kernel.shape[0] - m
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD² needs 2 or more cases per set, got {m} and {n}")
    kxx, kyy, kxy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def _statistic(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The MMD² of two raw samples in the source's units, and the bandwidth it used."""
    x, y = in_source_units(source, target)
    bandwidth = median_bandwidth(x)
    pooled = np.concatenate([x, y])
    return mmd2_unbiased(gaussian_kernel(pooled, pooled, bandwidth), len(x)), bandwidth


def mmd_test(
    source: np.ndarray, target: np.ndarray, permutations: int = 1000, seed: int = 0
) -> MMDResult:
    """Unbiased MMD² of two feature samples (rows: cases) and its permutation p-value.

    Args:
        source: ``(m, d)`` features of the source cases (m ≥ 2).
        target: ``(n, d)`` features of the target cases (n ≥ 2).
        permutations: random relabellings of the pooled cases.
        seed: seed of the relabellings.
    """
    m = len(source)
    observed, bandwidth = _statistic(source, target)
    pooled = np.concatenate([np.asarray(source, float), np.asarray(target, float)])
    rng = np.random.default_rng(seed)
    exceeding = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        permuted, _ = _statistic(pooled[order[:m]], pooled[order[m:]])
        # A relative tolerance of a few float64 eps: a relabelling that reproduces the
        # observed split must count as reaching it, whatever order the sums ran in.
        if permuted >= observed - 1e-12 * abs(observed):
            exceeding += 1
    return MMDResult(
        mmd2=observed,
        p_value=(1 + exceeding) / (1 + permutations),
        permutations=permutations,
        exceeding=exceeding,
        bandwidth=bandwidth,
        n_source=m,
        n_target=len(target),
    )


def _embedding_distance(cross: np.ndarray, within: float) -> np.ndarray:
    """``k(x, x) - 2 mean_s k(x, s) + mean_{s≠s'} k(s, s')`` with ``k(x, x) = 1``."""
    return 1.0 - 2.0 * cross.mean(axis=1) + within


def _mean_off_diagonal(kernel: np.ndarray) -> float:
    n = len(kernel)
    return float((kernel.sum() - np.trace(kernel)) / (n * (n - 1)))


def case_distances(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each target case's distance to the source, in units of the source's own spread.

    In the source's units, with its bandwidth, as :func:`mmd_test`. Needs 3 or more
    source cases (each left out in turn leaves 2).

    Returns:
        ``(target_scores, source_scores)``: the standardised distance of every target
        case, and of every source case to the others (leave one out: about 0 ± 1).
    """
    m = len(source)
    if m < 3:
        raise ValueError(f"per-case distances need 3 or more source cases, got {m}")
    x, y = in_source_units(source, target)
    bandwidth = median_bandwidth(x)
    kss, kts = gaussian_kernel(x, x, bandwidth), gaussian_kernel(y, x, bandwidth)
    target_d = _embedding_distance(kts, _mean_off_diagonal(kss))
    loo = np.empty(m)
    for i in range(m):
        keep = np.arange(m) != i
        rest = kss[np.ix_(keep, keep)]
        loo[i] = _embedding_distance(kss[i : i + 1, keep], _mean_off_diagonal(rest))[0]
    spread = loo.std(ddof=1)
    spread = spread if spread > 0 else 1.0
    return (target_d - loo.mean()) / spread, (loo - loo.mean()) / spread
