"""Test-time augmentation by mirroring (medtl.predict.inference.predict_probabilities)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medtl.config import PredictConfig
from medtl.predict.inference import mirror_axes, predict_probabilities
from medtl.preprocess.case import PreprocessedCase

SHAPE = (6, 5, 4)
CPU = torch.device("cpu")


def _case() -> PreprocessedCase:
    rng = np.random.default_rng(0)
    return PreprocessedCase(rng.normal(size=(1, *SHAPE)).astype(np.float32), None, {})


def _conv(kernel: int, seed: int) -> torch.nn.Module:
    """A seeded Conv3d, 1 channel → 3 classes; a 3×3×3 kernel is not mirror-symmetric."""
    torch.manual_seed(seed)
    return torch.nn.Conv3d(1, 3, kernel, padding=kernel // 2).eval()


def _by_hand(models, image: torch.Tensor) -> torch.Tensor:
    """Mean over models and the 8 mirrorings of softmax(model(flipped image)), flipped back."""
    outs = []
    with torch.no_grad():
        for model in models:
            for r in range(4):
                for dims in itertools.combinations((2, 3, 4), r):
                    x = image.flip(dims) if dims else image
                    outs.append(torch.softmax(model(x), 1).flip(dims)[0])
    assert len(outs) == 8 * len(models)
    return torch.stack(outs).mean(0)


def test_mirror_axes_cover_every_subset_once():
    axes = mirror_axes(True)
    assert axes[0] == () and len(set(axes)) == 8
    assert set(axes) == {d for r in range(4) for d in itertools.combinations((2, 3, 4), r)}
    assert mirror_axes(False) == [()]


@pytest.mark.parametrize("n_models", [1, 2])
def test_tta_is_the_mean_of_the_eight_mirrored_predictions(n_models):
    case = _case()
    models = [_conv(3, seed) for seed in range(n_models)]
    # One window covering the whole case: the sliding window returns the model's output.
    plain = predict_probabilities(models, case, SHAPE, PredictConfig(), CPU)
    tta = predict_probabilities(models, case, SHAPE, PredictConfig(tta=True), CPU)
    assert plain.shape == tta.shape == (3, *SHAPE)
    assert tta.dtype == torch.float32
    assert not torch.allclose(plain, tta, atol=1e-4)
    expected = _by_hand(models, torch.from_numpy(case.image)[None])
    torch.testing.assert_close(tta, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tta.sum(0), torch.ones(SHAPE), atol=1e-5, rtol=1e-5)


def test_tta_of_a_mirror_equivariant_model_changes_nothing():
    case = _case()
    model = _conv(1, 0)  # 1×1×1: acts voxel by voxel, so mirroring commutes with it
    for patch in (SHAPE, (4, 4, 4)):  # one window, and several overlapping ones
        plain = predict_probabilities([model], case, patch, PredictConfig(), CPU)
        tta = predict_probabilities([model], case, patch, PredictConfig(tta=True), CPU)
        assert tta.shape == (3, *SHAPE)
        torch.testing.assert_close(tta, plain, atol=1e-6, rtol=1e-5)
