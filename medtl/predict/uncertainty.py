"""How much an ensemble's members disagree: voxel maps and per-case scores, streamed.

A *member* is one prediction the ensemble averages: one model (a fold × seed of an arm)
on one mirrored copy of the case (``--tta`` gives 8 per model). Members are fed one at a
time (:class:`UncertaintyAccumulator`); only running sums are kept, never the members'
probability maps, so memory does not grow with the number of members.

With ``p_m`` the softmax of member ``m`` (of ``M``) and ``p̄`` their mean, in nats:

- predictive entropy ``H(p̄) = -Σ_k p̄_k ln p̄_k``: total uncertainty, in ``[0, ln K]``;
- expected entropy ``(1/M) Σ_m H(p_m)``: what the members are unsure of on their own;
- mutual information ``H(p̄) - (1/M) Σ_m H(p_m)``: the part that comes from the members
  disagreeing (epistemic), in ``[0, H(p̄)]`` (Jensen: entropy is concave).

Per case (on the preprocessed grid, before post-processing), with the ensemble mask
``E = argmax p̄`` and member masks ``A_m = argmax p_m``:

- ``mean_entropy``: mean of ``H(p̄)`` over the voxels ``E`` calls foreground (any class);
- ``mean_mutual_info``: mean of the mutual information over the same voxels;
- ``agreement_dice``: per foreground class, the pooled Dice of the members' masks against
  the ensemble's, ``2 Σ_m |A_m ∩ E| / Σ_m (|A_m| + |E|)``, averaged over the classes any
  member or the ensemble found (1 when none did). Pooled rather than a mean of per-member
  Dice because ``E`` is only known at the end: the pooled form needs per-voxel vote counts
  alone. It equals the mean of per-member Dice when the members' volumes are equal;
- ``volume_cv``: population standard deviation / mean of the members' foreground volumes
  (0 when every member finds nothing).

One member alone gives mutual information 0, agreement 1 and CV 0: they measure nothing.

Example:
    >>> p = torch.tensor([[[[0.5]]], [[[0.5]]]])  # 2 classes, one voxel at 50:50
    >>> round(float(entropy(p)), 4)  # ln 2
    0.6931
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """``-Σ_k p_k ln p_k`` over the class axis 0 of ``(classes, ...)`` probabilities.

    ``0 ln 0`` counts as 0. float32, nats.

    Example:
        >>> float(entropy(torch.tensor([1.0, 0.0])))
        0.0
    """
    # + 0.0 turns the -0.0 of a certain voxel into 0.0.
    return torch.special.entr(probs.float()).sum(0) + 0.0


def volume_cv(volumes: list[int]) -> float:
    """Coefficient of variation (population std / mean) of the members' volumes.

    0 for one member, or when every member's volume is 0.

    Example:
        >>> volume_cv([2, 1]), volume_cv([5]), volume_cv([0, 0])
        (0.3333333333333333, 0.0, 0.0)
    """
    mean = sum(volumes) / len(volumes)
    if mean == 0:
        return 0.0
    var = sum((v - mean) ** 2 for v in volumes) / len(volumes)
    return math.sqrt(var) / mean


def pooled_dice(votes: torch.Tensor, ensemble: torch.Tensor, members: int) -> float:
    """Agreement of the members' masks with the ensemble mask, from vote counts.

    Args:
        votes: ``(classes, ...)`` how many members gave each voxel each class.
        ensemble: the ensemble's labels, shaped as ``votes[0]``.
        members: how many members voted.

    Returns:
        The mean over foreground classes of ``2 Σ_m |A_m ∩ E| / Σ_m (|A_m| + |E|)``,
        over the classes present in some member or the ensemble; 1.0 when none is.

    Example:
        >>> votes = torch.tensor([[1, 2, 2], [1, 0, 0]])  # 2 members, 3 voxels
        >>> round(pooled_dice(votes, torch.tensor([1, 0, 0]), 2), 4)  # 2·1 / (1 + 2·1)
        0.6667
    """
    scores = []
    for c in range(1, votes.shape[0]):
        in_ensemble = ensemble == c
        shared = float(votes[c][in_ensemble].sum())
        size = float(votes[c].sum()) + members * float(in_ensemble.sum())
        if size > 0:
            scores.append(2.0 * shared / size)
    return sum(scores) / len(scores) if scores else 1.0


@dataclass(frozen=True)
class CaseScores:
    """Per-case uncertainty scores (see the module's description)."""

    members: int
    mean_entropy: float
    mean_mutual_info: float
    agreement_dice: float
    volume_cv: float

    def as_row(self) -> dict[str, float | int]:
        """The scores as columns of ``predictions.tsv``."""
        return asdict(self)


@dataclass(frozen=True)
class UncertaintyMaps:
    """Voxel maps on the preprocessed grid (float32, CPU) and the case's scores."""

    entropy: torch.Tensor
    mutual_info: torch.Tensor
    scores: CaseScores


class UncertaintyAccumulator:
    """Running sums over an ensemble's members, fed one member's probabilities at a time.

    Keeps, on the CPU, the sum of the members' entropies (one float32 map), how many
    members voted for each class at each voxel (int32, one map per class) and each
    member's foreground volume. The mean probabilities are not kept here: the caller
    already sums them (:func:`medtl.predict.inference.predict_probabilities`) and hands the
    mean to :meth:`finish`.

    Example:
        >>> acc = UncertaintyAccumulator()
        >>> p = torch.tensor([0.2, 0.8]).reshape(2, 1, 1, 1)
        >>> acc.add(p); acc.add(p)
        >>> result = acc.finish(p)
        >>> float(result.mutual_info.max()), result.scores.agreement_dice, result.scores.members
        (0.0, 1.0, 2)
    """

    def __init__(self) -> None:
        self.members = 0
        self._entropy_sum: torch.Tensor | None = None
        self._votes: torch.Tensor | None = None
        self._volumes: list[int] = []

    def __call__(self, probs: torch.Tensor) -> None:
        self.add(probs)

    def add(self, probs: torch.Tensor) -> None:
        """Count one member's ``(classes, x, y, z)`` probabilities (any device)."""
        h = entropy(probs).cpu()
        labels = probs.argmax(0).cpu()
        if self._entropy_sum is None:
            self._entropy_sum = h.clone()
            self._votes = torch.zeros((probs.shape[0], *labels.shape), dtype=torch.int32)
        else:
            self._entropy_sum.add_(h)
        for c in range(self._votes.shape[0]):
            self._votes[c].add_(labels == c)
        self._volumes.append(int((labels > 0).sum()))
        self.members += 1

    def finish(self, mean_probs: torch.Tensor) -> UncertaintyMaps:
        """The maps and scores, given the members' mean ``(classes, x, y, z)`` probabilities.

        Raises:
            ValueError: no member was added.
        """
        if self._entropy_sum is None:
            raise ValueError("no ensemble member was added before finish()")
        mean_probs = mean_probs.float().cpu()
        total = entropy(mean_probs)
        expected = self._entropy_sum / self.members
        # >= 0 in exact arithmetic (Jensen); rounding can leave a hair below 0.
        mutual = (total - expected).clamp_min(0.0)
        ensemble = mean_probs.argmax(0)
        foreground = ensemble > 0
        scores = CaseScores(
            members=self.members,
            mean_entropy=float(total[foreground].mean()) if foreground.any() else 0.0,
            mean_mutual_info=float(mutual[foreground].mean()) if foreground.any() else 0.0,
            agreement_dice=pooled_dice(self._votes, ensemble, self.members),
            volume_cv=volume_cv(self._volumes),
        )
        return UncertaintyMaps(entropy=total, mutual_info=mutual, scores=scores)
