"""The sliding window's size (predict.window): the patch, one window over a small case, or given."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtl.config import ModelConfig, PredictConfig, parse_section, window_setting
from medtl.kernel.errors import ConfigError
from medtl.models.networks import build_network, input_multiple, window_multiple
from medtl.predict.inference import predict_probabilities, window_count
from medtl.predict.window import IMAGE_WINDOW_CAP, prediction_window, windows_per_call
from medtl.preprocess.case import PreprocessedCase

PATCH = (32, 32, 16)
CPU = torch.device("cpu")


class Recorder(torch.nn.Module):
    """A network that records the shape of every batch of windows it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.shapes = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def _case(shape=(48, 48, 24)) -> PreprocessedCase:
    rng = np.random.default_rng(0)
    return PreprocessedCase(rng.normal(size=(1, *shape)).astype(np.float32), None, {})


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(ModelConfig(features=(4, 4, 8, 8, 16, 4)), 1, 2).eval()


def test_image_fits_the_largest_window_the_network_takes_inside_the_case() -> None:
    assert prediction_window((48, 48, 24), PATCH, "image", 16) == [48, 48, 16]  # no padding
    assert prediction_window((20, 47, 8), PATCH, "image", 16) == [32, 32, 16]  # never < patch
    assert prediction_window((20, 47, 8), PATCH, "image", 1) == [20, 47, 8]  # any side: unpadded
    assert prediction_window((48, 48, 24), PATCH, "patch", 16) == list(PATCH)


def test_image_computes_the_fewest_voxels_not_the_largest_window() -> None:
    """A CT case at 3 x 3 x 6 mm (137 x 137 x 50) and a 64 x 64 x 32 patch: the largest
    window that fits (128 x 128 x 48) takes 8 windows, as many voxels as 48 patches."""
    shape, patch = (137, 137, 50), (64, 64, 32)
    chosen = prediction_window(shape, patch, "image", 16)
    assert chosen == [96, 96, 48]

    def computed(window) -> int:
        return window_count(shape, window, 0.5) * math.prod(window)

    assert computed(chosen) == 8 * 96 * 96 * 48 < computed([128, 128, 48]) == computed(patch)
    # the overlap sets the count: at 0.25, 2 windows of 80 (160 voxels) beat 3 of 64 (192)
    assert prediction_window(shape, patch, "image", 16, overlap=0.25)[0] == 80


def test_a_large_case_runs_in_windows_of_at_most_the_cap() -> None:
    cap = IMAGE_WINDOW_CAP * math.prod(PATCH)
    assert prediction_window((64, 64, 64), PATCH, "image", 16) == [64, 64, 64]  # 16 patches
    for shape in ((512, 512, 120), (64, 64, 80), (300, 200, 33)):
        for multiple in (1, 16):
            chosen = prediction_window(shape, PATCH, "image", multiple)
            assert math.prod(chosen) <= cap
            assert all(p <= w <= max(p, s) for p, w, s in zip(PATCH, chosen, shape, strict=True))
            # no window of the allowed sides computes fewer voxels
            computed = window_count(shape, chosen, 0.5) * math.prod(chosen)
            for other in ((32, 32, 16), (64, 64, 64), (32, 128, 64), (128, 128, 16)):
                if all(o <= max(p, s) for o, p, s in zip(other, PATCH, shape, strict=True)):
                    assert computed <= window_count(shape, other, 0.5) * math.prod(other)


def test_a_patch_only_network_keeps_the_patch() -> None:
    assert prediction_window((48, 48, 24), PATCH, "image", 0) == list(PATCH)
    assert (
        input_multiple(ModelConfig(name="primus"))
        == 0
        == window_multiple(ModelConfig(name="primus"))
    )


def test_a_network_of_any_side_runs_on_the_case_own_sides() -> None:
    """basicunet takes any side in PyTorch: a case runs as one window of its own shape,
    with no padding, and an ONNX export still asks for multiples of 16."""
    assert window_multiple(ModelConfig()) == 1 and input_multiple(ModelConfig()) == 16
    assert prediction_window((137, 137, 50), (64, 64, 32), "image", 1) == [137, 137, 50]
    case, rec = _case((37, 29, 21)), Recorder(_net())
    probs = predict_probabilities(
        [rec], case, PATCH, PredictConfig(window="image", tta=True), CPU, multiple=1
    )
    # 8 mirrored copies of the whole case, 4 at a time (sw_batch_size 4)
    assert rec.shapes == [(4, 1, 37, 29, 21)] * 2
    assert probs.shape == (2, 37, 29, 21)
    assert torch.allclose(probs.sum(0), torch.ones(37, 29, 21), atol=1e-5)


def test_one_call_holds_at_most_the_cap_of_larger_windows() -> None:
    assert windows_per_call(PATCH, PATCH, 32) == 32  # the patch: sw_batch_size as set
    assert windows_per_call(PATCH, (64, 64, 64), 4) == 1
    assert windows_per_call((64, 64, 32), (137, 137, 50), 4) == 2
    rec = Recorder(_net())
    predict_probabilities(
        [rec], _case((64, 64, 64)), PATCH, PredictConfig(window="image", tta=True), CPU,
        multiple=16,
    )  # fmt: skip
    assert rec.shapes == [(1, 1, 64, 64, 64)] * 8


def test_given_sides_must_fit_the_network() -> None:
    assert prediction_window((99, 99, 99), PATCH, (64, 64, 32), 16) == [64, 64, 32]
    with pytest.raises(ConfigError, match=r"multiple of 16. How to fix: use e.g. \[48, 48, 32\]"):
        prediction_window((99, 99, 99), PATCH, (50, 50, 30), 16)
    with pytest.raises(ConfigError, match="built for its training patch"):
        prediction_window((99, 99, 99), PATCH, (64, 64, 32), 0)
    assert prediction_window((99, 99, 99), PATCH, PATCH, 0) == list(PATCH)


def test_two_windows_per_mirrored_copy_instead_of_eight_patches() -> None:
    case, net = _case(), _net()
    by_patch, whole = Recorder(net), Recorder(net)
    cfg = PredictConfig(tta=True, sw_batch_size=4)
    a = predict_probabilities([by_patch], case, PATCH, cfg, CPU, multiple=16)
    b = predict_probabilities(
        [whole], case, PATCH, PredictConfig(tta=True, sw_batch_size=4, window="image"), CPU,
        multiple=16,
    )  # fmt: skip
    # 8 windows of the patch for each of the 8 mirrored copies, 4 windows a batch ...
    assert by_patch.shapes == [(4, 1, *PATCH)] * 16
    # ... against 2 windows of 48 x 48 x 16 for each copy, 2 copies stacked per pass.
    assert whole.shapes == [(4, 1, 48, 48, 16)] * 4
    assert a.shape == b.shape == (2, 48, 48, 24)
    for probs in (a, b):
        assert torch.allclose(probs.sum(0), torch.ones(48, 48, 24), atol=1e-5)


def test_without_a_multiple_the_patch_is_used() -> None:
    rec = Recorder(_net())
    predict_probabilities([rec], _case(), PATCH, PredictConfig(window="image"), CPU)
    assert {s[2:] for s in rec.shapes} == {PATCH}


def test_the_setting_in_config_and_on_the_command_line() -> None:
    assert parse_section(PredictConfig, {"window": "image"}, "predict").window == "image"
    assert parse_section(PredictConfig, {"window": [64, 64, 32]}, "predict").window == (64, 64, 32)
    with pytest.raises(ConfigError, match="predict.window"):
        parse_section(PredictConfig, {"window": "whole"}, "predict")
    with pytest.raises(ConfigError, match="predict.window"):
        PredictConfig(window=(64, 0, 32))
    assert window_setting("64, 64, 32") == (64, 64, 32) and window_setting("patch") == "patch"
    with pytest.raises(ConfigError, match="--window: got '64,64'"):
        window_setting("64,64")
