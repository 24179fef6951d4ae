"""The ensemble's uncertainty maps and scores (medtl.predict.uncertainty), by hand."""

from __future__ import annotations

import math

import pytest
import torch

from medtl.predict.uncertainty import UncertaintyAccumulator, entropy, pooled_dice, volume_cv


def _binary(foreground: list[float]) -> torch.Tensor:
    """``(2, n, 1, 1)`` probabilities of background and foreground along x."""
    fg = torch.tensor(foreground, dtype=torch.float32).reshape(len(foreground), 1, 1)
    return torch.stack([1 - fg, fg])


def _h(p: float) -> float:
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def _feed(members: list[torch.Tensor]):
    acc = UncertaintyAccumulator()
    for p in members:
        acc.add(p)
    return acc.finish(sum(members) / len(members))


def test_entropy_bounds_and_known_values():
    assert float(entropy(_binary([0.5]))) == pytest.approx(math.log(2), abs=1e-6)
    assert float(entropy(_binary([1.0]))) == 0.0
    uniform = torch.full((4, 1, 1, 1), 0.25)
    assert float(entropy(uniform)) == pytest.approx(math.log(4), abs=1e-6)


def test_identical_members_measure_no_disagreement():
    p = _binary([0.9, 0.6, 0.1])
    result = _feed([p, p, p])
    # The mean of 3 equal float32 values may differ from them by an ulp: MI is 0 to a few
    # float32 ulps of an entropy <= ln 2.
    assert float(result.mutual_info.max()) <= 8 * torch.finfo(torch.float32).eps
    assert result.scores.members == 3
    assert result.scores.agreement_dice == 1.0 and result.scores.volume_cv == 0.0
    # Foreground of the ensemble: voxels 0 and 1.
    assert result.scores.mean_entropy == pytest.approx((_h(0.9) + _h(0.6)) / 2, abs=1e-6)


def test_one_member_alone_gives_zero_mutual_information():
    result = _feed([_binary([0.7, 0.2])])
    assert float(result.mutual_info.abs().max()) == 0.0
    assert result.scores.members == 1 and result.scores.volume_cv == 0.0
    assert result.scores.agreement_dice == 1.0


def test_two_members_that_disagree_on_one_voxel():
    a, b = _binary([0.9, 0.6, 0.1]), _binary([0.9, 0.3, 0.1])
    result = _feed([a, b])
    # The mean is 0.45 at voxel 1: the ensemble mask is voxel 0 only.
    expected_mi = _h(0.45) - (_h(0.6) + _h(0.3)) / 2
    assert float(result.entropy[1]) == pytest.approx(_h(0.45), abs=1e-6)
    assert float(result.mutual_info[1]) == pytest.approx(expected_mi, abs=1e-6)
    assert float(result.mutual_info[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(result.mutual_info[2]) == pytest.approx(0.0, abs=1e-6)
    # Masks: a = {0, 1}, b = {0}, E = {0}: pooled Dice 2·(1 + 1) / ((2 + 1) + (1 + 1)).
    assert result.scores.agreement_dice == pytest.approx(0.8)
    # Volumes 2 and 1: mean 1.5, population std 0.5.
    assert result.scores.volume_cv == pytest.approx(1 / 3)
    assert result.scores.mean_entropy == pytest.approx(_h(0.9), abs=1e-6)


def test_mutual_information_lies_between_zero_and_entropy():
    gen = torch.Generator().manual_seed(0)
    members = [torch.softmax(torch.randn(3, 4, 5, 6, generator=gen) * 3, 0) for _ in range(5)]
    result = _feed(members)
    assert float(result.mutual_info.min()) >= 0.0
    assert bool((result.mutual_info <= result.entropy).all())
    assert float(result.entropy.max()) <= math.log(3) + 1e-6


def test_pooled_dice_per_class_and_empty():
    votes = torch.tensor([[2, 0, 0], [0, 2, 0], [0, 0, 2]])
    assert pooled_dice(votes, torch.tensor([0, 1, 2]), 2) == 1.0
    # Class 2 only in the ensemble, no member voted for it: Dice 0 for it, 1 for class 1.
    votes = torch.tensor([[2, 0, 2], [0, 2, 0], [0, 0, 0]])
    assert pooled_dice(votes, torch.tensor([0, 1, 2]), 2) == pytest.approx(0.5)
    assert pooled_dice(torch.tensor([[3, 3], [0, 0]]), torch.tensor([0, 0]), 3) == 1.0


def test_volume_cv_and_finish_without_members():
    assert volume_cv([3, 3, 3]) == 0.0
    assert volume_cv([1, 3]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no ensemble member"):
        UncertaintyAccumulator().finish(_binary([0.5]))
